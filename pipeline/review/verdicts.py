"""The verdict store of `gld review`: `reviews.csv` in the run folder (format: `schemas.reviews`).

A verdict is one line appended; undo takes back the last verdict line. Every write replaces the
whole file atomically (a temporary file beside it, flushed to disk, then renamed over it), so a
crash leaves the old file or the new one, never half a line; the file stays small (a person's
verdicts), so rewriting it costs microseconds. Lines this store cannot read (a hand edit) are
kept as they are and counted when the file is applied.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from schemas.reviews import HEADER_LINE, Review, format_review, parse_review, read_reviews


class VerdictStore:
    """The reviews.csv at `path` (a local file; created with its header at the first verdict)."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        text = self._path.read_text(encoding="utf-8") if self._path.exists() else ""
        self._lines = text.splitlines(keepends=True)
        if self._lines and not self._lines[-1].endswith("\n"):
            self._lines[-1] += "\n"  # a hand-written last line without its newline stays one line

    @property
    def path(self) -> str:
        return str(self._path)

    def latest(self) -> dict[str, Review]:
        """The last verdict of every reviewed id."""
        with self._lock:
            return read_reviews(self._lines).latest

    def add(self, review: Review) -> None:
        """Append one verdict (it wins over the earlier ones for its id)."""
        with self._lock:
            lines = self._lines or [HEADER_LINE]
            self._write([*lines, format_review(review)])

    def undo(self) -> Review | None:
        """Take back the last verdict line; returns it, or None when there is none."""
        with self._lock:
            for number in range(len(self._lines) - 1, -1, -1):
                parsed = parse_review(self._lines[number])
                if isinstance(parsed, Review):  # the header and unreadable lines are no verdicts
                    self._write(self._lines[:number] + self._lines[number + 1 :])
                    return parsed
            return None

    def _write(self, lines: list[str]) -> None:
        descriptor, temporary = tempfile.mkstemp(prefix=".reviews-", suffix=".tmp", dir=self._path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
                handle.writelines(lines)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self._path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._lines = lines
