"""Tests of stage 7, selection of the clean images of a class (transforms.select)."""

from __future__ import annotations

import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import ImageDecision, PairResult
from schemas.vocabulary import Status
from transforms.select import POLICIES, SelectClean, SelectConfig, select_class

LID = 21

# Class layout (inlier counts, edges need >= 30 by default):
#   m - n (50), n - o (40), m - o (5, weak)     -> component of 3: {m, n, o}
#   d - e (30, exactly the threshold)           -> component of 2: {d, e}
#   p - q (31)                                  -> component of 2: {p, q}, after {d, e} (smaller id)
#   a - f (12), f - g (12), a - e (29)          -> weak pairs only; f's best partner tie -> a
#   h                                           -> no candidate pair at all
MEMBERS = [(image_id, line) for line, image_id in enumerate("adefghmnopq", start=100)]
PAIRS = [
    PairResult(LID, "m", "n", 60, 50),
    PairResult(LID, "n", "o", 55, 40),
    PairResult(LID, "m", "o", 20, 5),
    PairResult(LID, "d", "e", 45, 30),
    PairResult(LID, "p", "q", 41, 31),
    PairResult(LID, "a", "f", 30, 12),
    PairResult(LID, "f", "g", 33, 12),
    PairResult(LID, "a", "e", 40, 29),
]
LINES = dict(MEMBERS)


def _beam_options() -> PipelineOptions:
    return PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])


def _by_id(decisions: list[ImageDecision]) -> dict[str, ImageDecision]:
    return {d.id: d for d in decisions}


def test_select_class_decisions() -> None:
    decisions = select_class(LID, MEMBERS, PAIRS, SelectConfig())
    assert [d.id for d in decisions] == sorted(LINES)
    # (status, reason, component_id, component_size, degree, max_inliers, best_partner)
    expected = {
        "m": (Status.KEPT, "verified_component", 0, 3, 1, 50, "n"),
        "n": (Status.KEPT, "verified_component", 0, 3, 2, 50, "m"),
        "o": (Status.KEPT, "verified_component", 0, 3, 1, 40, "n"),
        "d": (Status.KEPT, "verified_component", 1, 2, 1, 30, "e"),
        "e": (Status.KEPT, "verified_component", 1, 2, 1, 30, "d"),
        "p": (Status.KEPT, "verified_component", 2, 2, 1, 31, "q"),
        "q": (Status.KEPT, "verified_component", 2, 2, 1, 31, "p"),
        "a": (Status.REMOVED, "no_verified_pair", 3, 1, 0, 29, "e"),
        "f": (Status.REMOVED, "no_verified_pair", 4, 1, 0, 12, "a"),
        "g": (Status.REMOVED, "no_verified_pair", 5, 1, 0, 12, "f"),
        "h": (Status.REMOVED, "no_verified_pair", 6, 1, 0, 0, ""),
    }
    for d in decisions:
        got = (d.status, d.reason, d.component_id, d.component_size, d.degree, d.max_inliers, d.best_partner)
        assert got == expected[d.id], d.id
        assert d.line == LINES[d.id]
        assert d.landmark_id == LID
        assert d.stage == "select"
        assert d.detail == ("no candidate pair in class" if d.id == "h" else "")


def test_min_component_size_removes_small_components() -> None:
    decisions = _by_id(select_class(LID, MEMBERS, PAIRS, SelectConfig(min_component_size=3)))
    for image_id in "mno":
        assert (decisions[image_id].status, decisions[image_id].reason) == (Status.KEPT, "verified_component")
    for image_id in "depq":
        decision = decisions[image_id]
        assert (decision.status, decision.reason) == (Status.REMOVED, "small_component")
        assert decision.degree == 1 and decision.component_size == 2
    for image_id in "afgh":
        assert (decisions[image_id].status, decisions[image_id].reason) == (Status.REMOVED, "no_verified_pair")


def test_min_inliers_decides_the_edges() -> None:
    strict = _by_id(select_class(LID, MEMBERS, PAIRS, SelectConfig(min_inliers=41)))
    # only m - n (50) remains an edge
    assert {i for i, d in strict.items() if d.status == Status.KEPT} == {"m", "n"}
    assert strict["o"].reason == "no_verified_pair" and strict["o"].max_inliers == 40
    assert strict["d"].degree == 0 and strict["d"].best_partner == "e"

    loose = _by_id(select_class(LID, MEMBERS, PAIRS, SelectConfig(min_inliers=5)))
    # every pair is an edge: a - e joins {d, e} with {a, f, g}, now the largest component
    assert loose["a"].component_size == 5 and loose["a"].component_id == 0
    assert loose["m"].component_size == 3 and loose["m"].component_id == 1
    assert loose["p"].component_id == 2 and loose["h"].component_id == 3
    assert loose["o"].degree == 2
    assert loose["h"].reason == "no_verified_pair"


def test_best_partner_ties_go_to_the_smaller_id() -> None:
    members = [("x", 1), ("b", 2), ("c", 3), ("y", 4)]
    pairs = [PairResult(LID, "c", "x", 10, 40), PairResult(LID, "b", "x", 10, 40), PairResult(LID, "x", "y", 10, 40)]
    for order in (pairs, pairs[::-1]):
        decisions = _by_id(select_class(LID, members, order, SelectConfig()))
        assert decisions["x"].best_partner == "b"
        assert decisions["x"].max_inliers == 40
        assert decisions["x"].degree == 3


def test_result_independent_of_input_order() -> None:
    expected = select_class(LID, MEMBERS, PAIRS, SelectConfig())
    rng = random.Random(4)
    for _ in range(5):
        members, pairs = MEMBERS[:], PAIRS[:]
        rng.shuffle(members)
        rng.shuffle(pairs)
        assert select_class(LID, members, pairs, SelectConfig()) == expected


def test_single_member_class() -> None:
    (decision,) = select_class(5, [("lonely", 9)], [], SelectConfig())
    assert decision == ImageDecision(
        line=9,
        id="lonely",
        landmark_id=5,
        status=Status.REMOVED,
        reason="no_verified_pair",
        stage="select",
        detail="no candidate pair in class",
        degree=0,
        component_id=0,
        component_size=1,
        max_inliers=0,
        best_partner="",
    )


def test_empty_class() -> None:
    assert select_class(5, [], [], SelectConfig()) == []


@pytest.mark.parametrize("kwargs", [{"min_inliers": 0}, {"min_component_size": 1}, {"min_component_size": 0}])
def test_select_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SelectConfig(**kwargs)


def test_select_clean_transform() -> None:
    other_members = [("s1", 1), ("s2", 2), ("s3", 3)]
    other_pairs = [PairResult(22, "s1", "s2", 80, 70), PairResult(22, "s2", "s3", 10, 3)]
    config = SelectConfig(min_inliers=30, min_component_size=2)
    expected = select_class(LID, MEMBERS, PAIRS, config) + select_class(22, other_members, other_pairs, config)
    expected += select_class(23, [("t1", 7)], [], config)
    assert _by_id(expected)["s1"].status == Status.KEPT and _by_id(expected)["s3"].status == Status.REMOVED

    members = [(LID, m) for m in MEMBERS] + [(22, m) for m in other_members] + [(23, ("t1", 7))]
    with BeamTestPipeline(options=_beam_options()) as pipeline:
        decisions = {
            "members": pipeline | "Members" >> beam.Create(members),
            "pairs": pipeline | "Pairs" >> beam.Create(PAIRS + other_pairs),
        } | SelectClean(config)
        assert_that(decisions, equal_to(expected))


# Degree-policy layout: a, b, c, d form a 4-clique of verified pairs (degree 3 each), e hangs on
# a (a: 4, e: 1), f - g is a verified pair on its own (degree 1 each), h has no pair at all.
CLIQUE_MEMBERS = [(image_id, line) for line, image_id in enumerate("abcdefgh", start=1)]
CLIQUE_PAIRS = [PairResult(LID, x, y, 60, 40) for x, y in ("ab", "ac", "ad", "bc", "bd", "cd")] + [
    PairResult(LID, "a", "e", 50, 35),
    PairResult(LID, "f", "g", 70, 50),
    PairResult(LID, "e", "h", 20, 4),
]


def _outcomes(decisions: list[ImageDecision]) -> dict[str, tuple[Status, str]]:
    return {d.id: (d.status, d.reason) for d in decisions}


def test_degree_policy_keeps_images_with_enough_verified_pairs() -> None:
    decisions = select_class(LID, CLIQUE_MEMBERS, CLIQUE_PAIRS, SelectConfig(policy="degree"))
    kept = (Status.KEPT, "verified_degree")
    low = (Status.REMOVED, "low_degree")
    assert _outcomes(decisions) == {
        "a": kept,
        "b": kept,
        "c": kept,
        "d": kept,
        "e": low,
        "f": low,
        "g": low,
        "h": (Status.REMOVED, "no_verified_pair"),
    }
    by_id = _by_id(decisions)
    assert (by_id["a"].degree, by_id["e"].degree, by_id["h"].degree) == (4, 1, 0)
    assert by_id["e"].detail == "1 verified pairs, the rule needs 3"
    assert by_id["h"].max_inliers == 4 and by_id["h"].best_partner == "e"


def test_degree_policy_drops_a_class_with_one_survivor() -> None:
    decisions = _by_id(select_class(LID, CLIQUE_MEMBERS, CLIQUE_PAIRS, SelectConfig(policy="degree", min_degree=4)))
    assert (decisions["a"].status, decisions["a"].reason) == (Status.REMOVED, "class_too_small")
    assert decisions["a"].detail == "1 image(s) of the class passed the rule, a class needs 2"
    assert {decisions[i].reason for i in "bcdefg"} == {"low_degree"}
    relaxed = _by_id(
        select_class(LID, CLIQUE_MEMBERS, CLIQUE_PAIRS, SelectConfig(policy="degree", min_degree=4, min_class_size=1))
    )
    assert relaxed["a"].status == Status.KEPT


def test_components_policy_can_keep_only_the_largest_component() -> None:
    every = _outcomes(select_class(LID, CLIQUE_MEMBERS, CLIQUE_PAIRS, SelectConfig()))
    assert {i for i, (status, _) in every.items() if status == Status.KEPT} == set("abcdefg")
    largest = _by_id(select_class(LID, CLIQUE_MEMBERS, CLIQUE_PAIRS, SelectConfig(largest_component_only=True)))
    assert {i for i, d in largest.items() if d.status == Status.KEPT} == set("abcde")
    for image_id in "fg":
        assert (largest[image_id].reason, largest[image_id].component_id) == ("not_largest_component", 1)
    assert largest["h"].reason == "no_verified_pair"


def test_degree_policy_keeps_a_subset_of_components() -> None:
    rng = random.Random(7)
    ids = [f"i{n:02d}" for n in range(30)]
    members = [(image_id, line) for line, image_id in enumerate(ids)]
    degree_kept = 0
    for _ in range(20):
        pairs = [
            PairResult(LID, a, b, 50, rng.choice((0, 10, 30, 45)))
            for i, a in enumerate(ids)
            for b in ids[i + 1 :]
            if rng.random() < 0.12
        ]
        kept = {
            policy: {
                d.id for d in select_class(LID, members, pairs, SelectConfig(policy=policy)) if d.status == Status.KEPT
            }
            for policy in POLICIES
        }
        assert kept["degree"] <= kept["components"]
        degree_kept += len(kept["degree"])
    assert degree_kept > 0  # the random graphs do exercise the degree rule


@pytest.mark.parametrize("kwargs", [{"policy": "kcore"}, {"min_degree": 0}, {"min_class_size": 0}])
def test_select_config_rejects_bad_policy_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SelectConfig(**kwargs)
