"""pyarrow schemas of the Parquet outputs and the conversions between records and rows."""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import Enum
from functools import cache
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import numpy as np
import pyarrow as pa

from schemas.arrays import decode_array, encode_array
from schemas.records import (
    AuditFinding,
    DecodedImage,
    Failure,
    FeatureRef,
    ImageDecision,
    LocalFeatures,
    ManifestRow,
    PairResult,
)
from schemas.vocabulary import Reason, Stage

IMAGES_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("landmark_id", pa.int64()),
        ("url", pa.string()),
        ("jpeg", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("original_bytes", pa.int64()),
        ("sha256", pa.string()),
        ("line", pa.int64()),
    ]
)

#: The verified-pair store (`verified/<settings>/`): every verified pair with the image bytes
#: (sha256) its features came from, so a re-run reuses a result only for the same images.
#: `id` is "<id_a> <id_b>", the key the part store sorts and names parts by.
VERIFIED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("landmark_id", pa.int64()),
        ("id_a", pa.string()),
        ("id_b", pa.string()),
        ("sha_a", pa.string()),
        ("sha_b", pa.string()),
        ("num_matches", pa.int32()),
        ("inliers", pa.int32()),
        ("reason", pa.string()),
    ]
)

#: The failure log of an ingest: a `Failure`'s fields (rows by `record_to_row`), in the order the
#: logs of earlier runs have them.
INGEST_FAILURES_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("landmark_id", pa.int64()),
        ("url", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("line", pa.int64()),
    ]
)

#: Images whose fetched bytes are identical (same sha256), one row per image of such a group.
DUPLICATES_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("id", pa.string()),
        ("landmark_id", pa.int64()),
        ("group_size", pa.int32()),
        ("same_class", pa.bool_()),
    ]
)

FEATURES_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("landmark_id", pa.int64()),
        ("line", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("num_features", pa.int32()),
        ("keypoints", pa.binary()),
        ("descriptors", pa.binary()),
        ("scales", pa.binary()),
        ("scores", pa.binary()),
        # what the later stages read without the features: see `FeatureRef`
        ("sha256", pa.string()),
        ("global_descriptor", pa.binary()),
        ("mean", pa.binary()),
        ("phash", pa.uint64()),
    ]
)

#: The features store columns that make a `FeatureRef` (everything but the features).
FEATURE_INDEX_COLUMNS = ["id", "num_features", "sha256", "mean", "phash"]


@cache
def _type_hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


#: Column types of record fields by annotation (`record_schema`); enums are stored as their value.
_COLUMN_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def record_schema(cls: type, last: Sequence[str] = ()) -> pa.Schema:
    """The table of a record type: one column per field, in field order (those named in `last`
    moved to the end, in that order), typed from the annotation (str and enums: string, int:
    int64, float: float64, bool: bool; `X | None` as X), or from the field's `column_type`
    metadata (`schemas.records.INT32`, `FLOAT32`). ValueError for a field of another type."""
    hints = _type_hints(cls)
    columns = []
    for f in fields(cls):
        hint = hints[f.name]
        if get_origin(hint) in (Union, types.UnionType):
            hint = next(arg for arg in get_args(hint) if arg is not type(None))
        if "column_type" in f.metadata:
            column = pa.type_for_alias(f.metadata["column_type"])
        elif isinstance(hint, type) and issubclass(hint, Enum):
            column = pa.string()
        elif hint in _COLUMN_TYPES:
            column = _COLUMN_TYPES[hint]
        else:
            raise ValueError(f"{cls.__name__}.{f.name}: no column type for {hint!r}")
        columns.append(pa.field(f.name, column))
    if unknown := set(last) - {c.name for c in columns}:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    columns.sort(key=lambda c: last.index(c.name) + 1 if c.name in last else 0)
    return pa.schema(columns)


#: `decisions.parquet`: one row per input row (`line` last, as the table always had it).
DECISIONS_SCHEMA = record_schema(ImageDecision, last=("line",))
#: `pairs.parquet`: every verified candidate pair.
PAIRS_SCHEMA = record_schema(PairResult)
#: `audit.parquet`: the label-noise findings.
AUDIT_SCHEMA = record_schema(AuditFinding)

Record = TypeVar("Record", AuditFinding, ImageDecision, PairResult)


def record_to_row(record: Any) -> dict:
    """The row of a record whose fields are exactly its table's columns; an enum as its value."""
    row = {}
    for f in fields(record):
        value = getattr(record, f.name)
        row[f.name] = value.value if isinstance(value, Enum) else value
    return row


def record_from_row(cls: type[Record], row: dict[str, Any], schema: pa.Schema) -> Record:
    """Inverse of `record_to_row`: integer columns as int (None stays None), enum fields as
    their member, every other column as it is."""
    hints = _type_hints(cls)
    values = {}
    for f in fields(cls):
        value, hint = row[f.name], hints[f.name]
        if isinstance(hint, type) and issubclass(hint, Enum):
            value = hint(value)
        elif pa.types.is_integer(schema.field(f.name).type) and value is not None:
            value = int(value)
        values[f.name] = value
    return cls(**values)


def decision_from_row(row: dict) -> ImageDecision:
    """Inverse of `record_to_row` for `decisions.parquet`."""
    return record_from_row(ImageDecision, row, DECISIONS_SCHEMA)


def pair_from_row(row: dict) -> PairResult:
    """Inverse of `record_to_row` for `pairs.parquet`."""
    return record_from_row(PairResult, row, PAIRS_SCHEMA)


def finding_from_row(row: dict) -> AuditFinding:
    """Inverse of `record_to_row` for `audit.parquet`."""
    return record_from_row(AuditFinding, row, AUDIT_SCHEMA)


#: Images that reached selection (they have features): the members of their class's graph.
MEMBERS_SCHEMA = pa.schema([("id", pa.string()), ("landmark_id", pa.int64()), ("line", pa.int64())])


def member_to_row(features: FeatureRef) -> dict:
    return {"id": features.id, "landmark_id": features.landmark_id, "line": features.line}


def image_to_row(image: DecodedImage) -> dict:
    return {
        "id": image.row.id,
        "landmark_id": image.row.landmark_id,
        "url": image.row.url,
        "jpeg": image.jpeg,
        "width": image.width,
        "height": image.height,
        "original_width": image.original_width,
        "original_height": image.original_height,
        "original_bytes": image.original_bytes,
        "sha256": image.sha256,
        "line": image.row.line,
    }


def image_from_row(row: dict, current: ManifestRow) -> DecodedImage:
    """A stored image as a record of the current manifest row (whose line may have moved)."""
    return DecodedImage(
        row=current,
        jpeg=row["jpeg"],
        width=int(row["width"]),
        height=int(row["height"]),
        original_width=int(row["original_width"]),
        original_height=int(row["original_height"]),
        original_bytes=int(row["original_bytes"]),
        sha256=row["sha256"],
    )


def ingest_failure_from_row(row: dict, current: ManifestRow) -> Failure:
    """A logged failure as a failure of the current manifest row; ValueError when its stage or
    reason is not (or no longer) in the vocabulary."""
    stage, reason = Stage(row["stage"]), Reason(row["reason"])
    return Failure(current.line, current.id, current.landmark_id, stage, reason, row["detail"], current.url)


def features_to_row(features: LocalFeatures, summary: FeatureSummary | None = None) -> dict:
    """A features store row; `summary` fills the columns a `FeatureRef` is made of (empty when
    None: a table of features alone)."""
    summary = summary or FeatureSummary("", np.zeros(0, np.float16), np.zeros(0, np.float32), 0)
    return {
        "id": features.id,
        "landmark_id": features.landmark_id,
        "line": features.line,
        "width": features.width,
        "height": features.height,
        "num_features": features.count,
        "keypoints": encode_array(features.keypoints),
        "descriptors": encode_array(features.descriptors),
        "scales": encode_array(features.scales),
        "scores": encode_array(features.scores),
        "sha256": summary.sha256,
        "global_descriptor": encode_array(summary.global_descriptor),
        "mean": encode_array(summary.mean),
        "phash": summary.phash,
    }


@dataclass(frozen=True)
class FeatureSummary:
    """What is stored beside an image's features: the image's `sha256`, its offline global
    descriptor float16 [G], mean local descriptor float32 [D] and 64-bit perceptual hash."""

    sha256: str
    global_descriptor: np.ndarray
    mean: np.ndarray
    phash: int


def feature_ref(image: ManifestRow, path: str, index: int, count: int, summary: FeatureSummary) -> FeatureRef:
    """The claim check of the `count` features at (path, index) of the store, for manifest row
    `image` (whose class and line may have changed since the features were stored)."""
    return FeatureRef(
        id=image.id,
        landmark_id=image.landmark_id,
        line=image.line,
        path=path,
        index=index,
        count=count,
        sha256=summary.sha256,
        global_descriptor=_NO_DESCRIPTOR,  # read from the store where a kNN needs it
        mean=summary.mean,
        phash=summary.phash,
    )


def summary_from_row(row: dict) -> FeatureSummary:
    """The `FeatureSummary` of a features store row; its `FEATURE_INDEX_COLUMNS` suffice (the
    global descriptor is then left empty)."""
    stored = row.get("global_descriptor")
    descriptor = decode_array(stored) if stored else _NO_DESCRIPTOR
    return FeatureSummary(row["sha256"], descriptor, decode_array(row["mean"]), int(row["phash"]))


_NO_DESCRIPTOR = np.zeros(0, np.float16)


def features_from_row(row: dict) -> LocalFeatures:
    return LocalFeatures(
        id=row["id"],
        landmark_id=int(row["landmark_id"]),
        line=int(row["line"]),
        keypoints=decode_array(row["keypoints"]),
        descriptors=decode_array(row["descriptors"]),
        scales=decode_array(row["scales"]),
        scores=decode_array(row["scores"]),
        width=int(row["width"]),
        height=int(row["height"]),
    )
