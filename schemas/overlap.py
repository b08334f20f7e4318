"""Records and Parquet schemas of `gld overlap`: verified pairs across a clean split and an
evaluation set, and the outcome of every evaluation input row."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class OverlapPair:
    """One candidate pair across the two sets, verified with the curation's matcher.

    `train_id` is an image of the curated splits (class `landmark_id`), `eval_id` an evaluation
    image; `similarity` is the cosine of their global descriptors that proposed the pair;
    `num_matches`/`inliers`/`reason` as in `PairResult` (reason "" when RANSAC ran)."""

    train_id: str
    landmark_id: int
    eval_id: str
    similarity: float
    num_matches: int
    inliers: int
    reason: str = ""


#: `overlap.parquet` (pairs with >= min_inliers) and `candidates.parquet` (every candidate).
OVERLAP_SCHEMA = pa.schema(
    [
        ("train_id", pa.string()),
        ("landmark_id", pa.int64()),
        ("eval_id", pa.string()),
        ("inliers", pa.int32()),
        ("num_matches", pa.int32()),
        ("similarity", pa.float32()),
        ("reason", pa.string()),
    ]
)


def overlap_to_row(pair: OverlapPair) -> dict:
    return {
        "train_id": pair.train_id,
        "landmark_id": pair.landmark_id,
        "eval_id": pair.eval_id,
        "inliers": pair.inliers,
        "num_matches": pair.num_matches,
        "similarity": pair.similarity,
        "reason": pair.reason,
    }


@dataclass(frozen=True)
class EvalOutcome:
    """Where one evaluation input row ended: `status` `extracted` (its features are in the
    features store; `num_features` of them) or `failed` (with `stage`, `reason`, `detail`)."""

    id: str
    line: int
    status: str
    stage: str = ""
    reason: str = ""
    detail: str = ""
    num_features: int = 0


#: `eval_images.parquet`: exactly one row per evaluation input row.
EVAL_OUTCOME_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("line", pa.int64()),
        ("status", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("num_features", pa.int32()),
    ]
)


def outcome_to_row(outcome: EvalOutcome) -> dict:
    return {
        "id": outcome.id,
        "line": outcome.line,
        "status": outcome.status,
        "stage": outcome.stage,
        "reason": outcome.reason,
        "detail": outcome.detail,
        "num_features": outcome.num_features,
    }
