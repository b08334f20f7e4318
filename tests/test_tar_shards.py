"""Tests of the tar shard source (transforms/ingest/tar_shards.py) on crafted archives."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import Failure, ImageRef, ManifestRow
from schemas.vocabulary import Reason, Stage
from transforms.ingest.tar_shards import (
    MatchCopies,
    ReadShards,
    ShardReport,
    TarItem,
    expected_md5,
    list_shards,
    match_copies,
    member_problem,
    read_shard,
    shards_or_fail,
)

RUNNER_ARGS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
IDS = ["0123456789abcdef", "abcdef0123456789", "fedcba9876543210"]


def _layout(image_id: str) -> str:
    return f"{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _write_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]], md5: str | None = "auto") -> Path:
    with tarfile.open(path, "w") as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    if md5 == "auto":
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
    if md5 is not None:
        stem = path.name[: -len(".tar")]
        (path.parent / f"md5.{stem}.txt").write_text(f"{md5}  {path.name}\n")
    return path


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _items(shard: Path, max_bytes: int = 1 << 20) -> tuple[list[TarItem], ShardReport]:
    out = list(read_shard(str(shard), max_bytes))
    report = out[-1]
    assert isinstance(report, ShardReport)
    assert all(isinstance(i, TarItem) for i in out[:-1])
    return out[:-1], report


def test_good_shard_yields_every_image_and_a_clean_report(tmp_path: Path) -> None:
    shard = _write_tar(tmp_path / "images_000.tar", [_file(_layout(i), i.encode()) for i in IDS])
    items, report = _items(shard)
    assert [(i.id, i.data, i.reason) for i in items] == [(i, i.encode(), None) for i in IDS]
    assert report == ShardReport(str(shard), "ok", images=3, rejected=0)


def test_md5_mismatch_rejects_every_entry_with_advice(tmp_path: Path) -> None:
    shard = _write_tar(tmp_path / "images_001.tar", [_file(_layout(i), b"x") for i in IDS], md5="0" * 32)
    items, report = _items(shard)
    assert {i.reason for i in items} == {Reason.MD5_MISMATCH}
    assert all(i.data is None and "re-download" in i.detail for i in items)
    assert (report.md5, report.images, report.rejected) == ("mismatch", 0, 3)


def test_missing_md5_file_is_its_own_reason(tmp_path: Path) -> None:
    shard = _write_tar(tmp_path / "images_002.tar", [_file(_layout(IDS[0]), b"x")], md5=None)
    items, report = _items(shard)
    assert [i.reason for i in items] == [Reason.MD5_MISSING]
    assert report.md5 == "missing"


def test_md5_beside_the_shard_is_accepted(tmp_path: Path) -> None:
    shard = _write_tar(tmp_path / "images_003.tar", [_file(_layout(IDS[0]), b"x")], md5=None)
    (tmp_path / "images_003.tar.md5").write_text(hashlib.md5(shard.read_bytes()).hexdigest().upper() + "\n")
    assert expected_md5(str(shard)) == hashlib.md5(shard.read_bytes()).hexdigest()
    assert _items(shard)[1].md5 == "ok"


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (_file("../" + _layout(IDS[0]), b"x"), "escapes"),
        (_file("0/1/2/../../../" + IDS[0] + ".jpg", b"x"), "escapes"),
        (_file("/" + _layout(IDS[0]), b"x"), "absolute"),
        (_link(_layout(IDS[0]), "/etc/passwd", tarfile.SYMTYPE), "link"),
        (_link(_layout(IDS[0]), "a/b/c/other.jpg", tarfile.LNKTYPE), "link"),
        (_file(f"9/9/9/{IDS[0]}.jpg", b"x"), "not at a/b/c"),
        (_file(f"{IDS[0]}.jpg", b"x"), "not at a/b/c"),
        (_file(f"extra/{_layout(IDS[0])}", b"x"), "not at a/b/c"),
    ],
)
def test_unsafe_or_misplaced_members_are_refused_under_their_claimed_id(
    tmp_path: Path, entry: tuple[tarfile.TarInfo, bytes | None], fragment: str
) -> None:
    shard = _write_tar(tmp_path / "images_004.tar", [entry])
    items, report = _items(shard)
    assert [(i.id, i.reason, i.data) for i in items] == [(IDS[0], Reason.UNSAFE_PATH, None)]
    assert fragment in items[0].detail
    assert (report.images, report.rejected) == (0, 1)


def test_device_and_fifo_members_are_refused() -> None:
    info = tarfile.TarInfo(_layout(IDS[0]))
    info.type = tarfile.FIFOTYPE
    assert member_problem(info) == (IDS[0], f"member {info.name!r} is not a regular file")


def test_directories_and_stray_files_are_skipped(tmp_path: Path) -> None:
    directory = tarfile.TarInfo("0/1/2")
    directory.type = tarfile.DIRTYPE
    shard = _write_tar(
        tmp_path / "images_005.tar", [(directory, None), _file("README", b"hello"), _file(_layout(IDS[0]), b"ok")]
    )
    items, report = _items(shard)
    assert [(i.id, i.data) for i in items] == [(IDS[0], b"ok")]
    assert report.images == 1


def test_leading_dot_slash_is_accepted(tmp_path: Path) -> None:
    shard = _write_tar(tmp_path / "images_006.tar", [_file("./" + _layout(IDS[1]), b"ok")])
    assert [(i.id, i.data) for i in _items(shard)[0]] == [(IDS[1], b"ok")]


def test_oversized_member_is_too_large_without_reading_it(tmp_path: Path) -> None:
    shard = _write_tar(tmp_path / "images_007.tar", [_file(_layout(IDS[0]), b"x" * 2000)])
    items, _ = _items(shard, max_bytes=1000)
    assert [(i.reason, i.data) for i in items] == [(Reason.TOO_LARGE, None)]


def test_truncated_shard_keeps_what_it_read_and_reports_the_error(tmp_path: Path) -> None:
    shard = _write_tar(tmp_path / "images_008.tar", [_file(_layout(i), i.encode() * 200) for i in IDS], md5=None)
    data = shard.read_bytes()
    shard.write_bytes(data[: 512 + 3584 + 512 + 100])  # first member (3200 bytes) whole, the second cut in its body
    (tmp_path / "md5.images_008.txt").write_text(hashlib.md5(shard.read_bytes()).hexdigest())
    items, report = _items(shard)
    assert [i.id for i in items if i.data is not None] == [IDS[0]]
    assert report.error


def test_list_shards_is_sorted_and_ignores_other_files(tmp_path: Path) -> None:
    for name in ("images_010.tar", "images_002.tar", "md5.images_002.txt", "other.tar"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(p).name for p in list_shards(str(tmp_path))] == ["images_002.tar", "images_010.tar"]


ROW = ManifestRow(4, IDS[0], "", 7)


def test_entries_of_unlisted_ids_are_skipped_unread(tmp_path: Path) -> None:
    shard = _write_tar(tmp_path / "images_011.tar", [_file(_layout(i), i.encode()) for i in IDS])
    items = list(read_shard(str(shard), 1 << 20, listed=lambda image_id: image_id == IDS[1]))
    assert [(i.id, i.data) for i in items[:-1]] == [(IDS[1], IDS[1].encode())]
    assert items[-1] == ShardReport(str(shard), "ok", images=1, rejected=0, unlisted=2)


def _ref(row: ManifestRow, path: str, index: int = 0) -> ImageRef:
    return ImageRef(row, path, index, 10, 10, "sha")


def test_match_copies_prefers_a_stored_copy_then_the_first_rejection() -> None:
    stored_b, stored_a = _ref(ROW, "images/part-b.parquet"), _ref(ROW, "images/part-a.parquet", 3)
    rejected = Failure(ROW.line, ROW.id, ROW.landmark_id, Stage.FETCH, Reason.UNSAFE_PATH, "s/images_001.tar: d")
    undecodable = Failure(ROW.line, ROW.id, ROW.landmark_id, Stage.DECODE, Reason.TRUNCATED, "t")
    both = {"rows": [ROW], "stored": [stored_b, stored_a], "failed": [rejected]}
    assert list(match_copies(IDS[0], both)) == [stored_a]  # what a re-run reuses: the smallest part
    assert list(match_copies(IDS[0], {"rows": [ROW], "stored": [], "failed": [undecodable, rejected]})) == [
        undecodable  # decode sorts before fetch: a deterministic choice among rejections
    ]
    [missing] = match_copies(IDS[0], {"rows": [ROW], "stored": [], "failed": []})
    assert missing.reason is Reason.MISSING_FILE and missing.line == 4
    assert list(match_copies(IDS[0], {"rows": [], "stored": [stored_a], "failed": []})) == []


def test_shards_by_reference_give_each_row_one_outcome(tmp_path: Path) -> None:
    unlisted = "2222222222222222"
    _write_tar(
        tmp_path / "images_000.tar",
        [_file(_layout(IDS[0]), b"first"), _file("../" + _layout(IDS[1]), b"x"), _file(_layout(unlisted), b"u")],
    )
    _write_tar(tmp_path / "images_001.tar", [_file(_layout("1111111111111111"), b"unlisted")], md5="f" * 32)
    rows = [ManifestRow(n + 2, image_id, "", 1) for n, image_id in enumerate([*IDS, "1111111111111111"])]
    with BeamTestPipeline(argv=RUNNER_ARGS) as pipeline:
        listed = pipeline | beam.Create(rows)
        fetched, failures, reports = listed | ReadShards(str(tmp_path), 1 << 20)
        # what the image store hands back for each fetched copy: a reference, never the bytes
        stored = fetched | "Store" >> beam.Map(lambda f: _ref(f.row, f"store/{f.data.decode()}"))
        images, failed = {"rows": listed, "stored": stored, "failed": failures} | MatchCopies()
        assert_that(images | "I" >> beam.Map(lambda i: (i.row.id, i.path)), equal_to([(IDS[0], "store/first")]), "ok")
        assert_that(
            failed | "R" >> beam.Map(lambda f: (f.id, f.reason.value)),
            equal_to(
                [
                    (IDS[1], "unsafe_path"),
                    (IDS[2], "missing_file"),
                    ("1111111111111111", "md5_mismatch"),
                ]
            ),
            "failed",
        )
        assert_that(
            reports | "S" >> beam.Map(lambda r: (Path(r.shard).name, r.md5, r.unlisted)),
            equal_to([("images_000.tar", "ok", 1), ("images_001.tar", "mismatch", 0)]),
            "reports",
        )


def test_fetch_from_an_empty_folder_fails_when_built(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no images_"), BeamTestPipeline(argv=RUNNER_ARGS) as pipeline:
        _ = pipeline | beam.Create([ROW]) | ReadShards(str(tmp_path), 1000, shards_or_fail(str(tmp_path)))


def test_an_unreadable_shard_is_reported_not_raised(tmp_path: Path) -> None:
    shard = tmp_path / "images_009.tar"
    shard.mkdir()  # a folder where a shard should be: opening it fails
    (tmp_path / "md5.images_009.txt").write_text("0" * 32)
    [report] = read_shard(str(shard), 1000)
    assert report.md5 == "error" and report.error
