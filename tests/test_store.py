"""Tests of the deterministic writers (transforms.plumbing.store)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from schemas.records import ImageDecision
from schemas.tables import DECISIONS_SCHEMA, PAIRS_SCHEMA, record_to_row
from schemas.vocabulary import Status
from transforms.plumbing.store import (
    ParquetSpec,
    WriteSortedParquet,
    WriteTrainClean,
    clean_row,
    kept_by_class,
    part_name,
    prefix_length,
    read_table,
    remove_table,
)


def _beam_options() -> PipelineOptions:
    return PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])


def _hex_id(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()[:16]


def _decision(i: int, landmark_id: int | None = None, status: Status = Status.KEPT) -> ImageDecision:
    return ImageDecision(
        line=i + 2,
        id=_hex_id(i),
        landmark_id=landmark_id if landmark_id is not None else i % 3,
        status=status,
        reason="verified_component" if status == Status.KEPT else "no_verified_pair",
        stage="select",
        degree=i % 4,
        component_id=i % 2,
        component_size=2 + i % 5,
        max_inliers=30 + i,
        best_partner=_hex_id(i + 1),
    )


def _spec(rows_per_part: int) -> ParquetSpec:
    return ParquetSpec(DECISIONS_SCHEMA, record_to_row, lambda r: (r["id"], r["line"]), rows_per_part)


DECISIONS = [_decision(i) for i in range(60)]

# rows per part giving key prefixes of 0, 1 and 2 characters for the 60 rows above
ROWS_PER_PART = {0: 1000, 1: 10, 2: 3}


def _write_sorted(path: Path, decisions: list[ImageDecision], rows_per_part: int) -> None:
    with BeamTestPipeline(options=_beam_options()) as pipeline:
        _ = pipeline | beam.Create(decisions) | WriteSortedParquet(str(path), _spec(rows_per_part))


def _tree(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {name: (path / name).read_bytes() for name in sorted(os.listdir(path))}


@pytest.mark.parametrize(
    ("rows", "per_part", "expected"),
    [
        (0, 1000, 0),
        (1000, 1000, 0),
        (1001, 1000, 1),
        (16_000, 1000, 1),
        (16_001, 1000, 2),
        (256_000, 1000, 2),
        (256_001, 1000, 3),
        (10**12, 1, 3),
        (4_100_000, 50_000, 2),
    ],
)
def test_prefix_length(rows: int, per_part: int, expected: int) -> None:
    assert prefix_length(rows, per_part) == expected


@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_write_sorted_parquet(tmp_path: Path, prefix: int) -> None:
    """Small tables are one file; larger ones a folder of parts cut by key prefix, sized from
    the row count of the data, each part sorted, their names in key order."""
    shuffled = DECISIONS[::-1]
    path = tmp_path / "decisions.parquet"
    _write_sorted(path, shuffled, ROWS_PER_PART[prefix])

    assert sorted(os.listdir(tmp_path)) == ["decisions.parquet"], "nothing else left behind"
    expected = sorted((record_to_row(d) for d in DECISIONS), key=lambda r: r["id"])
    table = read_table(str(path))
    assert table.schema.equals(DECISIONS_SCHEMA)
    assert table.to_pylist() == expected
    assert pq.read_table(path).to_pylist() == expected  # pyarrow reads the folder in name order too
    if prefix == 0:
        assert path.is_file()
        return
    prefixes = sorted({d.id[:prefix] for d in DECISIONS})
    assert sorted(os.listdir(path)) == [part_name(p) for p in prefixes]
    for name, part_prefix in zip(sorted(os.listdir(path)), prefixes, strict=True):
        ids = pq.read_table(path / name).column("id").to_pylist()
        assert ids == sorted(d.id for d in DECISIONS if d.id.startswith(part_prefix))


def test_write_sorted_parquet_is_byte_identical(tmp_path: Path) -> None:
    for rows_per_part in (1000, 10):
        first, second = tmp_path / f"a{rows_per_part}" / "out.parquet", tmp_path / f"b{rows_per_part}" / "out.parquet"
        _write_sorted(first, DECISIONS, rows_per_part)
        _write_sorted(second, DECISIONS[::-1], rows_per_part)
        assert _tree(first) == _tree(second)
    assert (tmp_path / "a1000" / "out.parquet").read_bytes()[:4] == b"PAR1"


def test_write_sorted_parquet_ties_use_the_whole_sort_key(tmp_path: Path) -> None:
    """Two rows with one id (a manifest duplicate) are ordered by line, the second key field."""
    twins = [
        ImageDecision(line=9, id="abc", landmark_id=None, status=Status.FAILED, reason="duplicate_id"),
        ImageDecision(line=3, id="abc", landmark_id=1, status=Status.KEPT, reason="verified_component"),
    ]
    path = tmp_path / "twins.parquet"
    _write_sorted(path, twins, rows_per_part=1)
    rows = read_table(str(path)).to_pylist()
    assert [(r["id"], r["line"], r["landmark_id"]) for r in rows] == [("abc", 3, 1), ("abc", 9, None)]


def test_write_sorted_parquet_ids_shorter_than_the_prefix(tmp_path: Path) -> None:
    """Non-GLDv2 ids may be shorter than the prefix; the table must still be sorted by id."""
    ids = ["a", "a-b", "a.b", "ab", "b", "b!", "ba", "line:3", "line:12"] + [f"z{i:02d}" for i in range(40)]
    decisions = [
        ImageDecision(line=i, id=image_id, landmark_id=1, status=Status.KEPT, reason="verified_component")
        for i, image_id in enumerate(ids)
    ]
    path = tmp_path / "short.parquet"
    _write_sorted(path, decisions, rows_per_part=1)  # 49 rows: two-character prefixes
    assert read_table(str(path)).column("id").to_pylist() == sorted(ids)


def test_write_sorted_parquet_ids_with_glob_characters(tmp_path: Path) -> None:
    """Part names carry id prefixes (hex-encoded): * ? [ in ids never act as patterns."""
    ids = ["*x", "?q", "[z", "[z]", "ab", "a*"]
    decisions = [
        ImageDecision(line=i, id=image_id, landmark_id=1, status=Status.KEPT, reason="verified_component")
        for i, image_id in enumerate(ids)
    ]
    path = tmp_path / "glob.parquet"
    _write_sorted(path, decisions, rows_per_part=1)
    assert read_table(str(path)).column("id").to_pylist() == sorted(ids)
    assert sorted(os.listdir(tmp_path)) == ["glob.parquet"]
    remove_table(str(path))
    assert os.listdir(tmp_path) == []


def test_write_sorted_parquet_of_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    spec = ParquetSpec(PAIRS_SCHEMA, lambda r: r, lambda r: (r["id_a"], r["id_b"]), 1)
    with BeamTestPipeline(options=_beam_options()) as pipeline:
        _ = pipeline | beam.Create([]) | WriteSortedParquet(str(path), spec)
    table = pq.read_table(path)
    assert table.num_rows == 0
    assert table.schema.equals(PAIRS_SCHEMA)
    assert sorted(os.listdir(tmp_path)) == ["pairs.parquet"]


def test_part_names_sort_like_their_prefixes() -> None:
    prefixes = ["", "a", "a-", "a.", "ab", "b", "z", "~", "é"]
    assert sorted(prefixes, key=lambda p: p.encode("utf-8")) == sorted(prefixes, key=part_name)


def test_kept_by_class_and_clean_row() -> None:
    assert list(kept_by_class(_decision(4, landmark_id=8))) == [(8, _hex_id(4))]
    assert list(kept_by_class(_decision(4, landmark_id=8, status=Status.REMOVED))) == []
    failed = ImageDecision(line=1, id="x", landmark_id=None, status=Status.FAILED, reason="http_404")
    assert list(kept_by_class(failed)) == []
    assert clean_row(8, ["c", "a", "b"]) == (8, "8,a b c")


def test_write_train_clean(tmp_path: Path) -> None:
    def decision(image_id: str, landmark_id: int | None, status: Status) -> ImageDecision:
        return ImageDecision(line=0, id=image_id, landmark_id=landmark_id, status=status, reason="r")

    decisions = [
        decision("f1", 100, Status.KEPT),
        decision("b2", 2, Status.KEPT),
        decision("a9", 10, Status.KEPT),
        decision("a1", 2, Status.KEPT),
        decision("c3", 10, Status.REMOVED),
        decision("a0", 10, Status.KEPT),
        decision("d4", 7, Status.REMOVED),  # class 7 has no kept image: no line
        decision("e5", None, Status.FAILED),
        decision("e6", 2, Status.FAILED),
    ]
    path = tmp_path / "out" / "train_clean.csv"
    with BeamTestPipeline(options=_beam_options()) as pipeline:
        _ = pipeline | beam.Create(decisions) | WriteTrainClean(str(path))
    assert path.read_bytes() == b"landmark_id,images\n2,a1 b2\n10,a0 a9\n100,f1\n"


def test_write_train_clean_without_kept_images(tmp_path: Path) -> None:
    path = tmp_path / "train_clean.csv"
    removed = [_decision(i, status=Status.REMOVED) for i in range(3)]
    with BeamTestPipeline(options=_beam_options()) as pipeline:
        _ = pipeline | beam.Create(removed) | WriteTrainClean(str(path))
    assert path.read_text() == "landmark_id,images\n"
