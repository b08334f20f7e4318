"""Evaluation overlap: which images of a curated split show what an evaluation set shows.

Candidates come from a global-descriptor kNN *across* the two sets (the descriptor of
`--pairs knn`: the offline bag of binary words read from the features store, or an embedding
model's): every training image proposes its `k` most similar evaluation images and every
evaluation image its `k` most similar training images, so at most (n + m) * k pairs are
verified, never n * m. Each candidate is then verified with the curation's own matcher
(`transforms.matching.verify.verify_pair`), its features read from the features store by reference.

Bounded work: the kNN is cut into tasks of one training block x one evaluation block (ids
hashed into blocks of about `block_size`); a task reads the <= 2 * block_size descriptors it
compares from the store (never from a shuffle), keeps each image's `k` best within the task,
and a combiner merges those lists per image. Verification groups candidates by evaluation
image, in chunks of at most `verify_block` training partners: one call holds at most
`verify_block + 1` feature sets.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np

from schemas.overlap import OverlapPair
from schemas.records import FeatureRef
from transforms.features.feature_store import light, read_features, read_global_descriptors
from transforms.features.global_descriptor import DescribeImages
from transforms.matching.verify import VerifyConfig, verify_pair
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import StageTimer, tick

STAGE = "overlap"

#: (similarity, other image's id, other image's light FeatureRef): one kNN candidate.
Neighbour = tuple[float, str, FeatureRef]


@dataclass(frozen=True)
class OverlapConfig:
    """`k`: partners each image proposes on the other side (`--pairs-k`); `block_size`: images
    per kNN block (a task compares one training block with one evaluation block);
    `verify_block`: training partners verified per call (plus their one evaluation image);
    `min_inliers`: inliers that make a verified overlap (the curation's threshold);
    `embedding_model`/`embedding_signature`: the `--pairs knn` descriptor model (empty: the
    offline descriptor stored with the features)."""

    k: int = 10
    block_size: int = 1024
    verify_block: int = 32
    min_inliers: int = 30
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    embedding_model: str = ""
    embedding_signature: str = "serving_default"

    def __post_init__(self) -> None:
        if self.k < 1 or self.block_size < 1 or self.verify_block < 1:
            raise ValueError("k, block_size and verify_block must be >= 1")
        if self.min_inliers < 1:
            raise ValueError("min_inliers must be >= 1")
        if not self.embedding_signature:
            raise ValueError("embedding_signature must not be empty")


# ---- pure functions -----------------------------------------------------------------------


def blocks_for(count: int, block_size: int) -> int:
    """Number of kNN blocks for `count` images: ceil(count / block_size), at least 1."""
    return max(1, -(-count // block_size))


def block_of(image_id: str, blocks: int) -> int:
    """The kNN block of an image: a hash of its id (stable across runs and runners)."""
    digest = hashlib.sha1(image_id.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "little") % blocks


def _unit_rows(vectors: np.ndarray, centre: np.ndarray) -> np.ndarray:
    centred = vectors.astype(np.float32) - centre.astype(np.float32)
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


def _top(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices [r, k'] of each row's k' = min(k, columns) largest values (ties to the
    lower index) and those values [r, k']."""
    k = min(k, similarity.shape[1])
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


def cross_neighbours(
    train: np.ndarray, evals: np.ndarray, centre: np.ndarray, k: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Each side's `k` most similar images on the other side.

    train [n, D], evals [m, D] global descriptors (rows in id order), centre [D] (the mean
    descriptor of both sets, subtracted before the cosine, as the within-class kNN centres on
    its class). Returns ((indices into evals [n, k'], similarities [n, k']), (indices into
    train [m, k''], similarities [m, k''])); ties go to the lower index.
    """
    a, b = _unit_rows(train, centre), _unit_rows(evals, centre)
    similarity = a @ b.T
    return _top(similarity, k), _top(np.ascontiguousarray(similarity.T), k)


def best_neighbours(lists: Iterable[Iterable[Neighbour]], k: int) -> list[Neighbour]:
    """The `k` best of several candidate lists: highest similarity first, ties by smaller id;
    one entry per other image."""
    seen: dict[str, Neighbour] = {}
    for candidates in lists:
        for item in candidates:
            if item[1] not in seen or item[0] > seen[item[1]][0]:
                seen[item[1]] = item
    return sorted(seen.values(), key=lambda n: (-n[0], n[1]))[:k]


def chunk_partners(partners: Iterable[tuple[FeatureRef, float]], size: int) -> Iterator[list[tuple[FeatureRef, float]]]:
    """Training partners of one evaluation image, one per id (highest similarity kept), sorted
    by id and cut into chunks of at most `size`."""
    best: dict[str, tuple[FeatureRef, float]] = {}
    for ref, similarity in partners:
        if ref.id not in best or similarity > best[ref.id][1]:
            best[ref.id] = (ref, similarity)
    ordered = [best[i] for i in sorted(best)]
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


# ---- kNN across the sets ------------------------------------------------------------------

_TRAIN, _EVAL = "train", "eval"


def _knn_ref(ref: FeatureRef) -> FeatureRef:
    """What a kNN task carries: the reference with a model's descriptor (if any), no mean."""
    return dataclasses.replace(ref, mean=np.zeros(0, np.float32))


def _fan_out(ref: FeatureRef, side: str, own_blocks: int, other_blocks: int) -> Iterator[tuple]:
    """One copy of the reference per task it takes part in: (train block, eval block) keys."""
    own = block_of(ref.id, own_blocks)
    for other in range(other_blocks):
        key = (own, other) if side == _TRAIN else (other, own)
        yield key, (side, _knn_ref(ref))


def _descriptors(refs: list[FeatureRef]) -> np.ndarray:
    """Global descriptors [len(refs), D] in the order of `refs`: a model's from the reference,
    else the offline one read from the features store."""
    missing = [ref for ref in refs if not ref.global_descriptor.size]
    stored = read_global_descriptors(missing) if missing else {}
    return np.stack([ref.global_descriptor if ref.global_descriptor.size else stored[ref.id] for ref in refs])


def _descriptor_sum(key: tuple[int, int], members: Iterable[tuple[str, FeatureRef]]) -> Iterator[tuple]:
    """(sum [D] float64, count) of the descriptors of one task's training block when the task is
    (b, 0), of its evaluation block when it is (0, b): each image is summed exactly once."""
    members = list(members)
    for side, first_block in ((_TRAIN, key[1] == 0), (_EVAL, key[0] == 0)):
        refs = sorted((ref for s, ref in members if s == side), key=lambda r: r.id)
        if first_block and refs:
            yield _descriptors(refs).astype(np.float64).sum(axis=0), len(refs)


def _mean_descriptor(parts: Iterable[tuple[np.ndarray, int]]) -> np.ndarray:
    """The mean of all descriptors; float16 descriptors sum exactly in float64, so the mean
    does not depend on the order of the parts. Rounded to 6 decimals for model descriptors."""
    total, count = None, 0
    for vector_sum, n in parts:
        total = vector_sum if total is None else total + vector_sum
        count += n
    if total is None:
        return np.zeros(0, np.float32)
    return np.round(total / count, 6).astype(np.float32)


def knn_task(
    key: tuple[int, int], members: Iterable[tuple[str, FeatureRef]], centre: np.ndarray | None = None, k: int = 10
) -> Iterator[tuple[tuple[str, str], tuple[FeatureRef, list[Neighbour]]]]:
    """One (training block, evaluation block) task: ((side, id), (own light ref, its k best
    neighbours of the other block)) for every image of both blocks."""
    members = list(members)
    train = sorted((ref for side, ref in members if side == _TRAIN), key=lambda r: r.id)
    evals = sorted((ref for side, ref in members if side == _EVAL), key=lambda r: r.id)
    if not train or not evals:
        return
    centre = np.zeros(1, np.float32) if centre is None or not centre.size else centre
    with StageTimer(STAGE):
        (t_idx, t_sim), (e_idx, e_sim) = cross_neighbours(_descriptors(train), _descriptors(evals), centre, k)
    light_train, light_evals = [light(r) for r in train], [light(r) for r in evals]
    for own, others, index, sims, side in (
        (light_train, light_evals, t_idx, t_sim, _TRAIN),
        (light_evals, light_train, e_idx, e_sim, _EVAL),
    ):
        for row, ref in enumerate(own):
            near = [(float(s), others[j].id, others[j]) for j, s in zip(index[row], sims[row], strict=True)]
            yield (side, ref.id), (ref, near)


class _BestNeighbours(beam.CombineFn):
    """Merges (own ref, neighbours) lists of one image into its `k` best (`best_neighbours`)."""

    def __init__(self, k: int) -> None:
        self._k = k

    def create_accumulator(self) -> tuple[FeatureRef | None, list[Neighbour]]:
        return None, []

    def add_input(self, accumulator: tuple, element: tuple[FeatureRef, list[Neighbour]]) -> tuple:
        return self.merge_accumulators([accumulator, element])

    def merge_accumulators(self, accumulators: Iterable[tuple]) -> tuple:
        accumulators = list(accumulators)
        ref = next((r for r, _ in accumulators if r is not None), None)
        return ref, best_neighbours((n for _, n in accumulators), self._k)

    def extract_output(self, accumulator: tuple) -> tuple:
        return accumulator


def _candidates(item: tuple[tuple[str, str], tuple[FeatureRef, list[Neighbour]]]) -> Iterator[tuple]:
    """(eval id, (eval ref, train ref, similarity)) for each neighbour of one image."""
    (side, _), (ref, near) = item
    for similarity, _, other in near:
        train, evaluation = (ref, other) if side == _TRAIN else (other, ref)
        yield evaluation.id, (evaluation, train, similarity)


def _verification_chunks(
    eval_id: str, candidates: Iterable[tuple[FeatureRef, FeatureRef, float]], size: int = 32
) -> Iterator[tuple[FeatureRef, list[tuple[FeatureRef, float]]]]:
    candidates = list(candidates)
    evaluation = candidates[0][0]
    for chunk in chunk_partners(((train, sim) for _, train, sim in candidates), size):
        yield evaluation, chunk


class _VerifyAcrossFn(beam.DoFn):
    """Verifies one evaluation image against a chunk of training partners, reading the
    <= verify_block + 1 feature sets from the store; one OverlapPair per candidate (matching
    always runs training -> evaluation, the order the report draws them in)."""

    def __init__(self, verify: VerifyConfig) -> None:
        self._verify = verify

    def process(self, chunk: tuple[FeatureRef, list[tuple[FeatureRef, float]]]) -> Iterator[OverlapPair]:
        evaluation, partners = chunk
        features = read_features([evaluation, *(ref for ref, _ in partners)])
        for train, similarity in partners:
            with StageTimer(STAGE):
                matches, inliers, reason = verify_pair(features[train.id], features[evaluation.id], self._verify)
            tick(STAGE, "candidate_pairs")
            yield OverlapPair(
                train_id=train.id,
                landmark_id=train.landmark_id,
                eval_id=evaluation.id,
                inliers=inliers,
                num_matches=matches,
                similarity=round(similarity, 6),
                reason=reason,
            )


def _count_verified(pair: OverlapPair, min_inliers: int) -> OverlapPair:
    if pair.inliers >= min_inliers:
        tick(STAGE, "verified_pairs")
    return pair


class FindOverlap(beam.PTransform):
    """{"train": FeatureRef, "eval": FeatureRef (+ "train_images", "eval_images": ImageRef with
    an embedding model)} -> OverlapPair PCollection: every candidate pair across the sets,
    verified (the caller keeps those with >= `min_inliers`).

    Training and evaluation ids must be disjoint (the caller fails evaluation rows that reuse a
    training id)."""

    def __init__(self, config: OverlapConfig) -> None:
        super().__init__()
        self._config = config

    def _described(self, inputs: dict[str, beam.PCollection], side: str) -> beam.PCollection:
        if not self._config.embedding_model:
            return inputs[side]
        describe = DescribeImages(self._config.embedding_model, self._config.embedding_signature)
        return {"features": inputs[side], "images": inputs[f"{side}_images"]} | f"Describe{side.title()}" >> describe

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        cfg = self._config
        train, evals = self._described(inputs, _TRAIN), self._described(inputs, _EVAL)
        counts = {}
        for side, refs in ((_TRAIN, train), (_EVAL, evals)):
            counts[side] = beam.pvalue.AsSingleton(
                refs
                | f"Count{side.title()}" >> beam.combiners.Count.Globally()
                | f"Blocks{side.title()}" >> beam.Map(blocks_for, cfg.block_size)
            )
        fanned = [
            train | "FanOutTrain" >> beam.FlatMap(_fan_out, _TRAIN, counts[_TRAIN], counts[_EVAL]),
            evals | "FanOutEval" >> beam.FlatMap(_fan_out, _EVAL, counts[_EVAL], counts[_TRAIN]),
        ]
        tasks = fanned | "AllRefs" >> beam.Flatten() | meter("MeterTasks") | "GroupTasks" >> beam.GroupByKey()
        centre = beam.pvalue.AsSingleton(
            tasks
            | "SumDescriptors" >> beam.FlatMapTuple(_descriptor_sum)
            | "AllSums" >> beam.combiners.ToList()
            | "Centre" >> beam.Map(_mean_descriptor)
        )
        return (
            tasks
            | "Neighbours" >> beam.FlatMapTuple(knn_task, centre, cfg.k)
            | meter("MeterNeighbours")
            | "BestNeighbours" >> beam.CombinePerKey(_BestNeighbours(cfg.k))
            | "Candidates" >> beam.FlatMap(_candidates)
            | meter("MeterCandidates")
            | "ByEvalImage" >> beam.GroupByKey()
            | "Chunks" >> beam.FlatMapTuple(_verification_chunks, cfg.verify_block)
            | "SpreadChunks" >> beam.Reshuffle()
            | "Verify" >> beam.ParDo(_VerifyAcrossFn(cfg.verify))
            | "CountVerified" >> beam.Map(_count_verified, cfg.min_inliers)
        )
