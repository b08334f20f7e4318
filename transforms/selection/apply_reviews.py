"""Stage 7b: a person's verdicts (`reviews.csv` of `gld review`) applied after the selection rules.

A reviewed keep keeps the image, a remove removes it, a relabel keeps it under the verdict's
landmark; the decision's reason names the review (`reviewed_keep`, ...), its stage is `review`
and its detail keeps what the rule had decided, so the rule's view is never lost. The class
rules are not run again: a verdict is the last word on its image. A verdict for an id no input
row has (`review/unknown_id`), for a row that failed before selection (`review/not_reviewable`:
there is no image to keep), and every unreadable line of the file are counted, never fatal.
Counters: `review/<verdict>` per verdict applied, `review/changed` for those that changed the
status or the landmark the rules gave.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.records import ImageDecision
from schemas.reviews import Review, read_reviews
from schemas.vocabulary import REVIEWED_REASONS, ReviewIssue, Stage, Status, Verdict
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import tick

STAGE = Stage.REVIEW.value
CHANGED = "changed"


def apply_review(decision: ImageDecision, review: Review) -> ImageDecision | ReviewIssue:
    """The decision after `review`, or NOT_REVIEWABLE for a row that failed (no image to judge).

    The detail reads e.g. "review: relabel to 17 (rule: kept/verified_component in 12); note: ..."."""
    if Status(decision.status) == Status.FAILED:
        return ReviewIssue.NOT_REVIEWABLE
    status = Status.REMOVED if review.verdict == Verdict.REMOVE else Status.KEPT
    landmark_id = review.landmark_id if review.verdict == Verdict.RELABEL else decision.landmark_id
    verdict = f"relabel to {landmark_id}" if review.verdict == Verdict.RELABEL else review.verdict.value
    rule = f"rule: {Status(decision.status).value}/{decision.reason} in {decision.landmark_id}"
    detail = f"review: {verdict} ({rule})" + (f"; note: {review.note}" if review.note else "")
    return dataclasses.replace(
        decision,
        landmark_id=landmark_id,
        status=status,
        reason=REVIEWED_REASONS[review.verdict].value,
        stage=STAGE,
        detail=detail,
    )


def changed(before: ImageDecision, after: ImageDecision) -> bool:
    """Whether a verdict changed what the rules decided: the status or the landmark."""
    return Status(before.status) != Status(after.status) or before.landmark_id != after.landmark_id


def read_reviews_file(path: str) -> Iterator[tuple[str, Review]]:
    """(id, last verdict) of every id in the reviews.csv at `path` (any Beam path), counting each
    unreadable line as `review/<issue>`."""
    with FileSystems.open(path) as handle:
        text = handle.read().decode("utf-8", errors="replace")
    log = read_reviews(text.splitlines(keepends=True))
    for issue, count in sorted(log.issues.items()):
        Metrics.counter(STAGE, issue).inc(count)
    yield from log.latest.items()


class _Apply(beam.DoFn):
    """Decisions in, decisions out (a reviewed one replaced); the reviewed ids to `matched`."""

    def process(self, decision: ImageDecision, reviews: dict[str, Review]) -> Iterator:
        review = reviews.get(decision.id)
        if review is None:
            yield decision
            return
        yield beam.pvalue.TaggedOutput("matched", decision.id)
        after = apply_review(decision, review)
        if isinstance(after, ReviewIssue):
            tick(STAGE, after.value)
            yield decision
            return
        tick(STAGE, review.verdict.value)
        if changed(decision, after):
            tick(STAGE, CHANGED)
        yield after


def _count_unknown(_id: str, grouped: dict[str, Iterable]) -> None:
    if not list(grouped["matched"]):
        tick(STAGE, ReviewIssue.UNKNOWN_ID.value)


class ApplyReviews(beam.PTransform):
    """ImageDecision PCollection -> the same decisions with the verdicts of the reviews.csv at
    `path` applied. The verdicts (a person's work: thousands, not millions) ride as a side
    input; only the reviewed ids are joined back to find verdicts for unknown ids."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def expand(self, decisions: beam.PCollection) -> beam.PCollection:
        reviews = (
            decisions.pipeline
            | "ReviewsFile" >> beam.Create([self._path])
            | "ReadReviews" >> beam.FlatMap(read_reviews_file)
        )
        applied = decisions | "Apply" >> beam.ParDo(_Apply(), beam.pvalue.AsDict(reviews)).with_outputs(
            "matched", main="decisions"
        )
        matched = applied.matched | "MatchedIds" >> beam.Map(lambda image_id: (image_id, None))
        (
            {"reviews": reviews | meter("MeterReviews"), "matched": matched | meter("MeterMatched")}
            | "JoinReviewed" >> beam.CoGroupByKey()
            | "CountUnknownIds" >> beam.MapTuple(_count_unknown)
        )
        return applied.decisions
