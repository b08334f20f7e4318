"""Stage 5: candidate pairs inside each landmark class, planned as bounded work blocks.

Pairs: every pair while a class has at most `max_class_for_all` images, otherwise `k`
seeded random partners per image, so a class costs O(n*k) pairs, never O(n^2).

Blocks: a class's sorted ids are cut into blocks of `block_size`; each candidate pair belongs
to the block pair (block of a, block of b). Verification groups one block pair at a time, so a
worker holds at most 2 * block_size feature sets however large the class, and each image's
features are shuffled once per block pair that needs them: at most the number of blocks of its
class, and about 2k on average in random mode (its own k partners plus those that chose it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from schemas.records import LocalFeatures
from transforms.progress import tick

STAGE = "pairs"
MODES = ("all", "random")

BlockKey = tuple[int, int, int]  # (landmark_id, block of id_a, block of id_b)


@dataclass(frozen=True)
class PairConfig:
    mode: str = "all"
    max_class_for_all: int = 40
    k: int = 10
    seed: int = 0
    block_size: int = 32

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"pairs mode must be one of {MODES}")
        if self.max_class_for_all < 2 or self.k < 1 or self.block_size < 1:
            raise ValueError("need max_class_for_all >= 2, k >= 1 and block_size >= 1")


def _class_rng(seed: int, landmark_id: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{landmark_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def candidate_pairs(landmark_id: int, ids: list[str], config: PairConfig) -> list[tuple[str, str]]:
    """Sorted, de-duplicated pairs (a, b) with a < b among `ids` (a class's image ids).

    Deterministic for a given (ids, config): the order of `ids` does not matter.
    """
    ids = sorted(set(ids))
    n = len(ids)
    if n < 2:
        return []
    if config.mode == "all" and n <= config.max_class_for_all:
        return [(ids[i], ids[j]) for i in range(n) for j in range(i + 1, n)]
    k = min(config.k, n - 1)
    rng = _class_rng(config.seed, landmark_id)
    chosen: set[tuple[int, int]] = set()
    for i in range(n):
        # draw from the n-1 others: offsets 1..n-1 avoid pairing an image with itself
        offsets = rng.choice(np.arange(1, n), size=k, replace=False)
        for j in (i + offsets) % n:
            chosen.add((min(i, int(j)), max(i, int(j))))
    return [(ids[i], ids[j]) for i, j in sorted(chosen)]


def plan_class(
    landmark_id: int, ids: Iterable[str], config: PairConfig = PairConfig()
) -> Iterator[tuple[BlockKey, tuple[str, str]] | beam.pvalue.TaggedOutput]:
    """Main output: (block key, pair); tag `needs`: (image id, block key) once per block pair
    that needs that image's features."""
    ids = sorted(set(ids))
    block_of = {image_id: i // config.block_size for i, image_id in enumerate(ids)}
    needs: set[tuple[str, BlockKey]] = set()
    for a, b in candidate_pairs(landmark_id, ids, config):
        key = (landmark_id, block_of[a], block_of[b])
        needs.add((a, key))
        needs.add((b, key))
        tick(STAGE, "candidate_pairs")
        yield key, (a, b)
    for need in sorted(needs):
        yield beam.pvalue.TaggedOutput("needs", need)


class GeneratePairs(beam.PTransform):
    """LocalFeatures PCollection -> (pairs: (BlockKey, (id_a, id_b)), needs: (id, BlockKey))."""

    def __init__(self, config: PairConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, features: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        planned = (
            features
            | "ClassOfImage" >> beam.Map(lambda f: (f.landmark_id, f.id))
            | "GroupByClass" >> beam.GroupByKey()
            | "Plan" >> beam.FlatMapTuple(plan_class, config=self._config).with_outputs("needs", main="pairs")
        )
        return planned.pairs, planned.needs


def members_by_class(features: LocalFeatures) -> tuple[int, tuple[str, int]]:
    """(landmark_id, (id, line)): what selection needs to know of every verifiable image."""
    return features.landmark_id, (features.id, features.line)
