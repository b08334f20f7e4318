"""Stage 5: candidate pairs inside each landmark class, planned as bounded work blocks.

Pairs (`mode`): `all` pairs while a class has at most `max_class_for_all` images, above that
`knn`; `knn` pairs each image with its `k` nearest same-class neighbours by a global
descriptor (`transforms.global_descriptor`; symmetric pairs counted once); `random` with `k`
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
from transforms.feature_store import light, read_global_descriptors
from transforms.global_descriptor import DescribeImages, nearest_neighbours
from transforms.metering import meter
from transforms.progress import tick

STAGE = "pairs"
MODES = ("all", "knn", "random")

BlockKey = tuple[int, int, int]  # (landmark_id, lower block, higher block) of a pair's images


@dataclass(frozen=True)
class PairConfig:
    """`embedding_model`: SavedModel (any Beam path) whose `embedding_signature` gives the
    global descriptor of `knn`; empty: aggregate the image's own local descriptors (offline)."""

    mode: str = "all"
    max_class_for_all: int = 40
    k: int = 10
    seed: int = 0
    block_size: int = 32
    embedding_model: str = ""
    embedding_signature: str = "serving_default"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"pairs mode must be one of {MODES}")
        if self.max_class_for_all < 2 or self.k < 1 or self.block_size < 1:
            raise ValueError("need max_class_for_all >= 2, k >= 1 and block_size >= 1")
        if not self.embedding_signature:
            raise ValueError("embedding_signature must not be empty")

    def needs_descriptors(self, class_size: int) -> bool:
        """Whether a class of this size is planned by kNN (`all` falls back to it above the cap)."""
        return self.mode == "knn" or (self.mode == "all" and class_size > self.max_class_for_all)


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
) -> tuple[list[tuple[str, str]], list[str]]:
    """(sorted pairs, ids in block order) of a class; see `candidate_pairs`."""
    ids = sorted(set(ids))
    n = len(ids)
    if n < 2:
        return [], ids
    if config.mode == "all" and n <= config.max_class_for_all:
        return [(ids[i], ids[j]) for i in range(n) for j in range(i + 1, n)], ids
    if config.mode == "random":
        partners = _random_partners(landmark_id, n, config)
        order = list(range(n))
    else:
        if descriptors is None or any(descriptors.get(image_id) is None for image_id in ids):
            raise ValueError(f"pairs mode {config.mode!r} needs a global descriptor for every image")
        partners = nearest_neighbours(np.stack([descriptors[image_id] for image_id in ids]), config.k)
        # neighbours of similar images overlap: blocks cut from this order keep most pairs
        # inside few block pairs, so each image's features are shuffled fewer times
        order = locality_order(partners)
    chosen = {(min(i, int(j)), max(i, int(j))) for i in range(n) for j in partners[i]}
    return [(ids[i], ids[j]) for i, j in sorted(chosen)], [ids[i] for i in order]


def candidate_pairs(
    landmark_id: int,
    ids: list[str],
    config: PairConfig,
    descriptors: dict[str, np.ndarray | None] | None = None,
) -> list[tuple[str, str]]:
    """Sorted, de-duplicated pairs (a, b) with a < b among `ids` (a class's image ids).

    `descriptors` maps every id to its global descriptor [D]; `knn` needs them (also `all`
    above the cap) and raises ValueError without them. Deterministic for a given
    (ids, descriptors, config): the order of `ids` does not matter.
    """
    return _plan(landmark_id, ids, config, descriptors)[0]


Member = tuple[str, np.ndarray | None]  # (image id, global descriptor or None)


def plan_class(
    landmark_id: int, members: Iterable[str | Member], config: PairConfig = PairConfig()
) -> Iterator[tuple[BlockKey, tuple[str, str]] | beam.pvalue.TaggedOutput]:
    """Main output: (block key, pair); tag `needs`: (image id, block key) once per block pair
    that needs that image's features. `members` are ids, or (id, global descriptor) pairs.

    Blocks are cut from the sorted ids, or for knn from `locality_order`; a key names its
    two blocks in increasing order."""
    members = [(m, None) if isinstance(m, str) else m for m in members]
    descriptors = {image_id: vector for image_id, vector in members}
    pairs, order = _plan(landmark_id, list(descriptors), config, descriptors)
    block_of = {image_id: i // config.block_size for i, image_id in enumerate(order)}
    needs: set[tuple[str, BlockKey]] = set()
    for a, b in pairs:
        key = (landmark_id, *sorted((block_of[a], block_of[b])))
        needs.add((a, key))
        needs.add((b, key))
        tick(STAGE, "candidate_pairs")
        yield key, (a, b)
    for need in sorted(needs):
        yield beam.pvalue.TaggedOutput("needs", need)


Block = tuple[list[tuple[str, str]], list[FeatureRef]]  # pairs to verify, refs of their images


def _stored_result(
    landmark_id: int, pair: tuple[str, str], refs: dict[str, FeatureRef], stored: dict
) -> PairResult | None:
    """The stored verification of `pair` when it was made from the same image bytes."""
    row = stored.get(pair)
    a, b = pair
    if row is None or (row["sha_a"], row["sha_b"]) != (refs[a].sha256, refs[b].sha256):
        return None
    return PairResult(landmark_id, a, b, int(row["num_matches"]), int(row["inliers"]), row["reason"])


def blocks_of_class(
    landmark_id: int, grouped: dict[str, Iterable], config: PairConfig = PairConfig()
) -> Iterator[tuple[BlockKey, Block] | beam.pvalue.TaggedOutput]:
    """One class's work: main output (block key, (pairs, refs)) per block pair with pairs left
    to verify, carrying the (light) FeatureRefs of exactly the images those pairs need; tag
    `reused`: the PairResults a verified-pair store already holds for these images' bytes.

    `grouped["members"]`: the class's FeatureRefs (a kNN class's offline global descriptors
    are read from the features store here, 8 KiB an image, never shuffled); optional
    `grouped["stored"]`: rows of the verified-pair store for this class."""
    refs: dict[str, FeatureRef] = {}
    for ref in sorted(grouped["members"], key=lambda r: (r.id, r.path, r.index)):
        refs.setdefault(ref.id, ref)
    stored = {(row["id_a"], row["id_b"]): row for row in grouped.get("stored", ())}
    vectors = {image_id: ref.global_descriptor for image_id, ref in refs.items() if ref.global_descriptor.size}
    if config.needs_descriptors(len(refs)) and len(vectors) < len(refs):
        vectors |= read_global_descriptors(ref for image_id, ref in refs.items() if image_id not in vectors)
    members = [(image_id, vectors.get(image_id)) for image_id in refs]
    todo: dict[BlockKey, list[tuple[str, str]]] = defaultdict(list)
    for item in plan_class(landmark_id, members, config):
        if isinstance(item, beam.pvalue.TaggedOutput):
            continue
        key, pair = item
        reused = _stored_result(landmark_id, pair, refs, stored)
        if reused is not None:
            tick(Stage.VERIFY.value, "reused")  # verification work saved
            yield beam.pvalue.TaggedOutput("reused", reused)
        else:
            todo[key].append(pair)
    for key in sorted(todo):
        pairs = todo[key]
        needed = sorted({image_id for pair in pairs for image_id in pair})
        yield key, (pairs, [light(refs[image_id]) for image_id in needed])


class GeneratePairs(beam.PTransform):
    """{"features": FeatureRef, "images": ImageRef (only with an embedding model), "stored":
    verified-pair store rows (optional)} -> (blocks: (BlockKey, Block), reused: PairResult).

    Only references (a few hundred bytes an image) are grouped per class; a kNN class's
    offline global descriptors are read from the features store where it is planned."""

    def __init__(self, config: PairConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, inputs: dict[str, beam.PCollection]) -> tuple[beam.PCollection, beam.PCollection]:
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
        planned = (
            grouped
            | "GroupByClass" >> beam.CoGroupByKey()
            | "Plan" >> beam.FlatMapTuple(blocks_of_class, config=self._config).with_outputs("reused", main="blocks")
        )
        return planned.blocks, planned.reused
