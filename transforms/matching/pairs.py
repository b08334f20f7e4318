"""Stage 5: candidate pairs inside each landmark class, planned as bounded work blocks.

Pairs (`mode`): `all` pairs while a class has at most `max_class_for_all` images, above that
`knn`; `knn` pairs each image with its `k` nearest same-class neighbours by a global
descriptor (`transforms.features.global_descriptor`; symmetric pairs counted once); `random` with `k`
seeded random partners. Above the cap a class costs at most n*k pairs, never O(n^2).

Blocks: a class's sorted ids (for knn: its ids in `locality_order`, so neighbourhoods share
blocks) are cut into blocks of `block_size`; each candidate pair belongs to the block pair of
its two images. Verification groups one block pair at a time, so a worker holds at most
2 * block_size feature sets however large the class, and each image's features are shuffled
once per block pair that needs them: at most the number of blocks of its class, and about 2k
on average in random mode (its own k partners plus those that chose it).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from schemas.records import FeatureRef, PairResult
from schemas.vocabulary import Stage
from transforms.features.feature_store import light, read_global_descriptors
from transforms.features.global_descriptor import DescribeImages, nearest_neighbours
from transforms.matching.rounds import SKIPPED, SkipRule, graph_of, pair_ranks, round_count, round_of
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import tick

STAGE = "pairs"
MODES = ("all", "knn", "random")
VERIFICATIONS = ("adaptive", "exhaustive")

BlockKey = tuple[int, int, int]  # (landmark_id, lower block, higher block) of a pair's images


@dataclass(frozen=True)
class PairConfig:
    """`embedding_model`: SavedModel (any Beam path) whose `embedding_signature` gives the
    global descriptor of `knn`; empty: aggregate the image's own local descriptors (offline).
    `verification`: `adaptive` verifies in rounds, best partner first, and skips the pairs that
    can change no decision (`transforms.matching.rounds`); `exhaustive` verifies every candidate."""

    mode: str = "all"
    max_class_for_all: int = 40
    k: int = 10
    seed: int = 0
    block_size: int = 32
    embedding_model: str = ""
    embedding_signature: str = "serving_default"
    verification: str = "adaptive"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"pairs mode must be one of {MODES}")
        if self.verification not in VERIFICATIONS:
            raise ValueError(f"verification must be one of {VERIFICATIONS}")
        if self.max_class_for_all < 2 or self.k < 1 or self.block_size < 1:
            raise ValueError("need max_class_for_all >= 2, k >= 1 and block_size >= 1")
        if not self.embedding_signature:
            raise ValueError("embedding_signature must not be empty")

    def needs_descriptors(self, class_size: int) -> bool:
        """Whether a class of this size needs global descriptors: planned by kNN (`all` falls
        back to it above the cap), or an `all` class whose partners adaptive verification ranks."""
        if self.mode == "knn" or (self.mode == "all" and class_size > self.max_class_for_all):
            return True
        return self.mode == "all" and self.verification == "adaptive" and class_size > 2

    @property
    def rounds(self) -> int:
        """Verification rounds: 1 when exhaustive, else enough for the largest partner rank a
        class can have (`round_count`): 6 for the default (40 images for all pairs, k 10)."""
        if self.verification == "exhaustive":
            return 1
        largest_rank = max(self.max_class_for_all - 2, self.k - 1) if self.mode == "all" else self.k - 1
        return round_count(largest_rank)


def _class_rng(seed: int, landmark_id: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{landmark_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _random_partners(landmark_id: int, n: int, config: PairConfig) -> np.ndarray:
    """[n, min(k, n-1)] seeded random partner indices, never the image itself."""
    k = min(config.k, n - 1)
    rng = _class_rng(config.seed, landmark_id)
    # draw from the n-1 others: offsets 1..n-1 avoid pairing an image with itself
    offsets = np.stack([rng.choice(np.arange(1, n), size=k, replace=False) for _ in range(n)])
    return (np.arange(n)[:, None] + offsets) % n


def locality_order(partners: np.ndarray) -> list[int]:
    """Positions 0..n-1 in breadth-first order of the partner graph partners [n, k], restarting
    from the lowest unvisited position: partners end up close together in the order."""
    seen = np.zeros(len(partners), dtype=bool)
    order: list[int] = []
    for root in range(len(partners)):
        if seen[root]:
            continue
        seen[root] = True
        queue = deque([root])
        while queue:
            i = queue.popleft()
            order.append(i)
            for j in partners[i]:
                if not seen[j]:
                    seen[j] = True
                    queue.append(int(j))
    return order


def _plan(
    landmark_id: int, ids: list[str], config: PairConfig, descriptors: dict[str, np.ndarray | None] | None
) -> tuple[list[tuple[str, str]], list[str], list[int]]:
    """(sorted pairs, ids in block order, each pair's partner rank) of a class; see
    `candidate_pairs`. Ranks order adaptive verification (`transforms.matching.rounds.pair_ranks`); they
    are all 0 where nothing ranks the partners (exhaustive verification of an `all` class)."""
    ids = sorted(set(ids))
    n = len(ids)
    if n < 2:
        return [], ids, []
    order = list(range(n))
    if config.mode == "all" and n <= config.max_class_for_all:
        chosen = [(i, j) for i in range(n) for j in range(i + 1, n)]
        # ranked when descriptors are given (adaptive verification reads them for such classes);
        # the pairs themselves do not depend on them
        ranked = (
            config.needs_descriptors(n) and descriptors is not None and all(v is not None for v in descriptors.values())
        )
        partners = _similar(ids, descriptors, n - 1) if ranked else None
    else:
        if config.mode == "random":
            partners = _random_partners(landmark_id, n, config)
        else:
            partners = _similar(ids, descriptors, config.k)
            # neighbours of similar images overlap: blocks cut from this order keep most pairs
            # inside few block pairs, so each image's features are shuffled fewer times
            order = locality_order(partners)
        chosen = sorted({(min(i, int(j)), max(i, int(j))) for i in range(n) for j in partners[i]})
    ranks = pair_ranks(chosen, partners) if partners is not None else [0] * len(chosen)
    return [(ids[i], ids[j]) for i, j in chosen], [ids[i] for i in order], ranks


def _similar(ids: list[str], descriptors: dict[str, np.ndarray | None] | None, k: int) -> np.ndarray:
    """[n, k] each id's most similar others by global descriptor, best first."""
    if descriptors is None or any(descriptors.get(image_id) is None for image_id in ids):
        raise ValueError("ranking partners (knn, adaptive) needs a global descriptor for every image")
    return nearest_neighbours(np.stack([descriptors[image_id] for image_id in ids]), k)


def candidate_pairs(
    landmark_id: int,
    ids: list[str],
    config: PairConfig,
    descriptors: dict[str, np.ndarray | None] | None = None,
) -> list[tuple[str, str]]:
    """Sorted, de-duplicated pairs (a, b) with a < b among `ids` (a class's image ids).

    `descriptors` maps every id to its global descriptor [D]; `knn` needs them (also `all`
    above the cap, and adaptive verification of classes above 2 images, to rank partners) and
    raises ValueError without them. Deterministic for a given (ids, descriptors, config): the
    order of `ids` does not matter.
    """
    return _plan(landmark_id, ids, config, descriptors)[0]


Member = tuple[str, np.ndarray | None]  # (image id, global descriptor or None)


@dataclass(frozen=True)
class Candidate:
    """One candidate pair of a class: its partner rank (0 = one image's most similar partner),
    ids (a < b) and the block pair it is verified in."""

    rank: int
    a: str
    b: str
    block: BlockKey


def plan_class(
    landmark_id: int, members: Iterable[str | Member], config: PairConfig = PairConfig()
) -> Iterator[Candidate | beam.pvalue.TaggedOutput]:
    """Main output: every candidate pair as a `Candidate`, sorted by (a, b); tag `needs`: (image
    id, block key) once per block pair that needs that image's features. `members` are ids, or
    (id, global descriptor) pairs.

    Blocks are cut from the sorted ids, or for knn from `locality_order`; a key names its
    two blocks in increasing order."""
    members = [(m, None) if isinstance(m, str) else m for m in members]
    descriptors = {image_id: vector for image_id, vector in members}
    pairs, order, ranks = _plan(landmark_id, list(descriptors), config, descriptors)
    block_of = {image_id: i // config.block_size for i, image_id in enumerate(order)}
    needs: set[tuple[str, BlockKey]] = set()
    for (a, b), rank in zip(pairs, ranks, strict=True):
        key = (landmark_id, *sorted((block_of[a], block_of[b])))
        needs.add((a, key))
        needs.add((b, key))
        tick(STAGE, "candidate_pairs")
        yield Candidate(rank, a, b, key)
    for need in sorted(needs):
        yield beam.pvalue.TaggedOutput("needs", need)


@dataclass(frozen=True)
class RoundPlan:
    """One class's candidates of one verification round, sorted by (rank, a, b), with the (light)
    FeatureRefs of their images and the results a verified-pair store already holds for them
    (made from the same image bytes): a cache, so a re-run decides exactly as a fresh one."""

    candidates: tuple[Candidate, ...]
    refs: dict[str, FeatureRef]
    cached: dict[tuple[str, str], PairResult]


@dataclass(frozen=True)
class Block:
    """The pairs of one block pair of one round, in verification order, with what verifying
    them needs: FeatureRefs of their images, the cached results of these pairs, and each image's
    (component label, component size, degree) in the class's verified graph at the round's start
    (empty under exhaustive verification)."""

    pairs: tuple[tuple[str, str], ...]
    refs: tuple[FeatureRef, ...]
    cached: dict[tuple[str, str], PairResult]
    states: dict[str, tuple[str, int, int]]


def _stored_result(
    landmark_id: int, pair: tuple[str, str], refs: dict[str, FeatureRef], stored: dict
) -> PairResult | None:
    """The stored verification of `pair` when it was made from the same image bytes."""
    row = stored.get(pair)
    a, b = pair
    if row is None or (row["sha_a"], row["sha_b"]) != (refs[a].sha256, refs[b].sha256):
        return None
    return PairResult(landmark_id, a, b, int(row["num_matches"]), int(row["inliers"]), row["reason"])


def plan_rounds(
    landmark_id: int, grouped: dict[str, Iterable], config: PairConfig = PairConfig()
) -> Iterator[beam.pvalue.TaggedOutput]:
    """One class's candidates split into `config.rounds` rounds by partner rank (`round_of`):
    tag `round<r>`: (landmark_id, RoundPlan) for each round with candidates.

    `grouped["members"]`: the class's FeatureRefs (a class whose partners are ranked by global
    descriptor has its offline descriptors read from the features store here, 8 KiB an image,
    never shuffled); optional `grouped["stored"]`: rows of the verified-pair store for this class."""
    refs: dict[str, FeatureRef] = {}
    for ref in sorted(grouped["members"], key=lambda r: (r.id, r.path, r.index)):
        refs.setdefault(ref.id, ref)
    stored = {(row["id_a"], row["id_b"]): row for row in grouped.get("stored", ())}
    vectors = {image_id: ref.global_descriptor for image_id, ref in refs.items() if ref.global_descriptor.size}
    if config.needs_descriptors(len(refs)) and len(vectors) < len(refs):
        vectors |= read_global_descriptors(ref for image_id, ref in refs.items() if image_id not in vectors)
    members = [(image_id, vectors.get(image_id)) for image_id in refs]
    by_round: dict[int, list[Candidate]] = defaultdict(list)
    for item in plan_class(landmark_id, members, config):
        if not isinstance(item, beam.pvalue.TaggedOutput):
            by_round[round_of(item.rank, config.rounds)].append(item)
    for number, candidates in sorted(by_round.items()):
        candidates.sort(key=lambda c: (c.rank, c.a, c.b))
        needed = sorted({image_id for c in candidates for image_id in (c.a, c.b)})
        cached = {}
        for c in candidates:
            result = _stored_result(landmark_id, (c.a, c.b), refs, stored)
            if result is not None:
                cached[c.a, c.b] = result
        plan = RoundPlan(tuple(candidates), {i: light(refs[i]) for i in needed}, cached)
        yield beam.pvalue.TaggedOutput(f"round{number}", (landmark_id, plan))


def round_blocks(
    landmark_id: int, plan: RoundPlan, earlier: Iterable[PairResult], rule: SkipRule | None
) -> Iterator[tuple[BlockKey, Block] | beam.pvalue.TaggedOutput]:
    """One round of one class: main output (block key, Block) per block pair with candidates
    left; tag `skipped`: a PairResult (`already_joined`) for each candidate that `rule` skips on
    the graph of the `earlier` rounds' results. `rule` None: exhaustive, nothing is skipped."""
    graph = graph_of(earlier, rule) if rule is not None else None
    by_block: dict[BlockKey, list[Candidate]] = defaultdict(list)
    for c in plan.candidates:
        if graph is not None and graph.can_skip(c.a, c.b):
            tick(Stage.VERIFY.value, SKIPPED)
            yield beam.pvalue.TaggedOutput("skipped", PairResult(landmark_id, c.a, c.b, 0, 0, SKIPPED))
        else:
            by_block[c.block].append(c)
    for key in sorted(by_block):
        pairs = tuple((c.a, c.b) for c in by_block[key])
        ids = sorted({image_id for pair in pairs for image_id in pair})
        yield (
            key,
            Block(
                pairs=pairs,
                refs=tuple(plan.refs[i] for i in ids),
                cached={pair: plan.cached[pair] for pair in pairs if pair in plan.cached},
                states={i: graph.state(i) for i in ids} if graph is not None else {},
            ),
        )


class GeneratePairs(beam.PTransform):
    """{"features": FeatureRef, "images": ImageRef (only with an embedding model), "stored":
    verified-pair store rows (optional)} -> one PCollection of (landmark_id, RoundPlan) per
    verification round (`config.rounds`), a round's classes without candidates left out.

    Only references (a few hundred bytes an image) are grouped per class; a class's offline
    global descriptors are read from the features store where it is planned."""

    def __init__(self, config: PairConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, inputs: dict[str, beam.PCollection]) -> tuple[beam.PCollection, ...]:
        members = inputs["features"]
        if self._config.embedding_model:
            describe = DescribeImages(self._config.embedding_model, self._config.embedding_signature)
            members = inputs | "Describe" >> describe
        grouped = {
            "members": members | "ClassOfImage" >> beam.Map(lambda r: (r.landmark_id, r)) | meter("MeterMembers")
        }
        if "stored" in inputs:
            grouped["stored"] = (
                inputs["stored"] | "ClassOfStored" >> beam.Map(lambda r: (r["landmark_id"], r)) | meter("MeterStored")
            )
        tags = [f"round{number}" for number in range(self._config.rounds)]
        planned = (
            grouped
            | "GroupByClass" >> beam.CoGroupByKey()
            | "Plan" >> beam.FlatMapTuple(plan_rounds, config=self._config).with_outputs(*tags)
        )
        return tuple(planned[tag] for tag in tags)
