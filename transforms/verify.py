"""Stage 6: geometric verification of candidate pairs (descriptor matching + RANSAC).

Matching is one BLAS matmul of L2-normalised descriptors, a Lowe ratio test and a mutual
nearest-neighbour check; RANSAC is OpenCV's (deterministic: it seeds its own generator).
The mutual check matters: without it a few keypoints of one image can absorb dozens of
matches, and a near-singular affine then "explains" them as inliers on unrelated images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import cv2
import numpy as np

from schemas.records import LocalFeatures, PairResult
from schemas.vocabulary import Stage
from transforms.pairs import BlockKey
from transforms.progress import StageTimer, tick

STAGE = Stage.VERIFY.value

MODELS = ("affine", "homography")
#: Putative matches a model needs before RANSAC can run.
_MIN_MATCHES = {"affine": 3, "homography": 4}


@dataclass(frozen=True)
class VerifyConfig:
    """`ratio`: Lowe ratio on descriptor distances (1.0 disables it); `mutual`: keep only
    mutual nearest neighbours; `ransac_threshold`: max reprojection error in pixels of the
    normalised image; `model`: affine (as DELF) or homography.

    Defaults were chosen on real landmark photos (1024 px, 4000 RootSIFT): ratio 0.9 +
    mutual + affine 12 px verified the most true pairs while unrelated pairs stayed <= 12
    inliers, far from the 30-inlier edge threshold."""

    ratio: float = 0.9
    mutual: bool = True
    model: str = "affine"
    ransac_threshold: float = 12.0
    ransac_iterations: int = 2000
    ransac_confidence: float = 0.999

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1:
            raise ValueError("ratio must be in (0, 1]")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}")
        if self.ransac_threshold <= 0 or self.ransac_iterations <= 0:
            raise ValueError("ransac_threshold and ransac_iterations must be > 0")
        if not 0 < self.ransac_confidence < 1:
            raise ValueError("ransac_confidence must be in (0, 1)")


def _normalised(descriptors: np.ndarray) -> np.ndarray:
    d = descriptors.astype(np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def putative_matches(desc_a: np.ndarray, desc_b: np.ndarray, config: VerifyConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into a, into b) of matches passing the ratio and mutual tests, each [M] int.

    desc_a [Na, D], desc_b [Nb, D], any numeric dtype. Raises ValueError when D differs (a
    programming error: features of two extractors were mixed).
    """
    if desc_a.shape[1] != desc_b.shape[1]:
        raise ValueError(f"descriptor dimensions differ: {desc_a.shape[1]} vs {desc_b.shape[1]}")
    empty = np.zeros(0, dtype=np.int64)
    if len(desc_a) == 0 or len(desc_b) == 0:
        return empty, empty
    sim = _normalised(desc_a) @ _normalised(desc_b).T
    rows = np.arange(sim.shape[0])
    best = np.argmax(sim, axis=1)
    best_sim = sim[rows, best]
    keep = np.ones(len(rows), dtype=bool)
    if config.ratio < 1.0 and sim.shape[1] > 1:
        sim[rows, best] = -np.inf
        second_sim = sim.max(axis=1)
        sim[rows, best] = best_sim
        # squared L2 distance between unit vectors is 2 - 2 cos
        keep &= (2.0 - 2.0 * best_sim) < config.ratio**2 * (2.0 - 2.0 * second_sim)
    if config.mutual:
        # column maxima via max() (vectorised) rather than argmax(axis=0) (slow, strided)
        keep &= best_sim >= sim.max(axis=0)[best]
    return rows[keep], best[keep]


def _fit(src: np.ndarray, dst: np.ndarray, config: VerifyConfig) -> np.ndarray | None:
    """RANSAC inlier mask [M] (bool) of matched points src, dst [M, 2]; None when no model is found."""
    if config.model == "affine":
        model, mask = cv2.estimateAffine2D(
            src,
            dst,
            method=cv2.RANSAC,
            ransacReprojThreshold=config.ransac_threshold,
            maxIters=config.ransac_iterations,
            confidence=config.ransac_confidence,
            refineIters=0,
        )
    else:
        model, mask = cv2.findHomography(
            src,
            dst,
            cv2.RANSAC,
            config.ransac_threshold,
            maxIters=config.ransac_iterations,
            confidence=config.ransac_confidence,
        )
    if model is None or mask is None:
        return None
    return mask.ravel().astype(bool)


def verify_pair(a: LocalFeatures, b: LocalFeatures, config: VerifyConfig) -> tuple[int, int, str]:
    """(num_matches, inliers, reason) for one pair; reason is "" when RANSAC ran.

    Degenerate input never raises: fewer putative matches than the model needs gives
    `too_few_matches`, a RANSAC that finds no model gives `no_model`, both with 0 inliers.
    """
    idx_a, idx_b = putative_matches(a.descriptors, b.descriptors, config)
    num_matches = len(idx_a)
    if num_matches < _MIN_MATCHES[config.model]:
        return num_matches, 0, "too_few_matches"
    mask = _fit(a.keypoints[idx_a].astype(np.float32), b.keypoints[idx_b].astype(np.float32), config)
    if mask is None:
        return num_matches, 0, "no_model"
    return num_matches, int(mask.sum()), ""


def inlier_matches(a: LocalFeatures, b: LocalFeatures, config: VerifyConfig) -> tuple[np.ndarray, np.ndarray]:
    """The inlier correspondences of one pair, for drawing: keypoints of a and of b, [K, 2] each.

    Re-runs `verify_pair`'s matching (deterministic, so K equals its inlier count); K is 0
    for the pairs it reports as `too_few_matches` or `no_model`. Meant for the few pairs a
    report draws, so the pipeline never stores every match.
    """
    idx_a, idx_b = putative_matches(a.descriptors, b.descriptors, config)
    empty = np.zeros((0, 2), dtype=np.float32)
    if len(idx_a) < _MIN_MATCHES[config.model]:
        return empty, empty
    src, dst = a.keypoints[idx_a].astype(np.float32), b.keypoints[idx_b].astype(np.float32)
    mask = _fit(src, dst, config)
    if mask is None:
        return empty, empty
    return src[mask], dst[mask]


def verify_result(landmark_id: int, a: LocalFeatures, b: LocalFeatures, config: VerifyConfig) -> PairResult:
    """PairResult with ids ordered (id_a < id_b)."""
    if b.id < a.id:
        a, b = b, a
    num_matches, inliers, reason = verify_pair(a, b, config)
    return PairResult(landmark_id, a.id, b.id, num_matches, inliers, reason)


def _features_to_blocks(image_id: str, grouped: dict) -> Iterator[tuple[BlockKey, LocalFeatures]]:
    features = list(grouped["features"])
    if not features:
        return
    for key in grouped["needs"]:
        yield key, features[0]


class _VerifyBlockFn(beam.DoFn):
    """Verifies every candidate pair of one block pair; holds <= 2 * block_size features."""

    def __init__(self, config: VerifyConfig) -> None:
        self._config = config

    def process(self, element: tuple[BlockKey, dict]) -> Iterator[PairResult]:
        (landmark_id, _, _), grouped = element
        features = {f.id: f for f in grouped["features"]}
        for a, b in sorted(grouped["pairs"]):
            with StageTimer(STAGE):
                result = verify_result(landmark_id, features[a], features[b], self._config)
            tick(STAGE, result.reason or "verified")
            yield result


class VerifyPairs(beam.PTransform):
    """{"features": LocalFeatures, "pairs": (BlockKey, (a, b)), "needs": (id, BlockKey)}
    -> PairResult PCollection (one per candidate pair)."""

    def __init__(self, config: VerifyConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        by_id = inputs["features"] | "KeyById" >> beam.Map(lambda f: (f.id, f))
        features_in_blocks = (
            {"features": by_id, "needs": inputs["needs"]}
            | "JoinNeeds" >> beam.CoGroupByKey()
            | "ToBlocks" >> beam.FlatMapTuple(_features_to_blocks)
        )
        return (
            {"features": features_in_blocks, "pairs": inputs["pairs"]}
            | "JoinBlocks" >> beam.CoGroupByKey()
            | "Verify" >> beam.ParDo(_VerifyBlockFn(self._config))
        )
