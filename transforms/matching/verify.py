"""Stage 6: geometric verification of candidate pairs (descriptor matching + RANSAC).

Matchers (`MATCHERS`): `nn`, nearest neighbours of descriptors (any extractor), and
`lightglue`, LightGlue's learned matching of ALIKED features (`transforms.features.extractors.learned`;
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

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import cv2
import numpy as np
from apache_beam.metrics import Metrics

from schemas.records import LocalFeatures, PairResult
from schemas.tables import VERIFIED_SCHEMA, record_to_row
from schemas.vocabulary import VERIFIED, PairReason, Stage
from transforms.features.extractors.registry import learned_module
from transforms.features.feature_store import read_features
from transforms.ingest.image_store import StoreConfig, WriteStoreParts
from transforms.matching.pairs import Block, BlockKey, RoundPlan, round_blocks
from transforms.matching.rounds import SKIPPED, ClassGraph, SkipRule
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import StageTimer, tick
from transforms.plumbing.threads import one_blas_thread

STAGE = Stage.VERIFY.value

#: Smallest number of putative matches each model is fitted on. Affine needs 3 points, but
#: 3 matches always fit exactly, so like DELF's re-ranking code 0-3 matches never verify.
MIN_MATCHES = {"affine": 4, "homography": 4, "fundamental": 8}

# Matched points whose spread across their best-fit line is under this (pixels, standard
# deviation) are identical or collinear: no affine/homography/fundamental model is determined.
_MIN_SPREAD_PX = 1.0

# Inner local optimisation: re-fits of a new best model, each on this many of its inliers.
_LO_ITERATIONS, _LO_SAMPLE_SIZE = 10, 14

MATCHERS = ("nn", "lightglue", "cascade")
#: The `verify/<counter>`s of the cascade: pairs the nearest-neighbour stage settled, pairs sent on to LightGlue.
CASCADE_NN, CASCADE_LIGHTGLUE = "cascade_nn", "cascade_lightglue"

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
    whose LightGlue confidence is above `lightglue_min_confidence`; or `cascade`: `nn` first, and
    its result stands when RANSAC finds `cascade_accept` inliers or more (an edge at thresholds
    up to it) or `cascade_reject` or fewer (unrelated images: chance level); LightGlue + RANSAC
    decide the pairs in between, where nearest neighbours found some geometry but not enough.

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
    cascade_accept: int = 30
    cascade_reject: int = -1

    @property
    def learned_matching(self) -> bool:
        """Whether LightGlue matches some pairs (its weights, ALIKED features, a GPU hint)."""
        return self.matcher in ("lightglue", "cascade")

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
        if not -1 <= self.cascade_reject < self.cascade_accept:
            raise ValueError("need -1 <= cascade_reject < cascade_accept (-1: no pair is rejected by nn alone)")


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


@functools.lru_cache(maxsize=8)
def _cascade_stages(config: VerifyConfig) -> tuple[VerifyConfig, VerifyConfig]:
    return dataclasses.replace(config, matcher="nn"), dataclasses.replace(config, matcher="lightglue")


def _matched(
    a: LocalFeatures, b: LocalFeatures, config: VerifyConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(indices into a [M], into b [M], RANSAC inlier mask [M], reason) of the configured
    matcher; for `cascade`, the nearest-neighbour stage's when its inliers reach `cascade_accept`
    or stay at or under `cascade_reject`, else LightGlue's (counted as `verify/cascade_nn` and
    `verify/cascade_lightglue`)."""
    if config.matcher == "cascade":
        first, second = _cascade_stages(config)
        found = _matched(a, b, first)
        inliers = np.count_nonzero(found[2])
        if inliers >= config.cascade_accept or inliers <= config.cascade_reject:
            tick(STAGE, CASCADE_NN)
            return found
        tick(STAGE, CASCADE_LIGHTGLUE)
        return _matched(a, b, second)
    idx_a, idx_b = correspondences(a, b, config)
    mask, reason = ransac_mask(a.keypoints[idx_a], b.keypoints[idx_b], config)
    return idx_a, idx_b, mask, reason


def verify_pair(a: LocalFeatures, b: LocalFeatures, config: VerifyConfig) -> tuple[int, int, str]:
    """(num_matches, inliers, reason) for one pair; reason is "" when RANSAC ran.

    Degenerate input never raises: `no_features` when either image has none, else the
    reasons of `ransac_mask`, all with 0 inliers. Raises ValueError only when the
    descriptor dimensions differ.
    """
    check_dimensions(a.descriptors, b.descriptors)
    if a.count == 0 or b.count == 0:
        return 0, 0, PairReason.NO_FEATURES.value
    idx_a, _, mask, reason = _matched(a, b, config)
    return len(idx_a), int(np.count_nonzero(mask)), reason


def inlier_matches(a: LocalFeatures, b: LocalFeatures, config: VerifyConfig) -> tuple[np.ndarray, np.ndarray]:
    """The inlier correspondences of one pair, for drawing: keypoints of a and of b, [K, 2] each.

    Re-runs `verify_pair`'s matching (deterministic, so K equals its inlier count); K is 0
    for the pairs it reports with a reason. Meant for the few pairs a report draws, so the
    pipeline never stores every match.
    """
    if a.count == 0 or b.count == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    idx_a, idx_b, mask, _ = _matched(a, b, config)
    return a.keypoints[idx_a][mask].astype(np.float32), b.keypoints[idx_b][mask].astype(np.float32)


def verify_result(landmark_id: int, a: LocalFeatures, b: LocalFeatures, config: VerifyConfig) -> PairResult:
    """PairResult with ids ordered (id_a < id_b)."""
    if b.id < a.id:
        a, b = b, a
    num_matches, inliers, reason = verify_pair(a, b, config)
    return PairResult(landmark_id, a.id, b.id, num_matches, inliers, reason)


def _feature_bytes(features: LocalFeatures) -> int:
    return features.keypoints.nbytes + features.descriptors.nbytes + features.scales.nbytes + features.scores.nbytes


Verified = tuple[PairResult, str, str]  # a result and the sha256 of its two images' bytes


#: The `verify/reused` counter: a pair whose stored result was used instead of matching it again.
REUSED = "reused"


def decide_block(
    landmark_id: int, block: Block, rule: SkipRule | None, match: Callable[[str, str], PairResult]
) -> Iterator[tuple[PairResult, str]]:
    """(result, outcome) for each pair of `block`, in its order. Outcomes: `already_joined` (the
    skip `rule` says the pair can change no decision: a 0-inlier result with that reason),
    `reused` (the block's cached result), else the matched pair's outcome (`verified` or its
    reason), from `match(a, b)`. With a rule the class's verified graph starts from the block's
    states and takes each result in turn, so a pair that earlier pairs of the block joined is
    skipped too. `rule` None: exhaustive, nothing skipped."""
    graph = ClassGraph(rule) if rule is not None else None
    for image_id, state in block.states.items():
        graph.seed(image_id, *state)
    for a, b in block.pairs:
        if graph is not None and graph.can_skip(a, b):
            yield PairResult(landmark_id, a, b, 0, 0, SKIPPED), SKIPPED
            continue
        result = block.cached.get((a, b))
        if result is not None:
            outcome = REUSED
        else:
            result = match(a, b)
            outcome = result.reason or VERIFIED
        if graph is not None:
            graph.add(result)
        yield result, outcome


class _VerifyBlockFn(beam.DoFn):
    """Verifies the pairs of one block pair in order, reading the <= 2 * block_size feature sets
    they need from the features store (never from the shuffle), and only once a pair needs
    matching: a cached result (the verified-pair store's) is used as it is. With a skip `rule`
    (adaptive verification) the block keeps the class's verified graph as the round started,
    adds each result to it, and skips (`already_joined`) the pairs it has joined meanwhile.

    Main output: (PairResult, sha_a, sha_b) of each pair matched now; tag `decided`: the cached
    and skipped ones. Distributions `verify/block_feature_sets` and `verify/block_feature_bytes`
    record what one call holds, the per-worker memory that stays flat however large a class is;
    counters `verify/store_reads` and `verify/store_read_bytes` what it read from the store. A
    reference the store cannot resolve raises: lost features are a broken run, not a pair to
    skip."""

    def __init__(self, config: VerifyConfig, rule: SkipRule | None) -> None:
        self._config = config
        self._rule = rule
        self._held_sets = Metrics.distribution(STAGE, "block_feature_sets")
        self._held_bytes = Metrics.distribution(STAGE, "block_feature_bytes")

    def setup(self) -> None:
        one_blas_thread()  # the descriptor matmuls of parallel bundles: see `transforms.plumbing.threads`

    def _read(self, block: Block) -> dict[str, LocalFeatures]:
        features = read_features(block.refs)
        held = sum(_feature_bytes(f) for f in features.values())
        self._held_sets.update(len(features))
        self._held_bytes.update(held)
        # what the store serves: one row group per feature set of the block
        Metrics.counter(STAGE, "store_reads").inc(len(features))
        Metrics.counter(STAGE, "store_read_bytes").inc(held)
        return features

    def process(self, element: tuple[BlockKey, Block]) -> Iterator[Verified | beam.pvalue.TaggedOutput]:
        (landmark_id, _, _), block = element
        shas = {ref.id: ref.sha256 for ref in block.refs}
        features: dict[str, LocalFeatures] = {}

        def match(a: str, b: str) -> PairResult:
            if not features:
                features.update(self._read(block))
            with StageTimer(STAGE):
                return verify_result(landmark_id, features[a], features[b], self._config)

        for result, outcome in decide_block(landmark_id, block, self._rule, match):
            tick(STAGE, outcome)
            if outcome in (SKIPPED, REUSED):
                yield beam.pvalue.TaggedOutput("decided", result)
            else:
                yield result, shas[result.id_a], shas[result.id_b]


def verified_row(verified: Verified) -> dict:
    """A row of the verified-pair store (`VERIFIED_SCHEMA`)."""
    result, sha_a, sha_b = verified
    return {"id": f"{result.id_a} {result.id_b}", **record_to_row(result), "sha_a": sha_a, "sha_b": sha_b}


def _result_of(verified: Verified, _path: str, _index: int) -> PairResult:
    return verified[0]


def _first_round_blocks(
    landmark_id: int, plan: RoundPlan, rule: SkipRule | None = None
) -> Iterator[tuple[BlockKey, Block] | beam.pvalue.TaggedOutput]:
    """`round_blocks` of a class's first round: nothing verified before it."""
    return round_blocks(landmark_id, plan, (), rule)


def _later_round_blocks(
    landmark_id: int, grouped: dict[str, Iterable], rule: SkipRule | None = None
) -> Iterator[tuple[BlockKey, Block] | beam.pvalue.TaggedOutput]:
    """`round_blocks` of one class from its CoGroupByKey'd round plan and earlier results."""
    for plan in grouped["plan"]:
        yield from round_blocks(landmark_id, plan, grouped["earlier"], rule)


class VerifyPairs(beam.PTransform):
    """Round plans, one PCollection of (landmark_id, RoundPlan) per round (`GeneratePairs`) ->
    PairResult PCollection, one per candidate pair: matched, reused from the store, or skipped
    (`already_joined`) under the skip `rule` (None: exhaustive, one round).

    Round r's plans meet the results of rounds < r of their class (small records), which decide
    what the round can skip; its blocks are spread over workers (one class can make thousands)
    and verified. With `store`, each result matched is committed to the verified-pair store as
    it is made, and emitted once it is there, so a re-run (or a killed run's successor) reuses
    it. With the `lightglue` matcher, `accelerator` (a Beam accelerator resource hint) is put on
    the matching steps alone (LightGlue's weights are checked before the graph is built)."""

    def __init__(
        self,
        config: VerifyConfig,
        rule: SkipRule | None = None,
        store: str = "",
        parts: StoreConfig | None = None,
        accelerator: str = "",
    ) -> None:
        super().__init__()
        self._config = config
        self._rule = rule
        self._store = store
        self._parts = parts or StoreConfig()
        self._accelerator = accelerator

    def _verify(self, blocks: beam.PCollection, label: str) -> list[beam.PCollection]:
        verify = beam.ParDo(_VerifyBlockFn(self._config, self._rule)).with_outputs("decided", main="matched")
        if self._accelerator and self._config.learned_matching:
            verify = verify.with_resource_hints(accelerator=self._accelerator)
        spread = blocks | meter(f"Meter{label}Blocks") | f"{label}Spread" >> beam.Reshuffle()
        verified = spread | f"{label}Verify" >> verify
        if not self._store:
            matched = verified.matched | f"{label}Results" >> beam.MapTuple(lambda result, _a, _b: result)
        else:
            matched = verified.matched | f"{label}Store" >> WriteStoreParts(
                self._store, VERIFIED_SCHEMA, verified_row, self._parts, to_ref=_result_of
            )
        return [matched, verified.decided]

    def expand(self, plans: tuple[beam.PCollection, ...]) -> beam.PCollection:
        results: list[beam.PCollection] = []
        for number, plan in enumerate(plans):
            label = f"Round{number}"
            if number == 0 or self._rule is None:
                blocks = plan | f"{label}Blocks" >> beam.FlatMapTuple(
                    _first_round_blocks, rule=self._rule
                ).with_outputs("skipped", main="blocks")
            else:
                earlier = (
                    results
                    | f"{label}Earlier" >> beam.Flatten()
                    | f"{label}ByClass" >> beam.Map(lambda r: (r.landmark_id, r))
                    | meter(f"Meter{label}Earlier")
                )
                blocks = (
                    {"plan": plan | meter(f"Meter{label}Plans"), "earlier": earlier}
                    | f"{label}Join" >> beam.CoGroupByKey()
                    | f"{label}Blocks"
                    >> beam.FlatMapTuple(_later_round_blocks, rule=self._rule).with_outputs("skipped", main="blocks")
                )
            results += [blocks.skipped, *self._verify(blocks.blocks, label)]
        return results | "AllResults" >> beam.Flatten()
