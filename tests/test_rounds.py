"""Adaptive verification (`transforms.matching.rounds`, the round plan of `transforms.matching.pairs`, the block
loop of `transforms.matching.verify`) against exhaustive verification: same decisions, fewer pairs."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import FeatureRef, PairResult
from transforms.matching.pairs import Block, PairConfig, RoundPlan, plan_class, round_blocks
from transforms.matching.rounds import SKIPPED, ClassGraph, SkipRule, pair_ranks, round_count, round_of, unsafe_skips
from transforms.matching.verify import REUSED, decide_block
from transforms.selection.select import SelectConfig, select_class

LANDMARK = 7


def _ref(image_id: str) -> FeatureRef:
    empty = np.zeros(0, np.float32)
    return FeatureRef(image_id, LANDMARK, 0, "", 0, 0, f"sha-{image_id}", empty, empty, 0)


def _adaptive(
    ids: list[str],
    descriptors: dict[str, np.ndarray],
    inliers: dict[tuple[str, str], int],
    pairs: PairConfig,
    rule: SkipRule | None,
    cached: dict[tuple[str, str], PairResult] | None = None,
) -> tuple[list[PairResult], list[tuple[str, str]]]:
    """Every candidate's result as the pipeline makes them, round by round and block by block
    (each block from the round's starting graph, as parallel workers see it), and the pairs
    matched."""
    by_round = defaultdict(list)
    for c in plan_class(LANDMARK, [(i, descriptors[i]) for i in ids], pairs):
        if not hasattr(c, "tag"):
            by_round[round_of(c.rank, pairs.rounds)].append(c)
    results: list[PairResult] = []
    matched: list[tuple[str, str]] = []

    def match(a: str, b: str) -> PairResult:
        matched.append((a, b))
        return PairResult(LANDMARK, a, b, inliers[a, b] + 5, inliers[a, b])

    for number in range(pairs.rounds):
        candidates = tuple(sorted(by_round[number], key=lambda c: (c.rank, c.a, c.b)))
        plan = RoundPlan(candidates, {i: _ref(i) for i in ids}, dict(cached or {}))
        items = list(round_blocks(LANDMARK, plan, list(results), rule))
        for item in items:
            if hasattr(item, "tag"):
                assert item.tag == "skipped"
                results.append(item.value)
                continue
            _, block = item
            results += [result for result, _ in decide_block(LANDMARK, block, rule, match)]
    return results, matched


def _exhaustive(ids: list[str], inliers: dict[tuple[str, str], int]) -> list[PairResult]:
    return [PairResult(LANDMARK, a, b, inliers[a, b] + 5, inliers[a, b]) for a, b in itertools.combinations(ids, 2)]


def _decisions(ids: list[str], results: list[PairResult], select: SelectConfig) -> list[tuple]:
    """What must not change: each image's status, reason, detail and component."""
    decisions = select_class(LANDMARK, [(i, n) for n, i in enumerate(ids)], results, select)
    return [(d.id, d.status, d.reason, d.detail, d.component_id, d.component_size) for d in decisions]


@st.composite
def classes(draw):
    """A class of 2..40 images in a few true groups plus noise images, with the inliers of every
    pair: most pairs inside a group verify, pairs across groups mostly do not."""
    n = draw(st.integers(2, 40))
    groups = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    ids = [f"{i:04x}{rng.integers(1 << 20):05x}" for i in range(n)]
    ids = sorted(set(ids))
    inliers = {}
    for a, b in itertools.combinations(ids, 2):
        same = groups[ids.index(a)] == groups[ids.index(b)] and groups[ids.index(a)] < 3
        verifies = rng.random() < (0.7 if same else 0.04)
        inliers[a, b] = int(rng.integers(30, 200) if verifies else rng.integers(0, 30))
    centres = rng.standard_normal((4, 16))
    descriptors = {
        i: (centres[g] + 0.8 * rng.standard_normal(16)).astype(np.float32) for i, g in zip(ids, groups, strict=False)
    }
    return ids, descriptors, inliers


SELECTIONS = [
    SelectConfig(),
    SelectConfig(drop_isolated_components=True),
    SelectConfig(drop_isolated_components=True, isolated_max_size=3, min_inliers=40),
    SelectConfig(policy="degree", min_degree=3, min_class_size=2),
    SelectConfig(policy="degree", min_degree=1),
    SelectConfig(largest_component_only=True, min_class_size=3),
]


@settings(max_examples=60, deadline=None)
@given(classes(), st.sampled_from(SELECTIONS), st.sampled_from([4, 32]))
def test_adaptive_decides_exactly_as_exhaustive(cls, select: SelectConfig, block_size: int) -> None:
    ids, descriptors, inliers = cls
    pairs = PairConfig(block_size=block_size)
    rule = SkipRule.of(select)
    adaptive, matched = _adaptive(ids, descriptors, inliers, pairs, rule)
    exhaustive = _exhaustive(ids, inliers)
    assert sorted((r.id_a, r.id_b) for r in adaptive) == sorted((r.id_a, r.id_b) for r in exhaustive)
    assert len(matched) == len(set(matched)) == sum(r.reason != SKIPPED for r in adaptive)
    assert _decisions(ids, adaptive, select) == _decisions(ids, exhaustive, select)
    # no skipped pair could have changed a component, a degree decision or an isolated verdict
    assert unsafe_skips(adaptive, rule) == []
    # a lower threshold re-selects the same pairs exactly (`gld select --min-inliers` lower)
    lower = SelectConfig(**{**select.__dict__, "min_inliers": select.min_inliers - 10})
    assert rule.covers(SkipRule.of(lower))
    assert unsafe_skips(adaptive, SkipRule.of(lower)) == []
    assert _decisions(ids, adaptive, lower) == _decisions(ids, exhaustive, lower)


def test_adaptive_skips_most_pairs_of_a_well_connected_class() -> None:
    rng = np.random.default_rng(3)
    ids = [f"{i:016x}" for i in range(30)]
    inliers = {(a, b): 100 for a, b in itertools.combinations(ids, 2)}
    descriptors = {i: rng.standard_normal(8).astype(np.float32) for i in ids}
    results, matched = _adaptive(ids, descriptors, inliers, PairConfig(), SkipRule(30))
    assert len(results) == 435
    # a spanning tree is 29 pairs: round 0 (each image's best partner) gets close to it
    assert 29 <= len(matched) <= 45
    assert sum(r.reason == SKIPPED for r in results) == 435 - len(matched)


def test_exhaustive_rule_skips_nothing() -> None:
    rng = np.random.default_rng(4)
    ids = [f"{i:016x}" for i in range(12)]
    inliers = {(a, b): 100 for a, b in itertools.combinations(ids, 2)}
    descriptors = {i: rng.standard_normal(8).astype(np.float32) for i in ids}
    results, matched = _adaptive(ids, descriptors, inliers, PairConfig(verification="exhaustive"), None)
    assert len(matched) == len(results) == 66 and not any(r.reason == SKIPPED for r in results)


def test_noise_images_keep_every_pair_verified() -> None:
    """Pairs across components are never skipped: a noise image is matched with every member."""
    rng = np.random.default_rng(5)
    ids = [f"{i:016x}" for i in range(10)]
    noise = ids[3]
    inliers = {(a, b): 5 if noise in (a, b) else 80 for a, b in itertools.combinations(ids, 2)}
    descriptors = {i: rng.standard_normal(8).astype(np.float32) for i in ids}
    _, matched = _adaptive(ids, descriptors, inliers, PairConfig(), SkipRule(30))
    assert {tuple(sorted((noise, other))) for other in ids if other != noise} <= set(matched)


def test_cached_results_decide_like_matched_ones() -> None:
    """A re-run with results in the store skips and keeps exactly what a fresh run does."""
    rng = np.random.default_rng(6)
    ids = [f"{i:016x}" for i in range(16)]
    inliers = {(a, b): int(rng.integers(0, 120)) for a, b in itertools.combinations(ids, 2)}
    descriptors = {i: rng.standard_normal(8).astype(np.float32) for i in ids}
    fresh, matched = _adaptive(ids, descriptors, inliers, PairConfig(), SkipRule(30))
    cache = {(a, b): PairResult(LANDMARK, a, b, inliers[a, b] + 5, inliers[a, b]) for a, b in matched[::2]}
    again, matched_again = _adaptive(ids, descriptors, inliers, PairConfig(), SkipRule(30), cache)
    assert sorted(again, key=lambda r: (r.id_a, r.id_b)) == sorted(fresh, key=lambda r: (r.id_a, r.id_b))
    assert sorted(matched_again) == sorted(set(matched) - set(cache))


def test_decide_block_outcomes() -> None:
    a, b, c = "a", "b", "c"
    block = Block(
        pairs=((a, b), (a, c), (b, c)),
        refs=(),
        cached={(a, c): PairResult(LANDMARK, a, c, 40, 35)},
        states={},
    )
    outcomes = [
        (r.id_a, r.id_b, o)
        for r, o in decide_block(LANDMARK, block, SkipRule(30), lambda x, y: PairResult(LANDMARK, x, y, 50, 31))
    ]
    assert outcomes == [(a, b, "verified"), (a, c, REUSED), (b, c, SKIPPED)]


def test_a_wrong_skip_is_caught() -> None:
    results = [
        PairResult(LANDMARK, "a", "b", 50, 40),
        PairResult(LANDMARK, "c", "d", 50, 40),
        PairResult(LANDMARK, "b", "c", 0, 0, SKIPPED),  # joins two components: must be verified
        PairResult(LANDMARK, "a", "c", 0, 0, SKIPPED),
    ]
    assert [(p.id_a, p.id_b) for p in unsafe_skips(results, SkipRule(30))] == [("a", "c"), ("b", "c")]


def test_a_higher_threshold_needs_the_skipped_pairs() -> None:
    results = [
        PairResult(LANDMARK, "a", "b", 50, 40),
        PairResult(LANDMARK, "b", "c", 50, 35),
        PairResult(LANDMARK, "a", "c", 0, 0, SKIPPED),
    ]
    assert unsafe_skips(results, SkipRule(30)) == []
    assert not SkipRule(30).covers(SkipRule(38))
    assert [(p.id_a, p.id_b) for p in unsafe_skips(results, SkipRule(38))] == [("a", "c")]


def test_degree_rule_skips_only_when_both_sides_have_enough_edges() -> None:
    graph = ClassGraph(SkipRule(30, min_degree=2))
    for x, y in (("a", "b"), ("b", "c"), ("a", "c")):
        assert not graph.can_skip(x, y)
        graph.add(PairResult(LANDMARK, x, y, 50, 40))
    assert graph.can_skip("a", "b")  # joined, both with 2 edges
    graph.add(PairResult(LANDMARK, "c", "d", 50, 40))
    assert not graph.can_skip("a", "d")  # joined, but d has one edge


def test_protected_components_are_never_skipped_inside() -> None:
    graph = ClassGraph(SkipRule(30, protected_size=2))
    graph.add(PairResult(LANDMARK, "a", "b", 50, 40))
    assert not graph.can_skip("a", "b")
    graph.add(PairResult(LANDMARK, "b", "c", 50, 40))
    assert graph.can_skip("a", "c")


def test_seeded_states_continue_a_graph() -> None:
    whole = ClassGraph(SkipRule(30))
    for x, y in (("a", "b"), ("c", "d"), ("b", "c")):
        whole.add(PairResult(LANDMARK, x, y, 50, 40))
    part = ClassGraph(SkipRule(30))
    for image_id in ("a", "d"):
        part.seed(image_id, *whole.state(image_id))
    assert part.can_skip("a", "d") and part.size("a") == 4


@pytest.mark.parametrize(("largest", "expected"), [(0, 1), (1, 2), (2, 2), (38, 6), (99, 7)])
def test_round_count(largest: int, expected: int) -> None:
    assert round_count(largest) == expected
    assert round_of(largest, expected) == expected - 1


def test_pair_ranks_take_the_better_side() -> None:
    partners = np.array([[1, 2], [2, 0], [1, 0]])
    assert pair_ranks([(0, 1), (0, 2), (1, 2)], partners) == [0, 1, 0]


def test_rounds_follow_the_configuration() -> None:
    assert PairConfig().rounds == 6
    assert PairConfig(verification="exhaustive").rounds == 1
    assert PairConfig(mode="knn", k=100).rounds == 7
