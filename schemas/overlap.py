"""Records and Parquet schemas of `gld overlap`: verified pairs across a clean split and an
evaluation set, and the outcome of every evaluation input row."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.records import FLOAT32, INT32
from schemas.tables import record_schema


@dataclass(frozen=True)
class OverlapPair:
    """One candidate pair across the two sets, verified with the curation's matcher.

    `train_id` is an image of the curated splits (class `landmark_id`), `eval_id` an evaluation
    image; `similarity` is the cosine of their global descriptors that proposed the pair;
    `num_matches`/`inliers`/`reason` as in `PairResult` (reason "" when RANSAC ran)."""

    train_id: str
    landmark_id: int
    eval_id: str
    inliers: int = field(metadata=INT32)
    num_matches: int = field(metadata=INT32)
    similarity: float = field(metadata=FLOAT32)
    reason: str = ""


#: `overlap.parquet` (pairs with >= min_inliers) and `candidates.parquet` (every candidate).
OVERLAP_SCHEMA = record_schema(OverlapPair)


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
    num_features: int = field(default=0, metadata=INT32)


#: `eval_images.parquet`: exactly one row per evaluation input row.
EVAL_OUTCOME_SCHEMA = record_schema(EvalOutcome)
