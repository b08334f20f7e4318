"""Tests of stage 1 (transforms/ingest/manifest.py): reading a GLDv2 train.csv into rows and failures."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import Failure, ManifestRow
from schemas.vocabulary import Reason, Stage
from transforms.ingest.manifest import (
    ManifestConfig,
    ReadManifest,
    iter_lines,
    parse_line,
    read_header,
    resolve_duplicates,
)

COLUMNS = ("id", "url", "landmark_id")
RUNNER_ARGS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]


def _write(tmp_path: Path, data: bytes, name: str = "train.csv") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(options=PipelineOptions(RUNNER_ARGS))


# ---------------------------------------------------------------------------------------------
# pure functions


def test_manifest_config_requires_a_path() -> None:
    with pytest.raises(ValueError):
        ManifestConfig(path="")


def test_read_header(tmp_path: Path) -> None:
    path = _write(tmp_path, b"id,url,landmark_id\nabc,http://x.test/a.jpg,1\n")
    assert read_header(path) == COLUMNS


def test_read_header_strips_bom_crlf_and_case(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\xef\xbb\xbfID, URL ,Landmark_Id\r\nabc,,1\r\n")
    assert read_header(path) == COLUMNS


def test_read_header_accepts_a_manifest_without_urls(tmp_path: Path) -> None:
    assert read_header(_write(tmp_path, b"id,landmark_id\nabc,1\n")) == ("id", "landmark_id")


@pytest.mark.parametrize(
    ("header", "missing"),
    [(b"id,url\n", "landmark_id"), (b"url,landmark\n", "id, landmark_id"), (b"", "id, landmark_id")],
)
def test_read_header_rejects_missing_required_columns(tmp_path: Path, header: bytes, missing: str) -> None:
    path = _write(tmp_path, header + b"abc,http://x.test/a.jpg\n")
    with pytest.raises(ValueError, match=f"lacks column\\(s\\) {missing}$"):
        read_header(path)


def test_iter_lines_skips_header_and_blank_lines_and_keeps_file_line_numbers(tmp_path: Path) -> None:
    data = b"id,url,landmark_id\r\na,u,1\r\n\r\n   \nb,u,2\n\nc,u,3"
    assert list(iter_lines(_write(tmp_path, data))) == [(2, b"a,u,1"), (5, b"b,u,2"), (7, b"c,u,3")]


def test_iter_lines_of_header_only_file(tmp_path: Path) -> None:
    assert list(iter_lines(_write(tmp_path, b"id,url,landmark_id\n"))) == []


def test_parse_line_good_row() -> None:
    row = parse_line(3, b"abc,http://x.test/a.jpg,12", COLUMNS)
    assert row == ManifestRow(line=3, id="abc", url="http://x.test/a.jpg", landmark_id=12)


def test_parse_line_utf8_id() -> None:
    row = parse_line(3, "caf\u00e9,,1".encode(), COLUMNS)
    assert isinstance(row, ManifestRow)
    assert row.id == "caf\u00e9"


@pytest.mark.parametrize("raw", [b"ab\xff\xfe,http://x.test/a.jpg,1", b"abc,http://x.test/\xc3(,1", b"\x80"])
def test_parse_line_non_utf8_is_malformed_row(raw: bytes) -> None:
    failure = parse_line(4, raw, COLUMNS)
    assert isinstance(failure, Failure)
    assert (failure.stage, failure.reason, failure.id, failure.landmark_id) == (
        Stage.MANIFEST,
        Reason.MALFORMED_ROW,
        "line:4",
        None,
    )
    assert "UTF-8" in failure.detail


@pytest.mark.parametrize(
    ("raw", "reason", "image_id"),
    [
        (b"abc,http://x.test/a.jpg", Reason.MISSING_COLUMN, "line:5"),
        (b"abc,http://x.test/a.jpg,1,2", Reason.MALFORMED_ROW, "line:5"),
        (b",http://x.test/a.jpg,1", Reason.EMPTY_ID, "line:5"),
        (b"../etc,http://x.test/a.jpg,1", Reason.BAD_ID, "line:5"),
        (b"abc,http://x.test/a.jpg,-3", Reason.BAD_LANDMARK_ID, "abc"),
    ],
)
def test_parse_line_failures(raw: bytes, reason: Reason, image_id: str) -> None:
    failure = parse_line(5, raw, COLUMNS)
    assert isinstance(failure, Failure)
    assert (failure.stage, failure.reason, failure.id) == (Stage.MANIFEST, reason, image_id)


def test_resolve_duplicates_single_row_passes() -> None:
    row = ManifestRow(4, "abc", "u", 1)
    assert list(resolve_duplicates("abc", [row])) == [row]


def test_resolve_duplicates_first_line_wins_whatever_the_order() -> None:
    rows = [ManifestRow(9, "abc", "u9", 3), ManifestRow(2, "abc", "u2", 1), ManifestRow(5, "abc", "u5", 2)]
    out = list(resolve_duplicates("abc", iter(rows)))
    assert out[0] == ManifestRow(2, "abc", "u2", 1)
    assert out[1:] == [
        Failure(5, "line:5", 2, Stage.MANIFEST, Reason.DUPLICATE_ID, "id abc already on line 2", "u5"),
        Failure(9, "line:9", 3, Stage.MANIFEST, Reason.DUPLICATE_ID, "id abc already on line 2", "u9"),
    ]


# ---------------------------------------------------------------------------------------------
# the ReadManifest PTransform

A = "0123456789abcdef"
B = "fedcba9876543210"

MANIFEST = b"".join(
    [
        b"id,url,landmark_id\r\n",  # 1
        A.encode() + b",http://x.test/a.jpg,1\r\n",  # 2 good
        B.encode() + b",http://x.test/b.jpg,10\n",  # 3 good (LF only)
        b"\n",  # 4 blank: skipped, no outcome
        A.encode() + b",http://x.test/a-again.jpg,7\n",  # 5 duplicate of line 2
        b'quoted,"http://x.test/a,b.jpg",2\n',  # 6 good, URL with a comma
        b"too,few\n",  # 7 missing_column
        b"one,two,3,four\n",  # 8 malformed_row
        b"bad-label,http://x.test/c.jpg,x1\n",  # 9 bad_landmark_id
        b",http://x.test/d.jpg,4\n",  # 10 empty_id
        b"\xff\xfe,http://x.test/e.jpg,5\n",  # 11 not UTF-8
        b"a/b,http://x.test/f.jpg,6\n",  # 12 bad_id
        A.encode() + b",http://x.test/a-third.jpg,8\n",  # 13 duplicate of line 2
        b"   \r\n",  # 14 blank
        b"last,,0",  # 15 good, no trailing newline, empty url
    ]
)

EXPECTED_ROWS = [
    ManifestRow(2, A, "http://x.test/a.jpg", 1),
    ManifestRow(3, B, "http://x.test/b.jpg", 10),
    ManifestRow(6, "quoted", "http://x.test/a,b.jpg", 2),
    ManifestRow(15, "last", "", 0),
]

EXPECTED_FAILURES = [
    (5, "line:5", 7, "duplicate_id", "http://x.test/a-again.jpg"),
    (7, "line:7", None, "missing_column", ""),
    (8, "line:8", None, "malformed_row", ""),
    (9, "bad-label", None, "bad_landmark_id", "http://x.test/c.jpg"),
    (10, "line:10", None, "empty_id", "http://x.test/d.jpg"),
    (11, "line:11", None, "malformed_row", ""),
    (12, "line:12", None, "bad_id", "http://x.test/f.jpg"),
    (13, "line:13", 8, "duplicate_id", "http://x.test/a-third.jpg"),
]


def _failure_key(failure: Failure) -> tuple[int, str, int | None, str, str]:
    assert failure.stage is Stage.MANIFEST
    return failure.line, failure.id, failure.landmark_id, failure.reason.value, failure.url


def test_read_manifest_pipeline(tmp_path: Path) -> None:
    path = _write(tmp_path, MANIFEST)
    pipeline = _pipeline()
    rows, failures = pipeline | ReadManifest(ManifestConfig(path, read_header(path)))
    assert_that(rows, equal_to(EXPECTED_ROWS), label="Rows")
    assert_that(failures | "Key" >> beam.Map(_failure_key), equal_to(EXPECTED_FAILURES), label="Failures")
    result = pipeline.run()
    result.wait_until_finish()

    # every non-blank data line is counted once and ends in exactly one place
    counters = result.metrics().query(MetricsFilter().with_namespace("manifest").with_name("input_rows"))["counters"]
    assert sum(c.committed for c in counters) == 12 == len(EXPECTED_ROWS) + len(EXPECTED_FAILURES)


def test_read_manifest_fails_fast_on_a_bad_header(tmp_path: Path) -> None:
    path = _write(tmp_path, b"image,url,label\nabc,u,1\n")
    pipeline = _pipeline()
    with pytest.raises(ValueError, match="lacks column"):
        _ = pipeline | ReadManifest(ManifestConfig(path, read_header(path)))
