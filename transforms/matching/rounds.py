"""Adaptive verification: verify only the candidate pairs that can change the split.

Under the components rule a pair whose two images are already joined by verified edges cannot
change any component (a spanning-forest argument: an edge inside a component merges nothing).
Under the degree rule a pair whose two images already have `min_degree` edges each, and sit in
one component, cannot change any decision either. So candidates are verified in rounds, best
partner first (by global similarity), and between rounds each class's verified graph decides
which of the next round's pairs can still matter; inside a block the pairs run one after the
other and the same test skips pairs that earlier pairs of the block have joined. A skipped pair
is reported with the reason `already_joined`, so every candidate stays accounted for.

Exactness: every skip is decided on a subgraph of the final verified graph, and the test is
monotone in the graph (components only merge, degrees and sizes only grow), so each skipped pair
still passes it on the final graph, where adding it would change no component, no degree
decision, no isolated-component verdict. `unsafe_skips` checks that claim on finished pairs
(the tests, and `gld select` with other settings). Pairs across components are never skipped,
so the isolated-component rule and the audit see every pair they see under exhaustive
verification.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from schemas.records import PairResult
from schemas.vocabulary import PairReason, Stage
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import tick
from transforms.selection.select import SelectConfig

SKIPPED = PairReason.ALREADY_JOINED.value
STAGE = Stage.SELECT.value
#: The `select/unsafe_skips` counter of `FindUnsafeSkips`.
UNSAFE_SKIPS = "unsafe_skips"


@dataclass(frozen=True)
class SkipRule:
    """What a skip must preserve, from the selection settings of the run.

    `min_inliers`: what makes an edge; `min_degree`: 0 under the components policy, else the
    degree both images need before their pair may be skipped; `protected_size`: components of
    at most this many images are never skipped inside (the isolated-component rule reads the
    strongest pair inside them), 0 when that rule is off."""

    min_inliers: int
    min_degree: int = 0
    protected_size: int = 0

    @classmethod
    def of(cls, select: SelectConfig) -> SkipRule:
        return cls(
            min_inliers=select.min_inliers,
            min_degree=select.min_degree if select.policy == "degree" else 0,
            protected_size=select.isolated_max_size
            if select.drop_isolated_components and select.policy == "components"
            else 0,
        )

    def covers(self, other: SkipRule) -> bool:
        """True when every pair this rule skips is also skippable under `other` on any graph
        that `other` derives from the same verified pairs: a lower or equal edge threshold
        (more edges) and no stricter degree or protection."""
        return (
            other.min_inliers <= self.min_inliers
            and other.min_degree <= self.min_degree
            and other.protected_size <= self.protected_size
        )


class ClassGraph:
    """The verified graph of one class as union-find over component labels: each image's
    label, and per label its size; per image its degree. Images never seen are singletons."""

    def __init__(self, rule: SkipRule) -> None:
        self._rule = rule
        self._parent: dict[str, str] = {}
        self._size: dict[str, int] = {}
        self.degree: dict[str, int] = {}

    def seed(self, image_id: str, label: str, size: int, degree: int) -> None:
        """Start `image_id` in component `label` (any id naming the component) of `size`
        images, with `degree` edges: the class's state as an earlier round left it."""
        self._parent.setdefault(label, label)
        self._size[label] = size
        if image_id != label:
            self._parent[image_id] = label
        self.degree[image_id] = degree

    def find(self, image_id: str) -> str:
        root = image_id
        while self._parent.get(root, root) != root:
            root = self._parent[root]
        while image_id != root:  # path compression
            self._parent[image_id], image_id = root, self._parent.get(image_id, root)
        return root

    def size(self, image_id: str) -> int:
        return self._size.get(self.find(image_id), 1)

    def add(self, result: PairResult) -> None:
        """Count one verified pair: an edge when it reaches `min_inliers`."""
        if result.reason == SKIPPED or result.inliers < self._rule.min_inliers:
            return
        a, b = result.id_a, result.id_b
        self.degree[a] = self.degree.get(a, 0) + 1
        self.degree[b] = self.degree.get(b, 0) + 1
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            merged = self.size(a) + self.size(b)
            self._parent[root_a] = root_b
            self._size[root_b] = merged

    def can_skip(self, a: str, b: str) -> bool:
        """True when verifying (a, b) can change no decision: both already in one component
        (larger than `protected_size`) and, under the degree rule, both with enough edges."""
        rule = self._rule
        if self.find(a) != self.find(b) or self.size(a) <= rule.protected_size:
            return False
        return self.degree.get(a, 0) >= rule.min_degree and self.degree.get(b, 0) >= rule.min_degree

    def state(self, image_id: str) -> tuple[str, int, int]:
        """(component label, component size, degree) of an image: what `seed` takes."""
        return self.find(image_id), self.size(image_id), self.degree.get(image_id, 0)


def graph_of(results: Iterable[PairResult], rule: SkipRule) -> ClassGraph:
    graph = ClassGraph(rule)
    for result in sorted(results, key=lambda r: (r.id_a, r.id_b)):
        graph.add(result)
    return graph


def unsafe_skips(pairs: Iterable[PairResult], rule: SkipRule) -> list[PairResult]:
    """The skipped pairs of one class that `rule` would not skip on the final graph of its
    verified pairs (sorted): each of them could change a component, a degree decision or an
    isolated-component verdict, so they must be verified. Empty for a correct adaptive run
    judged by its own rule, and for any lower threshold."""
    pairs = list(pairs)
    graph = graph_of((p for p in pairs if p.reason != SKIPPED), rule)
    return sorted(
        (p for p in pairs if p.reason == SKIPPED and not graph.can_skip(p.id_a, p.id_b)),
        key=lambda p: (p.id_a, p.id_b),
    )


def round_count(max_rank: int) -> int:
    """Rounds that cover partner ranks 0..max_rank when round r takes ranks [2^r - 1, 2^(r+1) - 1):
    the best partner alone first, then twice as many each round."""
    return max(1, (max_rank + 1).bit_length())


def round_of(rank: int, rounds: int) -> int:
    """The round of a pair whose better-ranked side has it at `rank` (0 = best partner)."""
    return min(rounds - 1, (rank + 1).bit_length() - 1)


def pair_ranks(pairs: list[tuple[int, int]], partners: np.ndarray) -> list[int]:
    """For each pair (i, j) of positions, the better of j's rank among i's partners and i's
    among j's, where partners [n, m] lists each position's partners best first; a side that does
    not list the other (a one-sided kNN pair) does not count. m: the largest rank + 1."""
    rank_of = {(int(i), int(j)): r for i, row in enumerate(partners) for r, j in enumerate(row)}
    large = partners.shape[1]
    return [min(rank_of.get((i, j), large), rank_of.get((j, i), large)) for i, j in pairs]


def _unsafe_in_class(
    _landmark_id: int, pairs: Iterable[PairResult], rule: SkipRule = SkipRule(1)
) -> Iterator[PairResult]:
    for pair in unsafe_skips(pairs, rule):
        tick(STAGE, UNSAFE_SKIPS)
        yield pair


class FindUnsafeSkips(beam.PTransform):
    """PairResult PCollection (a run's `pairs.parquet`) -> the skipped pairs that `rule` would
    not skip on their class's final graph (`unsafe_skips`), counted as `select/unsafe_skips`:
    the pairs a selection stricter than the run's needs matched before it can be exact."""

    def __init__(self, rule: SkipRule) -> None:
        super().__init__()
        self._rule = rule

    def expand(self, pairs: beam.PCollection) -> beam.PCollection:
        return (
            pairs
            | "ByClass" >> beam.Map(lambda p: (p.landmark_id, p))
            | meter("MeterPairs")
            | "GroupByClass" >> beam.GroupByKey()
            | "Unsafe" >> beam.FlatMapTuple(_unsafe_in_class, rule=self._rule)
        )
