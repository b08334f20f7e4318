"""The features store: local features written once by the feature step, read by reference.

Layout: `<output>/features/<settings key>/part-*.parquet`, one feature set per row group (see
`transforms.ingest.image_store`), so a worker that verifies a block reads the few row groups it needs
and nothing else. The settings key names what decides the stored features (normalisation and
extractor settings): a re-run with the same settings finds them and reuses every feature set
whose image bytes (sha256) are unchanged; other settings write to another folder.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from schemas.arrays import decode_array
from schemas.records import FeatureRef, ImageRef, LocalFeatures
from schemas.tables import FEATURE_INDEX_COLUMNS, feature_ref, features_from_row, summary_from_row
from transforms.ingest.image_store import ReadStore, read_at, settings_key
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import tick

STAGE = "features"

#: Columns a verifier reads back: the features, not the summaries already in the FeatureRef.
_FEATURE_COLUMNS = ["id", "landmark_id", "line", "width", "height", "keypoints", "descriptors", "scales", "scores"]
_EMPTY = np.zeros(0, np.float32)

# FeatureConfig fields that change how features are computed or stored (the rest only
# schedule the work: batch size, GPU hint).
_SCHEDULING_FIELDS = ("max_batch_size", "gpu_accelerator")
#: Extractors whose code changed what they compute (revision 2 of `aliked`: the dense map built
#: in one channels_last buffer, equal to kornia's up to float rounding): their features live in
#: a folder of their own, so a re-run never mixes the features of two revisions.
_REVISIONS = {"aliked": 2}


def features_folder(output: str, decode: Any, features: Any) -> str:
    """The folder of the features made with these decode and feature settings (dataclasses)."""
    settings = {
        "decode": dataclasses.asdict(decode),
        "features": {k: v for k, v in dataclasses.asdict(features).items() if k not in _SCHEDULING_FIELDS},
    }
    if features.extractor in _REVISIONS:
        settings["revision"] = _REVISIONS[features.extractor]
    return FileSystems.join(output, "features", settings_key(settings))


def light(ref: FeatureRef) -> FeatureRef:
    """The reference without its descriptor summaries: what a verification block carries."""
    return dataclasses.replace(ref, global_descriptor=_EMPTY, mean=_EMPTY)


def _stored_rows(refs: Iterable[FeatureRef], columns: list[str]) -> Iterator[tuple[FeatureRef, dict]]:
    """(ref, its store row's `columns`) for every ref, one file open per part."""
    by_path: dict[str, list[FeatureRef]] = defaultdict(list)
    for ref in refs:
        by_path[ref.path].append(ref)
    for path, group in sorted(by_path.items()):
        rows = read_at(path, [ref.index for ref in group], columns)
        for ref in group:
            yield ref, rows[ref.index]


def read_global_descriptors(refs: Iterable[FeatureRef]) -> dict[str, np.ndarray]:
    """{id: the offline global descriptor float16 [4096]} of `refs`, read from the store (one
    column of one row group each); raises like `read_features`."""
    return {ref.id: decode_array(row["global_descriptor"]) for ref, row in _stored_rows(refs, ["global_descriptor"])}


def read_features(refs: Iterable[FeatureRef]) -> dict[str, LocalFeatures]:
    """{id: LocalFeatures} of `refs`, one file open per part. Raises (OSError, KeyError,
    ArrowException) when the store lost what a reference points to: that is a broken run,
    never a pair to skip."""
    found: dict[str, LocalFeatures] = {}
    for ref, row in _stored_rows(refs, _FEATURE_COLUMNS):
        features = features_from_row(row)
        if features.id != ref.id:
            raise KeyError(f"{ref.path} row {ref.index} holds {features.id}, not {ref.id}")
        found[ref.id] = dataclasses.replace(features, landmark_id=ref.landmark_id, line=ref.line)
    return found


def reuse_or_extract(image_id: str, grouped: dict[str, Iterable]) -> Iterator[FeatureRef | ImageRef]:
    """A stored feature set of the same image bytes (the smallest (path, index) of several),
    else the image reference itself, to be extracted."""
    for image in grouped["images"]:
        stored = sorted(
            (r for r in grouped["stored"] if r["sha256"] == image.sha256), key=lambda r: (r["path"], r["index"])
        )
        if stored:
            tick(STAGE, "reused")
            first = stored[0]
            yield feature_ref(image.row, first["path"], first["index"], first["num_features"], summary_from_row(first))
        else:
            yield beam.pvalue.TaggedOutput("extract", image)


class ReuseStoredFeatures(beam.PTransform):
    """ImageRef PCollection -> (FeatureRefs reused from `folder`, ImageRefs still to extract).

    The store is listed and its index columns read when the pipeline runs; only those small
    columns meet the image references in the join (counter `features/reused`)."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self._folder = folder

    def expand(self, images: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        stored = (
            images.pipeline
            | "ReadStoredIndex" >> ReadStore(self._folder, FEATURE_INDEX_COLUMNS, STAGE)
            | "KeyStored" >> beam.Map(lambda r: (r["id"], r))
            | meter("MeterStored")
        )
        joined = (
            {
                "images": images | "KeyImages" >> beam.Map(lambda i: (i.row.id, i)) | meter("MeterImages"),
                "stored": stored,
            }
            | "JoinStored" >> beam.CoGroupByKey()
            | "Reuse" >> beam.FlatMapTuple(reuse_or_extract).with_outputs("extract", main="reused")
        )
        return joined.reused, joined.extract
