"""DELF local features (Noh et al., ICCV 2017) through a TF-Hub module or a SavedModel.

The model must expose DELF's serving signature `default`:

- inputs: `image` float32 [H, W, 3] in [0, 1], `score_threshold` float32 [],
  `image_scales` float32 [S], `max_feature_num` int32 [];
- outputs: `locations` float32 [N, 2] in (y, x) pixel order, `descriptors` float32 [N, D]
  (40 for the public module), and, where the model provides them, `scales` [N] (DELF's
  1 / pyramid scale of each feature) and `attention` [N] (its attention score).

TensorFlow is imported by this module only, so that SIFT runs never load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
import tensorflow_hub as hub

from transforms.features.extractors.base import FeatureArrays, compact_descriptors

if TYPE_CHECKING:  # annotations only
    from transforms.features.extractors.config import FeatureConfig

SIGNATURE = "default"


def enable_gpu_memory_growth() -> None:
    """Let TensorFlow take GPU memory as it needs it instead of all of it at start-up, so that
    the worker's other threads and processes keep theirs. TensorFlow refuses the setting once
    a GPU is initialised; the process then keeps what was chosen first."""
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            return


class DelfExtractor:
    """Calls a DELF signature on one image; keypoints come back as (x, y), strongest first (the
    order the model returns, which selects by attention). Thread-safe: TensorFlow concrete
    functions may be called from several threads at once."""

    def __init__(self, config: FeatureConfig) -> None:
        enable_gpu_memory_growth()
        self.errors: tuple[type[Exception], ...] = (ValueError, tf.errors.OpError)
        # keep the loaded object alive: its signatures only hold weak references to variables
        self._module = hub.load(config.delf_model)
        if SIGNATURE not in self._module.signatures:
            raise ValueError(f"{config.delf_model} has no {SIGNATURE!r} signature (DELF's serving signature)")
        self._signature = self._module.signatures[SIGNATURE]
        missing = {"locations", "descriptors"} - set(self._signature.structured_outputs)
        if missing:
            raise ValueError(f"{config.delf_model}: signature {SIGNATURE!r} lacks the outputs {sorted(missing)}")
        self._arguments = {
            "score_threshold": tf.constant(config.delf_score_threshold, tf.float32),
            "image_scales": tf.constant(config.delf_image_scales, tf.float32),
            "max_feature_num": tf.constant(config.max_features, tf.int32),
        }
        self._dtype = config.descriptor_dtype

    def __call__(self, pixels: np.ndarray) -> FeatureArrays:
        """uint8 RGB [H, W, 3] -> (keypoints float32 [N, 2] (x, y), descriptors [N, D],
        scales float32 [N], scores float32 [N]). Raises ValueError for an array that is not an
        RGB image, tf.errors.OpError when the model rejects the image."""
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"DELF needs uint8 RGB [H, W, 3], got {pixels.dtype} {pixels.shape}")
        image = tf.image.convert_image_dtype(tf.constant(pixels), tf.float32)  # x / 255, in [0, 1]
        outputs = self._signature(image=image, **self._arguments)
        locations = outputs["locations"].numpy()
        count = len(locations)
        keypoints = np.ascontiguousarray(locations[:, ::-1], dtype=np.float32)  # (y, x) -> (x, y)
        descriptors = compact_descriptors(outputs["descriptors"].numpy(), self._dtype)
        return keypoints, descriptors, _per_feature(outputs, "scales", count), _per_feature(outputs, "attention", count)


def _per_feature(outputs: dict[str, tf.Tensor], name: str, count: int) -> np.ndarray:
    """float32 [N] output `name`, or NaN [N] when the model does not return it (the value is
    unknown, and nothing downstream uses scales or scores to verify pairs)."""
    if name not in outputs:
        return np.full((count,), np.nan, np.float32)
    return outputs[name].numpy().astype(np.float32)
