"""pyarrow schemas of the Parquet outputs and the conversions between records and rows."""

from __future__ import annotations

from dataclasses import dataclass

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
from schemas.vocabulary import Reason, Stage, Status

DECISIONS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("landmark_id", pa.int64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("stage", pa.string()),
        ("detail", pa.string()),
        ("degree", pa.int32()),
        ("component_id", pa.int32()),
        ("component_size", pa.int32()),
        ("max_inliers", pa.int32()),
        ("best_partner", pa.string()),
        ("line", pa.int64()),
    ]
)

PAIRS_SCHEMA = pa.schema(
    [
        ("landmark_id", pa.int64()),
        ("id_a", pa.string()),
        ("id_b", pa.string()),
        ("num_matches", pa.int32()),
        ("inliers", pa.int32()),
        ("reason", pa.string()),
    ]
)

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

AUDIT_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("landmark_a", pa.int64()),
        ("id_a", pa.string()),
        ("landmark_b", pa.int64()),
        ("id_b", pa.string()),
        ("score", pa.int64()),
        ("detail", pa.string()),
    ]
)


def finding_to_row(finding: AuditFinding) -> dict:
    return {
        "kind": finding.kind,
        "landmark_a": finding.landmark_a,
        "id_a": finding.id_a,
        "landmark_b": finding.landmark_b,
        "id_b": finding.id_b,
        "score": finding.score,
        "detail": finding.detail,
    }


def decision_to_row(decision: ImageDecision) -> dict:
    return {
        "id": decision.id,
        "landmark_id": decision.landmark_id,
        "status": decision.status.value,
        "reason": decision.reason,
        "stage": decision.stage,
        "detail": decision.detail,
        "degree": decision.degree,
        "component_id": decision.component_id,
        "component_size": decision.component_size,
        "max_inliers": decision.max_inliers,
        "best_partner": decision.best_partner,
        "line": decision.line,
    }


def decision_from_row(row: dict) -> ImageDecision:
    """Inverse of `decision_to_row`."""
    return ImageDecision(
        line=int(row["line"]),
        id=row["id"],
        landmark_id=row["landmark_id"],
        status=Status(row["status"]),
        reason=row["reason"],
        stage=row["stage"],
        detail=row["detail"],
        degree=int(row["degree"]),
        component_id=int(row["component_id"]),
        component_size=int(row["component_size"]),
        max_inliers=int(row["max_inliers"]),
        best_partner=row["best_partner"],
    )


def pair_from_row(row: dict) -> PairResult:
    """Inverse of `pair_to_row`."""
    return PairResult(
        int(row["landmark_id"]), row["id_a"], row["id_b"], int(row["num_matches"]), int(row["inliers"]), row["reason"]
    )


def finding_from_row(row: dict) -> AuditFinding:
    """Inverse of `finding_to_row`."""
    return AuditFinding(
        row["kind"],
        int(row["landmark_a"]),
        row["id_a"],
        int(row["landmark_b"]),
        row["id_b"],
        int(row["score"]),
        row["detail"],
    )


#: Images that reached selection (they have features): the members of their class's graph.
MEMBERS_SCHEMA = pa.schema([("id", pa.string()), ("landmark_id", pa.int64()), ("line", pa.int64())])


def member_to_row(features: FeatureRef) -> dict:
    return {"id": features.id, "landmark_id": features.landmark_id, "line": features.line}


def pair_to_row(pair: PairResult) -> dict:
    return {
        "landmark_id": pair.landmark_id,
        "id_a": pair.id_a,
        "id_b": pair.id_b,
        "num_matches": pair.num_matches,
        "inliers": pair.inliers,
        "reason": pair.reason,
    }


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


def ingest_failure_to_row(failure: Failure) -> dict:
    return {
        "id": failure.id,
        "landmark_id": failure.landmark_id,
        "url": failure.url,
        "stage": failure.stage.value,
        "reason": failure.reason.value,
        "detail": failure.detail,
        "line": failure.line,
    }


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
