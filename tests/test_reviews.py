"""reviews.csv (schemas/reviews.py) and its verdicts applied after the rules (transforms/selection/apply_reviews.py)."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.curation.reselect import _first_job_counters
from pipeline.runner import run_pipeline
from schemas.records import ImageDecision
from schemas.reviews import HEADER_LINE, Review, format_review, parse_review, read_reviews
from schemas.vocabulary import Reason, ReviewIssue, Stage, Status, Verdict
from transforms.selection.apply_reviews import ApplyReviews, apply_review, changed


def _decision(image_id: str, status: Status = Status.KEPT, reason: str = "verified_component", landmark=7):
    stage = Stage.FETCH.value if status == Status.FAILED else Stage.SELECT.value
    return ImageDecision(line=1, id=image_id, landmark_id=landmark, status=status, reason=reason, stage=stage)


def test_a_review_round_trips_through_its_line_and_the_note_stays_on_one_line():
    review = Review("a1", Verdict.RELABEL, 12, 'same tower, "north" side,\nfrom the river')
    line = format_review(review)
    assert line.endswith("\n") and line.count("\n") == 1
    assert parse_review(line) == Review("a1", Verdict.RELABEL, 12, 'same tower, "north" side, from the river')
    assert format_review(Review("b2", Verdict.KEEP)) == "b2,keep,,\n"


@pytest.mark.parametrize(
    ("line", "issue"),
    [
        ("a1,keep,\n", ReviewIssue.MALFORMED_LINE),
        ("a1,keep,,note,extra\n", ReviewIssue.MALFORMED_LINE),
        (",keep,,\n", ReviewIssue.EMPTY_ID),
        ("a1,maybe,,\n", ReviewIssue.UNKNOWN_VERDICT),
        ("a1,relabel,,\n", ReviewIssue.BAD_LANDMARK_ID),
        ("a1,relabel,-3,\n", ReviewIssue.BAD_LANDMARK_ID),
        ("a1,remove,x,\n", ReviewIssue.BAD_LANDMARK_ID),
    ],
)
def test_an_unusable_line_is_an_issue_not_an_exception(line, issue):
    assert parse_review(line) == issue


def test_the_last_verdict_for_an_id_wins_and_bad_lines_are_counted():
    lines = [
        HEADER_LINE,
        "a1,keep,,first look\n",
        "b2,remove,,\n",
        "\n",
        "garbage\n",
        "a1,relabel,5,second look\n",
        "c3,keep,9,landmark ignored for a keep\n",
    ]
    log = read_reviews(lines)
    assert log.latest == {
        "b2": Review("b2", Verdict.REMOVE),
        "a1": Review("a1", Verdict.RELABEL, 5, "second look"),
        "c3": Review("c3", Verdict.KEEP, None, "landmark ignored for a keep"),
    }
    assert list(log.latest) == ["b2", "a1", "c3"]  # the order of the winning lines
    assert log.verdicts == 4
    assert log.issues == {"malformed_line": 1}


def test_each_verdict_gives_its_decision_and_keeps_the_rules_view():
    removed = _decision("a1", Status.REMOVED, Reason.NO_VERIFIED_PAIR.value)
    kept = apply_review(removed, Review("a1", Verdict.KEEP, note="it is the tower"))
    assert (kept.status, kept.reason, kept.stage, kept.landmark_id) == (Status.KEPT, "reviewed_keep", "review", 7)
    assert kept.detail == "review: keep (rule: removed/no_verified_pair in 7); note: it is the tower"
    assert changed(removed, kept)

    gone = apply_review(_decision("b2"), Review("b2", Verdict.REMOVE))
    assert (gone.status, gone.reason) == (Status.REMOVED, "reviewed_remove")
    assert gone.detail == "review: remove (rule: kept/verified_component in 7)"

    moved = apply_review(_decision("c3"), Review("c3", Verdict.RELABEL, 12))
    assert (moved.status, moved.reason, moved.landmark_id) == (Status.KEPT, "reviewed_relabel", 12)
    assert moved.detail.startswith("review: relabel to 12 (rule: kept/verified_component in 7)")
    assert changed(_decision("c3"), moved)

    confirmed = apply_review(_decision("d4"), Review("d4", Verdict.KEEP))
    assert confirmed.reason == "reviewed_keep" and not changed(_decision("d4"), confirmed)


def test_a_failed_row_is_not_reviewable():
    failed = _decision("e5", Status.FAILED, Reason.HTTP_404.value)
    assert apply_review(failed, Review("e5", Verdict.KEEP)) == ReviewIssue.NOT_REVIEWABLE


def test_apply_reviews_in_a_pipeline_counts_unknown_ids_and_bad_lines(tmp_path):
    reviews = tmp_path / "reviews.csv"
    reviews.write_text(
        HEADER_LINE
        + "a1,remove,,\n"  # superseded below
        + "a1,keep,,\n"
        + "b2,relabel,3,\n"
        + "zz,remove,,\n"  # no such row
        + "e5,keep,,\n"  # failed row
        + "b2,relabel,oops,\n"  # unreadable: b2's earlier verdict stands
    )
    decisions = [
        _decision("a1", Status.REMOVED, Reason.SMALL_COMPONENT.value),
        _decision("b2"),
        _decision("c3"),
        _decision("e5", Status.FAILED, Reason.HTTP_404.value),
    ]
    expected = [
        apply_review(decisions[0], Review("a1", Verdict.KEEP)),
        apply_review(decisions[1], Review("b2", Verdict.RELABEL, 3)),
        decisions[2],
        decisions[3],
    ]

    def build(pipeline: beam.Pipeline) -> None:
        out = pipeline | beam.Create(decisions) | ApplyReviews(str(reviews))
        assert_that(out, equal_to(expected))

    counters, _ = run_pipeline(build, ["--direct_num_workers=1"], False)
    assert counters["review"] == {
        "keep": 1,
        "relabel": 1,
        "changed": 2,
        "unknown_id": 1,
        "not_reviewable": 1,
        "bad_landmark_id": 1,
    }


def test_a_reselection_counts_its_own_reviews_only():
    """`gld select` keeps the first job's counters and makes the selection's and the reviews' again."""
    previous = {"verify": {"verified": 4}, "select": {"verified_component": 3}, "review": {"keep": 2}}
    assert _first_job_counters(previous) == {"verify": {"verified": 4}}
