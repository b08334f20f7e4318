"""Fetch source (b): the official GLDv2 tar shards `images_NNN.tar` with their md5 files.

Each shard is checked against its md5 file first (one streaming pass), then read member by
member straight from the archive (a second streaming pass; nothing is extracted to disk). A
member is only trusted when it is a regular file at `a/b/c/<id>.jpg` with `a, b, c` the first
three characters of `<id>`: absolute paths, `..`, links, devices and misplaced ids are refused,
and the manifest row of such an id fails as `unsafe_path` instead of silently going missing.
Shards are joined to manifest rows by id, so any number of shards and any manifest subset work.
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.records import Failure, FetchedImage, ManifestRow
from schemas.vocabulary import Reason, Stage
from transforms.metering import meter
from transforms.routing import route

STAGE = Stage.FETCH.value
_CHUNK = 8 * 1024 * 1024
_REDOWNLOAD = "re-download the shard and its md5 file from the GLDv2 release"


@dataclass(frozen=True)
class TarItem:
    """What one shard says about one id: its bytes, or why they cannot be used."""

    id: str
    shard: str
    data: bytes | None = None
    reason: Reason | None = None
    detail: str = ""


@dataclass(frozen=True)
class ShardReport:
    """Per-shard summary for `tar_shards.json`; `md5` is ok, mismatch, missing, or error (the
    shard or its md5 file could not be read: `error` says why)."""

    shard: str
    md5: str
    images: int
    rejected: int
    error: str = ""


def list_shards(tar_dir: str) -> list[str]:
    """The `images_*.tar` files under `tar_dir` (any Beam filesystem), sorted."""
    pattern = FileSystems.join(tar_dir, "images_*.tar")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def md5_path_candidates(shard: str) -> list[str]:
    """Where a shard's md5 may live: the release's `md5.images_NNN.txt`, or `<shard>.md5`."""
    directory, name = posixpath.split(shard)
    stem = name[: -len(".tar")]
    return [FileSystems.join(directory, f"md5.{stem}.txt"), f"{shard}.md5"]


def expected_md5(shard: str) -> str | None:
    """The hex digest the md5 file states (its first token), or None when there is none."""
    for path in md5_path_candidates(shard):
        if FileSystems.exists(path):
            with FileSystems.open(path) as handle:
                tokens = handle.read(4096).decode("ascii", errors="replace").split()
            return tokens[0].lower() if tokens else ""
    return None


def file_md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with FileSystems.open(path) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def member_problem(member: tarfile.TarInfo) -> tuple[str, str] | None:
    """None when `member` is a safe GLDv2 image entry, else (id it claims or "", why not).

    The claimed id is the file name without `.jpg`, so that the manifest row of a misplaced or
    unsafe member fails with this reason instead of `missing_file`.
    """
    name = member.name[2:] if member.name.startswith("./") else member.name
    base = posixpath.basename(name)
    claimed = base[: -len(".jpg")] if base.endswith(".jpg") else ""
    if name.startswith("/"):
        return claimed, f"absolute member path {member.name!r}"
    if ".." in name.split("/"):
        return claimed, f"member path {member.name!r} escapes with '..'"
    if member.issym() or member.islnk():
        return claimed, f"member {member.name!r} is a link to {member.linkname!r}"
    if not member.isfile():
        return claimed, f"member {member.name!r} is not a regular file"
    parts = name.split("/")
    if len(parts) != 4 or not claimed or len(claimed) < 3 or parts[:3] != [claimed[0], claimed[1], claimed[2]]:
        return claimed, f"member {member.name!r} is not at a/b/c/<id>.jpg for its id"
    return None


def read_shard(shard: str, max_bytes: int) -> Iterator[TarItem | ShardReport]:
    """Every image entry of one shard as a TarItem, then one ShardReport.

    Rejections (TarItem with a reason): md5_mismatch / md5_missing (every entry of a shard that
    does not match, or has no, md5 file), unsafe_path, too_large, read_error. Directory entries
    are skipped; a shard that cannot be read to the end reports the error and keeps what it read.
    """
    try:
        expected = expected_md5(shard)
        actual = file_md5(shard) if expected is not None else ""
    except OSError as exc:  # its rows end as missing_file; the report says why
        yield ShardReport(shard=shard, md5="error", images=0, rejected=0, error=f"{type(exc).__name__}: {exc}")
        return
    if expected is None:
        md5_state, refusal = "missing", (Reason.MD5_MISSING, f"{shard}: no md5 file ({_REDOWNLOAD})")
    else:
        ok = actual == expected
        md5_state = "ok" if ok else "mismatch"
        detail = f"{shard}: md5 {actual} != {expected} from the md5 file ({_REDOWNLOAD})"
        refusal = None if ok else (Reason.MD5_MISMATCH, detail)
    images = rejected = 0
    error = ""
    try:
        with FileSystems.open(shard) as handle, tarfile.open(fileobj=handle, mode="r|") as archive:
            for member in archive:
                if member.isdir():
                    continue
                item = _member_item(shard, archive, member, refusal, max_bytes)
                if item is None:
                    continue
                if item.data is None:
                    rejected += 1
                else:
                    images += 1
                yield item
    except (tarfile.TarError, OSError, EOFError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    yield ShardReport(shard=shard, md5=md5_state, images=images, rejected=rejected, error=error)


def _member_item(
    shard: str, archive: tarfile.TarFile, member: tarfile.TarInfo, refusal: tuple[Reason, str] | None, max_bytes: int
) -> TarItem | None:
    """None for an entry that claims no id (e.g. a stray README): it can match no row."""
    problem = member_problem(member)
    if problem is not None:
        claimed, detail = problem
        return TarItem(claimed, shard, reason=Reason.UNSAFE_PATH, detail=f"{shard}: {detail}") if claimed else None
    image_id = posixpath.basename(member.name)[: -len(".jpg")]
    if refusal is not None:
        return TarItem(image_id, shard, reason=refusal[0], detail=refusal[1])
    if member.size > max_bytes:
        return TarItem(image_id, shard, reason=Reason.TOO_LARGE, detail=f"{shard}: {member.size} > {max_bytes} bytes")
    extracted = archive.extractfile(member)
    if extracted is None:
        return TarItem(image_id, shard, reason=Reason.READ_ERROR, detail=f"{shard}: {member.name} has no data")
    return TarItem(image_id, shard, data=extracted.read())


def match_row(image_id: str, grouped: dict[str, Iterable]) -> Iterator[FetchedImage | Failure]:
    """One outcome per manifest row with this id (there is at most one after dedupe).

    A usable copy wins (the first by shard name when several shards hold one); otherwise the
    first rejection by shard name; otherwise missing_file. Entries of ids that no row names
    are counted (`fetch/tar_unlisted`) and dropped: they are not input rows.
    """
    rows: list[ManifestRow] = list(grouped["rows"])
    items = sorted(grouped["items"], key=lambda i: (i.data is None, i.shard, i.reason or "", i.detail))
    if not rows:
        Metrics.counter(STAGE, "tar_unlisted").inc(len(items))
        return
    for row in rows:
        if items and items[0].data is not None:
            yield FetchedImage(row=row, data=items[0].data)
        elif items:
            first = items[0]
            assert first.reason is not None
            yield Failure(row.line, row.id, row.landmark_id, Stage.FETCH, first.reason, first.detail, row.url)
        else:
            detail = f"id {image_id} is in no images_*.tar shard"
            yield Failure(row.line, row.id, row.landmark_id, Stage.FETCH, Reason.MISSING_FILE, detail, row.url)


def shards_or_fail(tar_dir: str) -> list[str]:
    shards = list_shards(tar_dir)
    if not shards:
        raise ValueError(f"no images_*.tar shards under {tar_dir}")
    return shards


def _split(item: TarItem | ShardReport) -> Iterator[object]:
    if isinstance(item, ShardReport):
        yield beam.pvalue.TaggedOutput("reports", item)
    else:
        yield item.id, item


class FetchFromTars(beam.PTransform):
    """ManifestRow PCollection -> (FetchedImage PCollection, Failure PCollection, ShardReport PCollection).

    `shards`: the shards, listed before the graph is built (`shards_or_fail`: a missing or empty
    `tar_dir` is an error then, not millions of failures later); None lists them when the job
    runs, for plans built offline. Each shard is read by one worker, streaming.
    """

    def __init__(self, tar_dir: str, max_bytes: int, shards: Sequence[str] | None = None) -> None:
        super().__init__()
        self._tar_dir = tar_dir
        self._max_bytes = max_bytes
        self._shards = None if shards is None else list(shards)

    def expand(self, rows: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection, beam.PCollection]:
        if self._shards is not None:
            shards = rows.pipeline | "Shards" >> beam.Create(self._shards)
        else:
            folder = rows.pipeline | "TarDir" >> beam.Create([self._tar_dir])
            shards = folder | "Shards" >> beam.FlatMap(shards_or_fail)
        items = (
            shards
            | meter("MeterShards")
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadShard" >> beam.FlatMap(read_shard, max_bytes=self._max_bytes)
            | "Split" >> beam.ParDo(_split).with_outputs("reports", main="items")
        )
        keyed_rows = rows | "KeyRows" >> beam.Map(lambda r: (r.id, r)) | meter("MeterRows")
        matched = (
            {"rows": keyed_rows, "items": items.items | meter("MeterItems")}
            | "JoinById" >> beam.CoGroupByKey()
            | "Match" >> beam.FlatMapTuple(match_row)
        )
        fetched, failures = route("RouteTarFetched", matched, STAGE)
        return fetched, failures, items.reports
