"""`reviews.csv`: the verdicts `gld review` appends to a run folder and `gld select --reviews` applies.

Header `id,verdict,landmark_id,note`; one line per verdict, appended, so the file diffs cleanly
and can be shared; the last line for an id wins. `verdict` is `keep`, `remove` or `relabel`;
`landmark_id` is the new landmark of a relabel (empty otherwise, or ignored); `note` is free
text. A line is written as one physical line (a note's line breaks become spaces), so the file
is read line by line. A line that cannot be read is a counted `ReviewIssue`, never a crash.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.vocabulary import ReviewIssue, Verdict

REVIEWS_NAME = "reviews.csv"
HEADER = ("id", "verdict", "landmark_id", "note")
HEADER_LINE = ",".join(HEADER) + "\n"


@dataclass(frozen=True)
class Review:
    """One verdict on one image. `landmark_id` is the target of a relabel, None otherwise."""

    id: str
    verdict: Verdict
    landmark_id: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a review needs an id")
        if self.verdict == Verdict.RELABEL and (self.landmark_id is None or self.landmark_id < 0):
            raise ValueError("a relabel needs the landmark_id (>= 0) to move the image to")
        if self.verdict != Verdict.RELABEL and self.landmark_id is not None:
            raise ValueError(f"only a relabel takes a landmark_id, not {self.verdict.value}")


def format_review(review: Review) -> str:
    """The CSV line of `review`, ending in a newline; the note is flattened to one line."""
    note = " ".join(review.note.split())
    landmark = "" if review.landmark_id is None else str(review.landmark_id)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([review.id, review.verdict.value, landmark, note])
    return buffer.getvalue()


def parse_review(text: str) -> Review | ReviewIssue:
    """One line of reviews.csv (without or with its newline) -> the Review, or why it is unusable."""
    try:
        fields = next(csv.reader([text.rstrip("\r\n")]), [])
    except csv.Error:
        return ReviewIssue.MALFORMED_LINE
    if len(fields) != len(HEADER):
        return ReviewIssue.MALFORMED_LINE
    image_id, verdict_text, landmark_text, note = (f.strip() for f in fields)
    if not image_id:
        return ReviewIssue.EMPTY_ID
    try:
        verdict = Verdict(verdict_text.lower())
    except ValueError:
        return ReviewIssue.UNKNOWN_VERDICT
    landmark: int | None = None
    if verdict == Verdict.RELABEL:
        if not landmark_text.isdigit():  # digits only: no sign, so >= 0
            return ReviewIssue.BAD_LANDMARK_ID
        landmark = int(landmark_text)
    elif landmark_text and not landmark_text.isdigit():
        return ReviewIssue.BAD_LANDMARK_ID
    return Review(image_id, verdict, landmark, note)


@dataclass(frozen=True)
class ReviewLog:
    """What a reviews.csv says: the last verdict per id (`latest`, in the order of their lines),
    how many verdict lines were read (`verdicts`, superseded ones included) and the counted
    issues of the lines that could not be read."""

    latest: dict[str, Review] = field(default_factory=dict)
    verdicts: int = 0
    issues: Counter = field(default_factory=Counter)


def read_reviews(lines: Iterable[str]) -> ReviewLog:
    """Fold the lines of a reviews.csv (the header first, blank lines skipped) into a ReviewLog:
    the last line for an id wins."""
    latest: dict[str, Review] = {}
    issues: Counter[str] = Counter()
    verdicts = 0
    for number, line in enumerate(lines):
        if not line.strip() or (number == 0 and line.strip() == HEADER_LINE.strip()):
            continue
        parsed = parse_review(line)
        if isinstance(parsed, ReviewIssue):
            issues[parsed.value] += 1
            continue
        verdicts += 1
        latest.pop(parsed.id, None)  # re-inserted last: `latest` keeps the order of the winning lines
        latest[parsed.id] = parsed
    return ReviewLog(latest, verdicts, issues)
