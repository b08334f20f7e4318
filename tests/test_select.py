"""Tests of stage 7, selection of the clean images of a class (transforms.selection.select)."""

from __future__ import annotations

import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import ImageDecision, PairResult
from schemas.vocabulary import Status
from transforms.selection.select import POLICIES, SelectClean, SelectConfig, select_class

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


# Isolated-component layout: a 4-image component {a, b, c, d} (the class's evidence); x - y, two
# near-identical frames of something else (400 of 450 matches inliers), whose best pair with the
# rest of the class has 9 inliers; s - t, a genuine pair that a weaker pair (20 inliers) links to
# the rest; u - v - w, a 3-image component with only chance links.
ISOLATED_MEMBERS = [(image_id, line) for line, image_id in enumerate("abcdstuvwxy", start=1)]
ISOLATED_PAIRS = [
    PairResult(LID, a, b, matches, inliers)
    for a, b, matches, inliers in (
        *((p, q, 200, 80) for p, q in ("ab", "bc", "cd")),
        ("x", "y", 450, 400),
        ("a", "x", 60, 9),
        ("b", "y", 40, 6),
        ("s", "t", 300, 120),
        ("c", "s", 90, 20),
        ("u", "v", 100, 50),
        ("v", "w", 100, 45),
        ("d", "w", 50, 5),
    )
]
ISOLATED = SelectConfig(drop_isolated_components=True)


def test_isolated_rule_drops_a_small_component_nothing_else_verifies_with() -> None:
    decisions = _by_id(select_class(LID, ISOLATED_MEMBERS, ISOLATED_PAIRS, ISOLATED))
    kept = {i for i, d in decisions.items() if d.status == Status.KEPT}
    assert kept == set("abcdstuvw")  # s - t is linked (20 >= 15), u - v - w is larger than 2
    for image_id in "xy":
        decision = decisions[image_id]
        assert (decision.status, decision.reason) == (Status.REMOVED, "isolated_component")
        assert (decision.component_size, decision.degree, decision.max_inliers) == (2, 1, 400)
        assert decision.detail == (
            "2-image component beside the class's largest (4 images), verified only within itself "
            "(best pair 400 of 450 matches inliers); its best pair with the rest of the class has 9 inliers "
            "(with a), under 15"
        )
    # the same graph without the rule keeps everything that verifies
    assert {
        d.id for d in select_class(LID, ISOLATED_MEMBERS, ISOLATED_PAIRS, SelectConfig()) if d.status == "kept"
    } == (set("abcdstuvwxy"))


def test_isolated_rule_thresholds() -> None:
    # u - v - w (3 images, best link 5) goes once the rule may remove 3-image components
    wider = _by_id(
        select_class(
            LID, ISOLATED_MEMBERS, ISOLATED_PAIRS, SelectConfig(drop_isolated_components=True, isolated_max_size=3)
        )
    )
    assert {i for i, d in wider.items() if d.reason == "isolated_component"} == set("uvwxy")
    assert wider["u"].detail.startswith("3-image component beside the class's largest (4 images)")
    # s - t's link of 20 no longer saves it when a link must reach 21
    strict = _by_id(
        select_class(
            LID, ISOLATED_MEMBERS, ISOLATED_PAIRS, SelectConfig(drop_isolated_components=True, isolation_inliers=21)
        )
    )
    assert {i for i, d in strict.items() if d.reason == "isolated_component"} == set("stxy")
    assert strict["s"].detail.endswith("has 20 inliers (with c), under 21")


def test_isolated_rule_spares_the_largest_component_and_ties() -> None:
    # a class whose only verified component is a pair: that pair is the class's evidence
    alone = select_class(LID, [("x", 1), ("y", 2), ("z", 3)], [PairResult(LID, "x", "y", 450, 400)], ISOLATED)
    assert [d.status for d in alone] == [Status.KEPT, Status.KEPT, Status.REMOVED]
    # two components of 2: neither is smaller than the largest, so neither is judged
    members = [(i, n) for n, i in enumerate("pqrs")]
    tie = select_class(LID, members, [PairResult(LID, "p", "q", 99, 90), PairResult(LID, "r", "s", 99, 90)], ISOLATED)
    assert all(d.status == Status.KEPT for d in tie)


def test_isolated_rule_without_any_pair_to_the_rest_and_class_size() -> None:
    members = [(i, n) for n, i in enumerate("abcxy")]
    pairs = [PairResult(LID, "a", "b", 90, 60), PairResult(LID, "b", "c", 90, 60), PairResult(LID, "x", "y", 80, 70)]
    decisions = _by_id(select_class(LID, members, pairs, ISOLATED))
    assert decisions["x"].detail.endswith(
        "(best pair 70 of 80 matches inliers); it has no candidate pair with the rest of the class"
    )
    # the rule's removals count like any other for the class-size rule
    small = _by_id(select_class(LID, members, pairs, SelectConfig(drop_isolated_components=True, min_class_size=4)))
    assert {small[i].reason for i in "abc"} == {"class_too_small"} and small["x"].reason == "isolated_component"


def test_isolated_rule_order_independent_and_components_policy_only() -> None:
    expected = select_class(LID, ISOLATED_MEMBERS, ISOLATED_PAIRS, ISOLATED)
    rng = random.Random(11)
    for _ in range(5):
        members, pairs = ISOLATED_MEMBERS[:], ISOLATED_PAIRS[:]
        rng.shuffle(members)
        rng.shuffle(pairs)
        assert select_class(LID, members, iter(pairs), ISOLATED) == expected
    degree = SelectConfig(policy="degree", min_degree=1, drop_isolated_components=True)
    assert not any(
        d.reason == "isolated_component" for d in select_class(LID, ISOLATED_MEMBERS, ISOLATED_PAIRS, degree)
    )
    # keep-largest-only removes the smaller components first, under its own reason
    largest = _by_id(
        select_class(
            LID,
            ISOLATED_MEMBERS,
            ISOLATED_PAIRS,
            SelectConfig(drop_isolated_components=True, largest_component_only=True),
        )
    )
    assert largest["x"].reason == "not_largest_component"


@pytest.mark.parametrize("kwargs", [{"isolated_max_size": 1}, {"isolation_inliers": 0}])
def test_select_config_rejects_bad_isolated_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SelectConfig(drop_isolated_components=True, **kwargs)
