"""Fetch source (b): the official GLDv2 tar shards `images_NNN.tar` with their md5 files.

Each shard is checked against its md5 file first (one streaming pass), then read member by
member straight from the archive (a second streaming pass; nothing is extracted to disk). A
member is only trusted when it is a regular file at `a/b/c/<id>.jpg` with `a, b, c` the first
three characters of `<id>`: absolute paths, `..`, links, devices and misplaced ids are refused,
and the manifest row of such an id fails as `unsafe_path` instead of silently going missing.

Image bytes never cross a shuffle: the reader looks each member's id up in the manifest rows (a
side input, looked up by key), skips ids no row names before reading their bytes, and hands
the bytes of listed ones straight on to decoding and the image store in the same fused step.
Only then do the stored references (and rejections) meet the manifest rows by id
(`MatchCopies`), so any number of shards and any manifest subset work, and each row gets
exactly one outcome.
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.records import Failure, FetchedImage, ImageRef, ManifestRow
from schemas.vocabulary import Reason, Stage
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import tick
from transforms.plumbing.routing import route

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
    shard or its md5 file could not be read: `error` says why); `unlisted`: entries of ids the
    manifest does not name, skipped unread."""

    shard: str
    md5: str
    images: int
    rejected: int
    error: str = ""
    unlisted: int = 0


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


def claimed_id(member: tarfile.TarInfo) -> str:
    """The id a member's file name claims (`<id>.jpg`), "" when it claims none."""
    base = posixpath.basename(member.name)
    return base[: -len(".jpg")] if base.endswith(".jpg") else ""


def _everything(_image_id: str) -> bool:
    return True


def member_problem(member: tarfile.TarInfo) -> tuple[str, str] | None:
    """None when `member` is a safe GLDv2 image entry, else (id it claims or "", why not).

    The claimed id is the file name without `.jpg`, so that the manifest row of a misplaced or
    unsafe member fails with this reason instead of `missing_file`.
    """
    name = member.name[2:] if member.name.startswith("./") else member.name
    claimed = claimed_id(member)
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


def read_shard(
    shard: str, max_bytes: int, listed: Callable[[str], bool] = _everything
) -> Iterator[TarItem | ShardReport]:
    """Every image entry of one shard whose id is `listed` as a TarItem, then one ShardReport.

    Rejections (TarItem with a reason): md5_mismatch / md5_missing (every entry of a shard that
    does not match, or has no, md5 file), unsafe_path, too_large, read_error. Directory entries
    are skipped, and so are entries of ids not `listed`, before their bytes are read (counted
    as `unlisted`); a shard that cannot be read to the end reports the error and keeps what it
    read.
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
    images = rejected = unlisted = 0
    error = ""
    try:
        with FileSystems.open(shard) as handle, tarfile.open(fileobj=handle, mode="r|") as archive:
            for member in archive:
                if member.isdir():
                    continue
                claimed = claimed_id(member)
                if claimed and not listed(claimed):
                    unlisted += 1
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
    yield ShardReport(shard, md5_state, images, rejected, error, unlisted)


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


def shards_or_fail(tar_dir: str) -> list[str]:
    shards = list_shards(tar_dir)
    if not shards:
        raise ValueError(f"no images_*.tar shards under {tar_dir}")
    return shards


def read_listed(
    shard: str, max_bytes: int, rows: Mapping[str, list[ManifestRow]]
) -> Iterator[FetchedImage | Failure | beam.pvalue.TaggedOutput]:
    """One shard read against the manifest: for each entry of an id that `rows` (id -> the
    rows naming it) lists, a FetchedImage (its bytes, to decode and store right here) or a
    fetch Failure per row; then the ShardReport (tag `reports`). Entries of other ids are
    skipped unread and counted as `fetch/tar_unlisted`."""
    for item in read_shard(shard, max_bytes, listed=lambda image_id: bool(rows[image_id])):
        if isinstance(item, ShardReport):
            Metrics.counter(STAGE, "tar_unlisted").inc(item.unlisted)
            yield beam.pvalue.TaggedOutput("reports", item)
            continue
        for row in rows[item.id]:
            if item.data is not None:
                yield FetchedImage(row=row, data=item.data)
            else:
                assert item.reason is not None
                yield Failure(row.line, row.id, row.landmark_id, Stage.FETCH, item.reason, item.detail, row.url)


class ReadShards(beam.PTransform):
    """ManifestRow PCollection -> (FetchedImage PCollection, Failure PCollection, ShardReport
    PCollection): one outcome per copy of a listed id (a row whose id no shard holds has none
    yet: `MatchCopies` gives it `missing_file`).

    `shards`: the shards, listed before the graph is built (`shards_or_fail`: a missing or empty
    `tar_dir` is an error then, not millions of failures later); None lists them when the job
    runs, for plans built offline. Each shard is read by one worker, streaming; the rows reach
    it as a side input looked up by id (a runner with lazy multimap side inputs, as Dataflow,
    fetches only the ids the shard holds)."""

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
        by_id = beam.pvalue.AsMultiMap(rows | "KeyRows" >> beam.Map(lambda r: (r.id, r)) | meter("MeterListed"))
        read = (
            shards
            | meter("MeterShards")
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadShard" >> beam.FlatMap(read_listed, self._max_bytes, by_id).with_outputs("reports", main="copies")
        )
        fetched, failures = route("RouteCopies", read.copies, STAGE)
        return fetched, failures, read.reports


Outcome = ImageRef | Failure


def _outcome_order(outcome: Outcome) -> tuple:
    if isinstance(outcome, ImageRef):
        return (0, outcome.path, outcome.index)
    return (1, outcome.stage.value, outcome.reason.value, outcome.detail)


def _extra_copy(outcome: Outcome) -> str:
    """The `ingest/extra_copy/...` counter of a copy not used: what `ingest_stats` takes back
    from the per-copy counts of decoding and fetching so that they count rows."""
    if isinstance(outcome, ImageRef):
        return "extra_copy/stored"
    return f"extra_copy/{outcome.stage.value}/{outcome.reason.value}"


def match_copies(image_id: str, grouped: dict[str, Iterable]) -> Iterator[Outcome]:
    """One outcome per manifest row of this id, from the outcomes of its copies in the shards
    (at most one copy in a well-formed release): a stored image wins (the smallest store
    part and row, the copy a re-run reuses), then the first rejection, else missing_file."""
    rows: list[ManifestRow] = list(grouped["rows"])
    copies = sorted([*grouped["stored"], *grouped["failed"]], key=_outcome_order)
    for row in rows:
        mine = [c for c in copies if _row_of(c) == (row.line, row.id)]
        if mine:
            yield mine[0]
            for extra in mine[1:]:
                tick("ingest", _extra_copy(extra))
        else:
            tick(STAGE, Reason.MISSING_FILE.value)
            detail = f"id {image_id} is in no images_*.tar shard"
            yield Failure(row.line, row.id, row.landmark_id, Stage.FETCH, Reason.MISSING_FILE, detail, row.url)


def _row_of(outcome: Outcome) -> tuple[int, str]:
    if isinstance(outcome, ImageRef):
        return outcome.row.line, outcome.row.id
    return outcome.line, outcome.id


class MatchCopies(beam.PTransform):
    """{"rows": ManifestRow, "stored": ImageRef, "failed": Failure} -> (ImageRef, Failure), one
    per row: the rows read from the shards meet the outcomes of their copies (stored
    references and rejections, never bytes) by id; see `match_copies`."""

    def expand(self, inputs: dict[str, beam.PCollection]) -> tuple[beam.PCollection, beam.PCollection]:
        keyed = {
            "rows": inputs["rows"] | "KeyRows" >> beam.Map(lambda r: (r.id, r)) | meter("MeterRows"),
            "stored": inputs["stored"] | "KeyStored" >> beam.Map(lambda i: (i.row.id, i)) | meter("MeterStored"),
            "failed": inputs["failed"] | "KeyFailed" >> beam.Map(lambda f: (f.id, f)) | meter("MeterFailed"),
        }
        matched = keyed | "JoinById" >> beam.CoGroupByKey() | "Match" >> beam.FlatMapTuple(match_copies)
        return matched | "Split" >> beam.ParDo(_split_outcome).with_outputs("failures", main="images")


def _split_outcome(outcome: Outcome) -> Iterator[object]:
    yield beam.pvalue.TaggedOutput("failures", outcome) if isinstance(outcome, Failure) else outcome
