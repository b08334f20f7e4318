"""pyarrow schemas of the Parquet outputs and the conversions between records and rows."""

from __future__ import annotations

import pyarrow as pa

from schemas.arrays import decode_array, encode_array
from schemas.records import AuditFinding, DecodedImage, Failure, ImageDecision, LocalFeatures, ManifestRow, PairResult
from schemas.vocabulary import Reason, Stage

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
    ]
)

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


def features_to_row(features: LocalFeatures) -> dict:
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
    }


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
