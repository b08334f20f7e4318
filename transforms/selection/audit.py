"""Label-noise audit beyond removal: what the within-class rule cannot see.

- `cross_class_match`: two images filed under different classes that verify strongly (likely a
  mislabeled image, or two ids for one landmark);
- `exact_duplicate` / `near_duplicate`: the same photo (same bytes / close perceptual hash)
  filed under different classes;
- `split_class`: a class whose verified graph splits into several large components (possibly
  several landmarks merged under one id).

Cross-class verification cannot afford all pairs (n^2 over 4.1M images). Candidates come from
buckets: every image falls in `bands` SimHash buckets of its global signature, buckets are
processed in chunks of at most `max_bucket` images, and inside a chunk each image proposes
its `partners_per_image` most similar images of other classes. So an image is verified
against at most `bands * partners_per_image` partners it chose (plus those that chose it, at
most `bands * (max_bucket - 1)`), and no worker holds more than one chunk of signatures or,
when verifying, one image's features and those of its partners.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from schemas.records import AuditFinding, FeatureRef, ImageDecision, LocalFeatures
from schemas.vocabulary import AuditKind, Stage
from transforms.features.feature_store import light, read_features
from transforms.matching.verify import VerifyConfig, verify_pair
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import StageTimer, tick
from transforms.selection.audit_signatures import (
    bits_for,
    global_signature,
    hamming,
    hash_bands,
    hyperplanes,
    simhash_codes,
)

STAGE = Stage.AUDIT.value

# (id, landmark_id) of one image, and a candidate pair (id_a, landmark_a, id_b, landmark_b), id_a < id_b
Member = tuple[str, int]
Candidate = tuple[str, int, str, int]


@dataclass(frozen=True)
class AuditConfig:
    """Bounds and thresholds of the audit.

    `bands`/`bucket_target`/`max_bucket`/`partners_per_image`: cross-class candidates (see the
    module docstring); `phash_bands`/`near_duplicate_bits`/`near_window`: near duplicates
    (pairs within `near_duplicate_bits` < `phash_bands` always share a band; inside a band's
    bucket each image is compared with the next `near_window` images in hash order);
    `split_component_size`: a component this large counts towards `split_class`."""

    enabled: bool = True
    bands: int = 2
    bucket_target: int = 8
    max_bucket: int = 64
    partners_per_image: int = 1
    phash_bands: int = 8
    near_duplicate_bits: int = 6
    near_window: int = 64
    split_component_size: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.bands, self.bucket_target, self.partners_per_image, self.near_window) < 1:
            raise ValueError("bands, bucket_target, partners_per_image and near_window must be >= 1")
        if self.max_bucket < 2:
            raise ValueError("max_bucket must be >= 2")
        if self.phash_bands not in (1, 2, 4, 8, 16):
            raise ValueError("phash_bands must divide 64 into whole bytes or nibbles: 1, 2, 4, 8 or 16")
        if not 0 <= self.near_duplicate_bits < 64:
            raise ValueError("near_duplicate_bits must be in [0, 64)")
        if self.split_component_size < 2:
            raise ValueError("split_component_size must be >= 2")


def _ordered(a: Member, b: Member) -> Candidate:
    (id_a, lid_a), (id_b, lid_b) = sorted((a, b))
    return id_a, lid_a, id_b, lid_b


# ---- duplicates -------------------------------------------------------------------------------


def exact_duplicates(sha256: str, members: Iterable[Member]) -> Iterator[AuditFinding]:
    """Images with the same bytes under different classes: each against the group's smallest id
    (linear in the group, however many copies of a placeholder image there are)."""
    members = sorted(members)
    classes = {lid for _, lid in members}
    if len(classes) < 2:
        return
    first_id, first_lid = members[0]
    detail = f"sha256 {sha256[:16]}: {len(members)} copies in {len(classes)} classes"
    for image_id, lid in members[1:]:
        if lid != first_lid:
            yield AuditFinding(
                AuditKind.EXACT_DUPLICATE.value, first_lid, first_id, lid, image_id, len(members), detail
            )


def near_duplicates(
    members: Iterable[tuple[int, str, str, int]], max_bits: int, window: int
) -> Iterator[tuple[Candidate, int]]:
    """(pair, distance) for members (phash, sha256, id, landmark_id) of one hash bucket that lie
    in different classes within `max_bits`; same-bytes pairs are left to `exact_duplicates`.
    Each member is compared with the next `window` in hash order (exact while the bucket holds
    at most window + 1 images)."""
    members = sorted(members)
    for i, (phash, sha, image_id, lid) in enumerate(members):
        for other_hash, other_sha, other_id, other_lid in members[i + 1 : i + 1 + window]:
            distance = hamming(phash, other_hash)
            if other_lid != lid and other_sha != sha and distance <= max_bits:
                yield _ordered((image_id, lid), (other_id, other_lid)), distance


def _near_in_bucket(
    _key: tuple[int, int], members: Iterable[tuple[int, str, str, int]], config: AuditConfig = AuditConfig()
) -> Iterator[tuple[Candidate, int]]:
    return near_duplicates(members, config.near_duplicate_bits, config.near_window)


def _near_finding(pair_and_distance: tuple[Candidate, int]) -> AuditFinding:
    (id_a, lid_a, id_b, lid_b), distance = pair_and_distance
    return AuditFinding(
        AuditKind.NEAR_DUPLICATE.value, lid_a, id_a, lid_b, id_b, distance, f"pHash distance {distance} of 64 bits"
    )


# ---- cross-class candidates -------------------------------------------------------------------


def _rank(image_id: str) -> bytes:
    # chunks of an oversized bucket are cut in hash order, not id order, so they mix classes
    return hashlib.sha1(image_id.encode()).digest()


def cross_class_candidates(chunk: list[tuple[str, int, np.ndarray]], partners_per_image: int) -> Iterator[Candidate]:
    """For chunk members (id, landmark_id, signature [D] unit vector), each image's most similar
    images of other classes (cosine of signatures; ties by smaller id)."""
    if len({lid for _, lid, _ in chunk}) < 2:
        return
    chunk = sorted(chunk, key=lambda m: m[0])
    labels = np.array([lid for _, lid, _ in chunk])
    similarity = np.stack([s for _, _, s in chunk]) @ np.stack([s for _, _, s in chunk]).T
    similarity[labels[:, None] == labels[None, :]] = -np.inf
    for i, (image_id, lid, _) in enumerate(chunk):
        # stable sort on -similarity keeps the smaller id first among ties
        for j in np.argsort(-similarity[i], kind="stable")[:partners_per_image]:
            if np.isfinite(similarity[i, j]):
                yield _ordered((image_id, lid), (chunk[j][0], chunk[j][1]))


def _bucket_chunks(
    _key: tuple[int, int], members: Iterable[tuple[str, int, np.ndarray]], config: AuditConfig = AuditConfig()
) -> Iterator[list[tuple[str, int, np.ndarray]]]:
    members = sorted(members, key=lambda m: _rank(m[0]))
    for start in range(0, len(members), config.max_bucket):
        yield members[start : start + config.max_bucket]


def _signature_buckets(
    features: FeatureRef, centre: np.ndarray, images: int, config: AuditConfig
) -> Iterator[tuple[tuple[int, int], tuple[str, int, np.ndarray]]]:
    signature = global_signature(features.mean.astype(np.float64), centre)
    if not signature.any():
        return
    planes = hyperplanes(config.seed, config.bands, len(signature))
    for band, code in enumerate(simhash_codes(signature, planes, bits_for(images, config.bucket_target))):
        yield (band, code), (features.id, features.landmark_id, signature)


# ---- verification of candidates (features read from the store by reference) --------------


def verify_candidate(
    candidate: Candidate, a: LocalFeatures, b: LocalFeatures, verify: VerifyConfig, min_inliers: int
) -> AuditFinding | None:
    """A `cross_class_match` finding when the pair has at least `min_inliers` inliers, else None."""
    num_matches, inliers, _ = verify_pair(a, b, verify)
    if inliers < min_inliers:
        return None
    id_a, lid_a, id_b, lid_b = candidate
    return AuditFinding(
        AuditKind.CROSS_CLASS_MATCH.value, lid_a, id_a, lid_b, id_b, inliers, f"{num_matches} putative matches"
    )


def _with_ref(image_id: str, grouped: dict, side: int = 2) -> Iterator[tuple[str, tuple]]:
    """Attach the FeatureRef of `image_id` to the candidates (or halves) waiting for it; the
    next join is keyed by the other image (side 2: id_b) or the candidate (side -1)."""
    refs = list(grouped["ref"])
    if refs:
        for waiting in grouped["waiting"]:
            candidate = waiting[0]
            key = candidate[2] if side == 2 else candidate
            yield key, (*waiting, light(refs[0]))


class _VerifyCandidatesFn(beam.DoFn):
    """Verifies cross-class candidates (candidate, ref_a, ref_b), reading both feature sets
    from the store; emits a finding for every candidate that reaches RANSAC with an inlier
    (the threshold is applied at selection, so `gld select` can change it)."""

    def __init__(self, verify: VerifyConfig) -> None:
        self._verify = verify

    def process(self, item: tuple[Candidate, FeatureRef, FeatureRef]) -> Iterator[AuditFinding]:
        candidate, ref_a, ref_b = item
        # `audit/busy_ms`: what the cost model prices for the audit (its matching is per image)
        with StageTimer(STAGE):
            features = read_features([ref_a, ref_b])
            finding = verify_candidate(candidate, features[ref_a.id], features[ref_b.id], self._verify, 1)
        tick(STAGE, "cross_class_verified")
        if finding:
            yield finding


# ---- split classes ----------------------------------------------------------------------------


def split_class(landmark_id: int, components: Iterable[tuple[int, int]], min_size: int) -> Iterator[AuditFinding]:
    """A `split_class` finding when a class has >= 2 components (component_id, size) of >= min_size."""
    large = sorted({c for c in components if c[1] >= min_size})
    if len(large) >= 2:
        sizes = ", ".join(str(size) for _, size in large)
        yield AuditFinding(AuditKind.SPLIT_CLASS.value, landmark_id, "", -1, "", len(large), f"component sizes {sizes}")


def _split_of_class(
    landmark_id: int, components: Iterable[tuple[int, int]], config: AuditConfig = AuditConfig()
) -> Iterator[AuditFinding]:
    return split_class(landmark_id, components, config.split_component_size)


def _component_of(decision: ImageDecision) -> Iterator[tuple[int, tuple[int, int]]]:
    if decision.stage == Stage.SELECT.value:
        yield decision.landmark_id, (decision.component_id, decision.component_size)


def _hashes(ref: FeatureRef) -> Iterator[tuple[int, str, str, int]]:
    yield ref.phash, ref.sha256, ref.id, ref.landmark_id


def _phash_buckets(hashed: tuple[int, str, str, int], bands: int) -> Iterator[tuple[tuple[int, int], tuple]]:
    for band, code in enumerate(hash_bands(hashed[0], bands)):
        yield (band, code), hashed


class _MeanVector(beam.CombineFn):
    """Element-wise mean of equal-length vectors [D] (Beam's Mean assumes scalars); None if empty."""

    def create_accumulator(self) -> tuple[np.ndarray | None, int]:
        return None, 0

    def add_input(self, accumulator: tuple, vector: np.ndarray) -> tuple[np.ndarray, int]:
        total, count = accumulator
        return (vector if total is None else total + vector), count + 1

    def merge_accumulators(self, accumulators: Iterable[tuple]) -> tuple[np.ndarray | None, int]:
        total, count = None, 0
        for part_total, part_count in accumulators:
            if part_total is not None:
                total = part_total if total is None else total + part_total
            count += part_count
        return total, count

    def extract_output(self, accumulator: tuple) -> np.ndarray | None:
        total, count = accumulator
        return None if total is None else total / count


def _counted(finding: AuditFinding) -> AuditFinding:
    tick(STAGE, finding.kind)
    return finding


class FindAuditCandidates(beam.PTransform):
    """FeatureRef PCollection -> AuditFinding PCollection of what does not depend on the
    selection: exact and near duplicates, and every verified cross-class candidate with its
    inliers as `score` (written to `audit_candidates.parquet`; `AuditLabels` applies the
    threshold)."""

    def __init__(self, config: AuditConfig, verify: VerifyConfig) -> None:
        super().__init__()
        self._config = config
        self._verify = verify

    def expand(self, features: beam.PCollection) -> beam.PCollection:
        cfg = self._config
        hashed = features | "Hash" >> beam.FlatMap(_hashes)
        exact = (
            hashed
            | "BySha" >> beam.Map(lambda h: (h[1], (h[2], h[3])))
            | meter("MeterSha")
            | "GroupSha" >> beam.GroupByKey()
            | "ExactDuplicates" >> beam.FlatMapTuple(exact_duplicates)
        )
        near = (
            hashed
            | "PhashBuckets" >> beam.FlatMap(_phash_buckets, bands=cfg.phash_bands)
            | meter("MeterPhash")
            | "GroupPhash" >> beam.GroupByKey()
            | "NearPairs" >> beam.FlatMapTuple(_near_in_bucket, config=cfg)
            | meter("MeterNear")
            | "DistinctNear" >> beam.Distinct()
            | "NearFindings" >> beam.Map(_near_finding)
        )
        means = features | "Means" >> beam.Map(lambda f: f.mean.astype(np.float64))
        centre = beam.pvalue.AsSingleton(means | "Centre" >> beam.CombineGlobally(_MeanVector()))
        images = beam.pvalue.AsSingleton(features | "CountImages" >> beam.combiners.Count.Globally())
        candidates = (
            features
            | "SignatureBuckets" >> beam.FlatMap(_signature_buckets, centre, images, config=cfg)
            | meter("MeterBuckets")
            | "GroupBuckets" >> beam.GroupByKey()
            | "Chunks" >> beam.FlatMapTuple(_bucket_chunks, config=cfg)
            | "Candidates" >> beam.FlatMap(cross_class_candidates, partners_per_image=cfg.partners_per_image)
            | meter("MeterCandidates")
            | "DistinctCandidates" >> beam.Distinct()
        )
        by_id = features | "RefsById" >> beam.Map(lambda f: (f.id, light(f)))
        halves = (
            {
                "ref": by_id | meter("MeterRefsFirst"),
                "waiting": candidates | "ByFirst" >> beam.Map(lambda c: (c[0], (c,))) | meter("MeterFirst"),
            }
            | "JoinFirst" >> beam.CoGroupByKey()
            | "WithFirst" >> beam.FlatMapTuple(_with_ref, side=2)
        )
        matches = (
            {"ref": by_id | meter("MeterRefsSecond"), "waiting": halves | meter("MeterHalves")}
            | "JoinSecond" >> beam.CoGroupByKey()
            | "WithSecond" >> beam.FlatMapTuple(_with_ref, side=-1)
            | "Values" >> beam.Values()
            | meter("MeterMatches")
            | "SpreadCandidates" >> beam.Reshuffle()
            | "VerifyCandidates" >> beam.ParDo(_VerifyCandidatesFn(self._verify))
        )
        return (exact, near, matches) | "AllCandidates" >> beam.Flatten()


def _passes(finding: AuditFinding, min_inliers: int) -> bool:
    return finding.kind != AuditKind.CROSS_CLASS_MATCH.value or finding.score >= min_inliers


class AuditLabels(beam.PTransform):
    """{"candidates": AuditFinding (from `FindAuditCandidates`), "decisions": ImageDecision}
    -> AuditFinding PCollection: duplicates, cross-class matches of >= `min_inliers` inliers
    and split classes."""

    def __init__(self, config: AuditConfig, min_inliers: int) -> None:
        super().__init__()
        self._config = config
        self._min_inliers = min_inliers

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        kept = inputs["candidates"] | "Threshold" >> beam.Filter(_passes, min_inliers=self._min_inliers)
        split = (
            inputs["decisions"]
            | "Components" >> beam.FlatMap(_component_of)
            | meter("MeterComponents")
            | "GroupComponents" >> beam.GroupByKey()
            | "SplitClasses" >> beam.FlatMapTuple(_split_of_class, config=self._config)
        )
        return (kept, split) | "AllFindings" >> beam.Flatten() | "Count" >> beam.Map(_counted)
