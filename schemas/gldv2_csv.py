"""Readers and writers for the GLDv2 CSV formats (`train.csv` and `train_clean.csv`)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence

from schemas.records import Failure, ManifestRow
from schemas.vocabulary import Reason, Stage

TRAIN_COLUMNS = ("id", "url", "landmark_id")
REQUIRED_COLUMNS = ("id", "landmark_id")
CLEAN_HEADER = "landmark_id,images"

_GLDV2_ID = re.compile(r"^[0-9a-f]{16}$")
_MAX_ID_LENGTH = 128


def synthetic_id(line: int) -> str:
    """Stand-in id for a row without a usable one, so that it still gets its own outcome."""
    return f"line:{line}"


def is_gldv2_id(image_id: str) -> bool:
    return bool(_GLDV2_ID.match(image_id))


def id_problem(image_id: str) -> str:
    """Why an id cannot be used as a file name ("" when it can).

    GLDv2 ids are 16 lowercase hex characters; other ids are accepted when they are safe to
    use as one path component.
    """
    if is_gldv2_id(image_id):
        return ""
    if len(image_id) > _MAX_ID_LENGTH:
        return f"id longer than {_MAX_ID_LENGTH} characters"
    if set(image_id) <= {"."}:
        return "id made of dots only"
    if any(c in image_id for c in "/\\\x00") or not image_id.isprintable():
        return "id contains a path separator or a control character"
    if image_id != image_id.strip():
        return "id has leading or trailing white space"
    return ""


def parse_header(text: str) -> tuple[str, ...]:
    """Column names of a manifest header line (lower-cased, stripped)."""
    return tuple(c.strip().lower() for c in next(csv.reader([text]), []))


def missing_columns(columns: Sequence[str]) -> list[str]:
    return [c for c in REQUIRED_COLUMNS if c not in columns]


def parse_manifest_line(line: int, text: str, columns: Sequence[str]) -> ManifestRow | Failure:
    """Parse one data line of a manifest whose header gave `columns`.

    Returns a Failure (stage manifest) for: a line that is not valid CSV or has the wrong
    number of fields (`malformed_row`), an empty id (`empty_id`), an id unsafe as a file name
    (`bad_id`), a landmark_id that is not a non-negative integer (`bad_landmark_id`).
    Duplicate ids are found later, across lines.
    """
    try:
        fields = next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        return Failure(line, synthetic_id(line), None, Stage.MANIFEST, Reason.MALFORMED_ROW, f"csv: {exc}")
    if len(fields) != len(columns):
        reason = Reason.MISSING_COLUMN if len(fields) < len(columns) else Reason.MALFORMED_ROW
        detail = f"{len(fields)} fields, header has {len(columns)}: {text[:200]!r}"
        return Failure(line, synthetic_id(line), None, Stage.MANIFEST, reason, detail)
    record = dict(zip(columns, fields, strict=True))
    image_id = record["id"].strip()
    url = record.get("url", "").strip()
    if not image_id:
        return Failure(line, synthetic_id(line), None, Stage.MANIFEST, Reason.EMPTY_ID, "", url)
    problem = id_problem(image_id)
    if problem:
        return Failure(line, synthetic_id(line), None, Stage.MANIFEST, Reason.BAD_ID, f"{problem}: {image_id!r}", url)
    raw_label = record["landmark_id"].strip()
    if not (raw_label.isascii() and raw_label.isdigit()):  # str.isdigit() alone accepts "²", which int() refuses
        return Failure(line, image_id, None, Stage.MANIFEST, Reason.BAD_LANDMARK_ID, f"landmark_id {raw_label!r}", url)
    return ManifestRow(line=line, id=image_id, url=url, landmark_id=int(raw_label))


def format_clean_row(landmark_id: int, ids: Iterable[str]) -> str:
    """One `train_clean.csv` line (no newline): ids sorted and space-separated."""
    return f"{landmark_id},{' '.join(sorted(ids))}"


def format_train_clean(classes: Mapping[int, Iterable[str]]) -> str:
    """The whole `train_clean.csv` text: classes sorted numerically, empty classes omitted."""
    lines = [CLEAN_HEADER]
    for landmark_id in sorted(classes):
        ids = list(classes[landmark_id])
        if ids:
            lines.append(format_clean_row(landmark_id, ids))
    return "\n".join(lines) + "\n"


def parse_train_clean(text: str) -> dict[int, list[str]]:
    """Parse `train_clean.csv` text into landmark_id -> ids (as listed)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != CLEAN_HEADER:
        raise ValueError(f"not a train_clean.csv: header must be {CLEAN_HEADER!r}")
    classes: dict[int, list[str]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        label, _, images = line.partition(",")
        if not label.strip().isdigit():
            raise ValueError(f"line {number}: landmark_id {label!r} is not an integer")
        classes[int(label)] = images.split()
    return classes
