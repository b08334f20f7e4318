"""Stage 6: geometric verification of candidate pairs (descriptor matching + RANSAC).

Matchers (`MATCHERS`): `nn`, nearest neighbours of descriptors (any extractor), and
`lightglue`, LightGlue's learned matching of ALIKED features (`transforms.extractors.learned`;
PyTorch, GPU when present). Either way the correspondences then go through the same RANSAC.
Nearest-neighbour matching is one BLAS matmul of L2-normalised descriptors followed by any of: a Lowe ratio
test, a mutual nearest-neighbour check and a distance bound. RANSAC is OpenCV's USAC
framework with an explicit seed, so results are reproducible: uniform sampling, inlier-count
score, no polishing, and by default inner local optimisation (each new best model is re-fitted
on its inliers, which recovers the inliers a minimal sample misses on true pairs); the
`delf-reference` preset turns it off to make the same kind of decision as DELF's
scikit-image RANSAC.
The mutual check matters for the default: without it a few keypoints of one image can absorb
dozens of matches, and a near-singular affine then "explains" them as inliers on unrelated
images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import cv2
import numpy as np
from apache_beam.metrics import Metrics

from schemas.records import LocalFeatures, PairResult
from schemas.tables import VERIFIED_SCHEMA, record_to_row
from schemas.vocabulary import VERIFIED, PairReason, Stage
from transforms.extractors.registry import learned_module
from transforms.feature_store import read_features
from transforms.image_store import StoreConfig, WriteStoreParts
from transforms.metering import meter
from transforms.pairs import Block, BlockKey
from transforms.progress import StageTimer, tick
from transforms.threads import one_blas_thread

STAGE = Stage.VERIFY.value

#: Smallest number of putative matches each model is fitted on. Affine needs 3 points, but
#: 3 matches always fit exactly, so like DELF's re-ranking code 0-3 matches never verify.
MIN_MATCHES = {"affine": 4, "homography": 4, "fundamental": 8}

# Matched points whose spread across their best-fit line is under this (pixels, standard
# deviation) are identical or collinear: no affine/homography/fundamental model is determined.
_MIN_SPREAD_PX = 1.0

# Inner local optimisation: re-fits of a new best model, each on this many of its inliers.
_LO_ITERATIONS, _LO_SAMPLE_SIZE = 10, 14

MATCHERS = ("nn", "lightglue")

#: Rows of the descriptor similarity matrix computed at once (see `putative_matches`).
_MATCH_ROWS = 1024


@dataclass(frozen=True)
class VerifyConfig:
    """`ratio`: Lowe ratio on descriptor distances (1.0 disables it); `mutual`: keep only
    mutual nearest neighbours; `max_distance`: keep a nearest neighbour only when the L2
    distance of the L2-normalised descriptors is below it (None disables it);
    `ransac_threshold`: max reprojection error in pixels of the normalised image (for
    `fundamental`, the distance to the epipolar line); `model`: affine (as DELF), homography or
    fundamental; `local_optimisation`: LO-RANSAC (re-fit each new best model on its inliers);
    `seed`: the RANSAC random state; `matcher`: `nn` (the tests above) or `lightglue` (ALIKED
    features only; ratio, mutual and max_distance do not apply), keeping the correspondences
    whose LightGlue confidence is above `lightglue_min_confidence`.

    Defaults were chosen on real landmark photos (1024 px, 4000 RootSIFT): ratio 0.9 +
    mutual + affine 12 px verified the most true pairs while unrelated pairs stayed <= 12
    inliers, far from the 30-inlier edge threshold; local optimisation verified 8 of the 19
    true pairs there instead of 7, unrelated pairs still <= 12."""

    ratio: float = 0.9
    mutual: bool = True
    max_distance: float | None = None
    model: str = "affine"
    ransac_threshold: float = 12.0
    ransac_iterations: int = 2000
    ransac_confidence: float = 0.999
    local_optimisation: bool = True
    seed: int = 0
    matcher: str = "nn"
    lightglue_min_confidence: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1:
            raise ValueError("ratio must be in (0, 1]")
        if self.max_distance is not None and not 0 < self.max_distance <= 2:
            raise ValueError("max_distance must be in (0, 2] (unit vectors) or None")
        if self.model not in MIN_MATCHES:
            raise ValueError(f"model must be one of {tuple(MIN_MATCHES)}")
        if self.ransac_threshold <= 0 or self.ransac_iterations <= 0:
            raise ValueError("ransac_threshold and ransac_iterations must be > 0")
        if not 0 < self.ransac_confidence < 1:
            raise ValueError("ransac_confidence must be in (0, 1)")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.matcher not in MATCHERS:
            raise ValueError(f"matcher must be one of {MATCHERS}")
        if not 0 < self.lightglue_min_confidence < 1:
            raise ValueError("lightglue_min_confidence must be in (0, 1)")


def check_dimensions(desc_a: np.ndarray, desc_b: np.ndarray) -> None:
    """Raise ValueError when the descriptor widths differ: features of two extractors were
    mixed, a programming error that must stop the run rather than verify nothing."""
    if desc_a.shape[1] != desc_b.shape[1]:
        raise ValueError(
            f"descriptor dimensions differ: {desc_a.shape[1]} vs {desc_b.shape[1]} "
            "(features of different extractors cannot be matched)"
        )


def _normalised(descriptors: np.ndarray) -> np.ndarray:
    d = descriptors.astype(np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def putative_matches(desc_a: np.ndarray, desc_b: np.ndarray, config: VerifyConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into a, into b) of the nearest neighbours in b of a's descriptors that pass
    the enabled tests, each [M] int (M <= Na).

    desc_a [Na, D], desc_b [Nb, D], any numeric dtype. Raises ValueError when D differs.
    The similarity matrix is built `_MATCH_ROWS` rows at a time: memory O(_MATCH_ROWS * Nb)
    rather than Na * Nb (64 MiB at 4000 x 4000), and each block is reduced while in cache.
    """
    check_dimensions(desc_a, desc_b)
    empty = np.zeros(0, dtype=np.int64)
    if len(desc_a) == 0 or len(desc_b) == 0:
        return empty, empty
    unit_a, unit_b_t = _normalised(desc_a), np.ascontiguousarray(_normalised(desc_b).T)
    ratio_test = config.ratio < 1.0 and len(desc_b) > 1
    best = np.empty(len(desc_a), np.int64)
    best_sim = np.empty(len(desc_a), np.float32)
    second_sim = np.empty(len(desc_a), np.float32)
    column_max = np.full(len(desc_b), -np.inf, np.float32)
    for start in range(0, len(desc_a), _MATCH_ROWS):
        rows = slice(start, start + _MATCH_ROWS)
        sim = unit_a[rows] @ unit_b_t
        local = np.arange(len(sim))
        best[rows] = np.argmax(sim, axis=1)
        best_sim[rows] = sim[local, best[rows]]
        if config.mutual:
            np.maximum(column_max, sim.max(axis=0), out=column_max)
        if ratio_test:
            sim[local, best[rows]] = -np.inf
            second_sim[rows] = sim.max(axis=1)
    keep = np.ones(len(desc_a), dtype=bool)
    # squared L2 distance between unit vectors is 2 - 2 cos
    if config.max_distance is not None:
        keep &= (2.0 - 2.0 * best_sim) < config.max_distance**2
    if ratio_test:
        keep &= (2.0 - 2.0 * best_sim) < config.ratio**2 * (2.0 - 2.0 * second_sim)
    if config.mutual:
        keep &= best_sim >= column_max[best]
    return np.flatnonzero(keep), best[keep]


def _degenerate(points: np.ndarray) -> bool:
    """True when points [M, 2] are (nearly) identical or collinear."""
    centred = points - points.mean(axis=0)
    smallest_variance = np.linalg.eigvalsh(centred.T @ centred / len(points))[0]
    return bool(smallest_variance < _MIN_SPREAD_PX**2)


def _usac_params(config: VerifyConfig) -> cv2.UsacParams:
    """Seeded RANSAC inside OpenCV's USAC: uniform samples, score = inlier count, optional inner
    local optimisation, no final polishing, single-threaded so the result is reproducible."""
    params = cv2.UsacParams()
    params.sampler = cv2.SAMPLING_UNIFORM
    params.score = cv2.SCORE_METHOD_RANSAC
    params.loMethod = cv2.LOCAL_OPTIM_INNER_LO if config.local_optimisation else cv2.LOCAL_OPTIM_NULL
    params.loIterations = _LO_ITERATIONS
    params.loSampleSize = _LO_SAMPLE_SIZE
    params.final_polisher = cv2.NONE_POLISHER
    params.isParallel = False
    params.threshold = config.ransac_threshold
    params.maxIterations = config.ransac_iterations
    params.confidence = config.ransac_confidence
    params.randomGeneratorState = config.seed
    return params


_ESTIMATORS = {
    "affine": cv2.estimateAffine2D,
    "homography": cv2.findHomography,
    "fundamental": cv2.findFundamentalMat,
}


def ransac_mask(src: np.ndarray, dst: np.ndarray, config: VerifyConfig) -> tuple[np.ndarray, str]:
    """(inlier mask [M] bool, reason) of the configured model fitted to matched points src, dst [M, 2].

    Reasons: `too_few_matches` (M below the model's minimum), `degenerate_keypoints` (either
    side identical or collinear), `no_model` (RANSAC found none); all with no inlier.
    """
    none = np.zeros(len(src), dtype=bool)
    if len(src) < MIN_MATCHES[config.model]:
        return none, PairReason.TOO_FEW_MATCHES.value
    src = np.ascontiguousarray(src, dtype=np.float32)
    dst = np.ascontiguousarray(dst, dtype=np.float32)
    if _degenerate(src) or _degenerate(dst):
        return none, PairReason.DEGENERATE_KEYPOINTS.value
    model, mask = _ESTIMATORS[config.model](src, dst, _usac_params(config))
    if model is None or mask is None or model.size == 0:
        return none, PairReason.NO_MODEL.value
    return mask.ravel().astype(bool), ""


def correspondences(a: LocalFeatures, b: LocalFeatures, config: VerifyConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into a, into b), [M] int each, of the configured matcher's correspondences.
    Raises ValueError when the descriptor dimensions differ (or LightGlue's weights are absent)."""
    if config.matcher == "lightglue":
        check_dimensions(a.descriptors, b.descriptors)
        return learned_module().lightglue_matches(a, b, config.lightglue_min_confidence)
    return putative_matches(a.descriptors, b.descriptors, config)  # checks the dimensions itself


def verify_pair(a: LocalFeatures, b: LocalFeatures, config: VerifyConfig) -> tuple[int, int, str]:
    """(num_matches, inliers, reason) for one pair; reason is "" when RANSAC ran.

    Degenerate input never raises: `no_features` when either image has none, else the
    reasons of `ransac_mask`, all with 0 inliers. Raises ValueError only when the
    descriptor dimensions differ.
    """
    check_dimensions(a.descriptors, b.descriptors)
    if a.count == 0 or b.count == 0:
        return 0, 0, PairReason.NO_FEATURES.value
    idx_a, idx_b = correspondences(a, b, config)
    mask, reason = ransac_mask(a.keypoints[idx_a], b.keypoints[idx_b], config)
    return len(idx_a), int(np.count_nonzero(mask)), reason


def inlier_matches(a: LocalFeatures, b: LocalFeatures, config: VerifyConfig) -> tuple[np.ndarray, np.ndarray]:
    """The inlier correspondences of one pair, for drawing: keypoints of a and of b, [K, 2] each.

    Re-runs `verify_pair`'s matching (deterministic, so K equals its inlier count); K is 0
    for the pairs it reports with a reason. Meant for the few pairs a report draws, so the
    pipeline never stores every match.
    """
    idx_a, idx_b = correspondences(a, b, config)
    src, dst = a.keypoints[idx_a].astype(np.float32), b.keypoints[idx_b].astype(np.float32)
    mask, _ = ransac_mask(src, dst, config)
    return src[mask], dst[mask]


def verify_result(landmark_id: int, a: LocalFeatures, b: LocalFeatures, config: VerifyConfig) -> PairResult:
    """PairResult with ids ordered (id_a < id_b)."""
    if b.id < a.id:
        a, b = b, a
    num_matches, inliers, reason = verify_pair(a, b, config)
    return PairResult(landmark_id, a.id, b.id, num_matches, inliers, reason)


def _feature_bytes(features: LocalFeatures) -> int:
    return features.keypoints.nbytes + features.descriptors.nbytes + features.scales.nbytes + features.scores.nbytes


Verified = tuple[PairResult, str, str]  # a result and the sha256 of its two images' bytes


class _VerifyBlockFn(beam.DoFn):
    """Verifies every candidate pair of one block pair, reading the <= 2 * block_size feature
    sets it needs from the features store (never from the shuffle).

    Distributions `verify/block_feature_sets` and `verify/block_feature_bytes` record what
    one call holds, the per-worker memory that stays flat however large a class is; counters
    `verify/store_reads` and `verify/store_read_bytes` what it read from the store. A
    reference the store cannot resolve raises: lost features are a broken run, not a pair
    to skip."""

    def __init__(self, config: VerifyConfig) -> None:
        self._config = config
        self._held_sets = Metrics.distribution(STAGE, "block_feature_sets")
        self._held_bytes = Metrics.distribution(STAGE, "block_feature_bytes")

    def setup(self) -> None:
        one_blas_thread()  # the descriptor matmuls of parallel bundles: see `transforms.threads`

    def process(self, element: tuple[BlockKey, Block]) -> Iterator[Verified]:
        (landmark_id, _, _), (pairs, refs) = element
        features = read_features(refs)
        shas = {ref.id: ref.sha256 for ref in refs}
        held = sum(_feature_bytes(f) for f in features.values())
        self._held_sets.update(len(features))
        self._held_bytes.update(held)
        # what the store serves: one row group per feature set of the block
        Metrics.counter(STAGE, "store_reads").inc(len(features))
        Metrics.counter(STAGE, "store_read_bytes").inc(held)
        for a, b in sorted(pairs):
            with StageTimer(STAGE):
                result = verify_result(landmark_id, features[a], features[b], self._config)
            tick(STAGE, result.reason or VERIFIED)
            yield result, shas[result.id_a], shas[result.id_b]


def verified_row(verified: Verified) -> dict:
    """A row of the verified-pair store (`VERIFIED_SCHEMA`)."""
    result, sha_a, sha_b = verified
    return {"id": f"{result.id_a} {result.id_b}", **record_to_row(result), "sha_a": sha_a, "sha_b": sha_b}


def _result_of(verified: Verified, _path: str, _index: int) -> PairResult:
    return verified[0]


class VerifyPairs(beam.PTransform):
    """Blocks (BlockKey, (pairs, FeatureRefs)) -> PairResult PCollection (one per pair).

    Blocks are spread over workers first (one class can make thousands). With `store`, each
    result is committed to the verified-pair store as it is made, and emitted once it is
    there, so a re-run (or a killed run's successor) reuses it. With the `lightglue` matcher,
    `accelerator` (a Beam accelerator resource hint) is put on the matching step alone (LightGlue's
    weights are checked before the graph is built)."""

    def __init__(
        self,
        config: VerifyConfig,
        store: str = "",
        parts: StoreConfig | None = None,
        accelerator: str = "",
    ) -> None:
        super().__init__()
        self._config = config
        self._store = store
        self._parts = parts or StoreConfig()
        self._accelerator = accelerator

    def expand(self, blocks: beam.PCollection) -> beam.PCollection:
        verify = beam.ParDo(_VerifyBlockFn(self._config))
        if self._accelerator and self._config.matcher == "lightglue":
            verify = verify.with_resource_hints(accelerator=self._accelerator)
        verified = blocks | meter("MeterBlocks") | "SpreadBlocks" >> beam.Reshuffle() | "Verify" >> verify
        if not self._store:
            return verified | "Results" >> beam.MapTuple(lambda result, _a, _b: result)
        return verified | "StoreVerified" >> WriteStoreParts(
            self._store, VERIFIED_SCHEMA, verified_row, self._parts, to_ref=_result_of
        )
