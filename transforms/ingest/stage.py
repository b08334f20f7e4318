"""Stages 2-3 as one composite: reuse what the store already has, fetch the rest (HTTP, an
image folder or the tar shards), decode, and write the store as the run goes: image bytes go
from where they are read to the store in one fused step and never cross a shuffle.

Re-running with the same `--output` therefore resumes: an id stored by an earlier (even killed)
run is read back instead of downloaded, a row that already failed keeps its recorded failure
(`--retry-failed` fetches those rows again, and only those and the never-tried ones), and the
final tables are the same as an uninterrupted run's because features are always computed from
the stored JPEG bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from schemas.records import DecodedImage, Failure, ImageRef, ManifestRow
from schemas.tables import (
    IMAGES_SCHEMA,
    INGEST_FAILURES_SCHEMA,
    image_to_row,
    ingest_failure_from_row,
    record_to_row,
)
from transforms.ingest.decode import DecodeConfig, DecodeImages
from transforms.ingest.fetch import FetchConfig, FetchImages
from transforms.ingest.image_store import (
    FAILURES_DIR,
    IMAGES_DIR,
    StoreConfig,
    WriteStoreParts,
    attempt_dirs,
    check_fingerprint,
    next_attempt_dir,
    part_files,
    readable_rows,
)
from transforms.ingest.tar_shards import MatchCopies, ReadShards, shards_or_fail
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import tick

STAGE = "ingest"


@dataclass(frozen=True)
class IngestConfig:
    """`store`: the run's `--output` (images and the failure log live under it)."""

    store: str
    fetch: FetchConfig = field(default_factory=FetchConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    parts: StoreConfig = field(default_factory=StoreConfig)

    def __post_init__(self) -> None:
        if not self.store:
            raise ValueError("an output folder for the image store is required")

    def fingerprint(self) -> dict:
        """What decides the stored bytes of an image; a store only mixes runs that agree on it."""
        return {"decode": asdict(self.decode)}


@dataclass(frozen=True)
class StoreListing:
    """What `Ingest` needs to know of the store and the tar shards, found before the graph is
    built (`list_store`): the committed image parts, the (attempt number, part) of every
    earlier failure log, the folder this run logs to, and the shards (None: listed when the
    job runs)."""

    stored: tuple[str, ...] = ()
    logged: tuple[tuple[int, str], ...] = ()
    log_dir: str = ""
    shards: tuple[str, ...] | None = None

    @classmethod
    def offline(cls, store: str) -> StoreListing:
        """A listing that read nothing (dry runs): a fresh store, shards listed when the job runs."""
        return cls(log_dir=FileSystems.join(store, FAILURES_DIR, "attempt-NNNN"))


def list_store(config: IngestConfig) -> StoreListing:
    """Check the store's fingerprint (recorded on first use) and list what `Ingest` reads: the
    store's image parts and failure logs, and the tar shards (ValueError when there is none)."""
    check_fingerprint(config.store, config.fingerprint())
    stored, logged = part_files(FileSystems.join(config.store, IMAGES_DIR)), attempt_dirs(config.store)
    log_dir = next_attempt_dir(config.store)
    logged_parts = [(number, path) for number, folder in logged for path in part_files(folder)]
    shards = tuple(shards_or_fail(config.fetch.tar_dir)) if config.fetch.tar_dir else None
    return StoreListing(tuple(stored), tuple(logged_parts), log_dir, shards)


#: What the resume join reads of a stored image: everything but its JPEG.
INDEX_COLUMNS = ["id", "url", "width", "height", "sha256"]


def image_ref(image: DecodedImage, path: str, index: int) -> ImageRef:
    """The claim check of an image just committed to the store at (path, index)."""
    return ImageRef(image.row, path, index, image.width, image.height, image.sha256)


def resume(
    image_id: str, grouped: dict[str, Iterable], retry_failed: bool = False
) -> Iterator[ManifestRow | ImageRef | Failure]:
    """The outcome of one id given what earlier runs left: a stored image (when its URL is
    still the row's), else the latest logged failure (unless `retry_failed`), else the row
    itself, to be fetched. Stored ids no longer in the manifest yield nothing.

    `stored` holds index rows (`INDEX_COLUMNS` plus `path` and `index`); of several copies of
    one image (a retried bundle), the one in the smallest (path, index) is used."""
    for row in grouped["rows"]:
        stored = sorted((r for r in grouped["stored"] if r["url"] == row.url), key=lambda r: (r["path"], r["index"]))
        if stored:
            tick(STAGE, "reused")
            first = stored[0]
            yield ImageRef(row, first["path"], first["index"], first["width"], first["height"], first["sha256"])
            continue
        failed = sorted((a, r) for a, r in grouped["failed"] if r["url"] == row.url)
        if failed and not retry_failed:
            try:
                failure = ingest_failure_from_row(failed[-1][1], row)
            except ValueError:  # logged by a version with another vocabulary: fetch again
                failure = None
            if failure is not None:
                tick(STAGE, f"logged/{failure.stage.value}/{failure.reason.value}")
                yield failure
                continue
        tick(STAGE, "to_fetch")
        yield row


def _kind(item: ManifestRow | ImageRef | Failure) -> Iterator[object]:
    if isinstance(item, ManifestRow):
        yield item
    else:
        yield beam.pvalue.TaggedOutput("failures" if isinstance(item, Failure) else "reused", item)


def read_logged(numbered: tuple[int, str]) -> Iterator[tuple[str, tuple[int, dict]]]:
    """(id, (attempt, row)) for each row of one failure-log part (attempt number, part path),
    for joining with a manifest by id; an unreadable part is skipped and counted."""
    attempt, path = numbered
    for row in readable_rows(path, stage=STAGE):
        yield row["id"], (attempt, row)


class _Resume(beam.PTransform):
    """rows -> (rows to fetch, ImageRefs of reused images, Failures logged by earlier runs)."""

    def __init__(self, images: Sequence[str], logged: Sequence[tuple[int, str]], retry_failed: bool) -> None:
        super().__init__()
        self._images = list(images)
        self._logged = list(logged)
        self._retry_failed = retry_failed

    def expand(self, rows: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection, beam.PCollection]:
        pipeline = rows.pipeline
        stored = (
            pipeline
            | "StoredParts" >> beam.Create(self._images)
            | "ReadStored" >> beam.FlatMap(readable_rows, columns=INDEX_COLUMNS, stage=STAGE)
            | "KeyStored" >> beam.Map(lambda r: (r["id"], r))
            | meter("MeterStored")
        )
        failed = (
            pipeline
            | "LoggedParts" >> beam.Create(self._logged)
            | "ReadLogged" >> beam.FlatMap(read_logged)
            | meter("MeterLogged")
        )
        keyed = rows | "KeyRows" >> beam.Map(lambda r: (r.id, r)) | meter("MeterRows")
        outcomes = (
            {"rows": keyed, "stored": stored, "failed": failed}
            | "JoinStore" >> beam.CoGroupByKey()
            | "Resume" >> beam.FlatMapTuple(resume, retry_failed=self._retry_failed)
            | "Kind" >> beam.ParDo(_kind).with_outputs("reused", "failures", main="rows")
        )
        return outcomes.rows, outcomes.reused, outcomes.failures


def duplicate_groups(sha256: str, members: Iterable[tuple[str, int]]) -> Iterator[dict]:
    """One row per image whose fetched bytes are identical to another image's (`group_size` > 1)."""
    ordered = sorted(members)
    if len(ordered) < 2:
        return
    for image_id, landmark_id in ordered:
        yield {
            "sha256": sha256,
            "id": image_id,
            "landmark_id": landmark_id,
            "group_size": len(ordered),
            "same_class": len({lid for _, lid in ordered}) == 1,
        }


class Ingest(beam.PTransform):
    """ManifestRow PCollection -> dict of PCollections: `images` (ImageRef, the claim checks of
    stored images: the JPEG bytes go to the store and never further), `failures`
    (fetch/decode Failures, new and logged), `duplicates` (exact-duplicate rows) and, when
    reading tars, `shard_reports` (ShardReport).

    A fresh run has no resume join and no flattening with empty inputs: the graph only has
    the branches that carry data. `listing` is what `list_store` found before the graph was
    built: nothing is read while it is built."""

    def __init__(self, config: IngestConfig, listing: StoreListing) -> None:
        super().__init__()
        self._config = config
        self._listing = listing

    def expand(self, rows: beam.PCollection) -> dict[str, beam.PCollection]:
        config, listing = self._config, self._listing
        images_dir = FileSystems.join(config.store, IMAGES_DIR)
        to_fetch, outputs = rows, {}
        resuming = bool(listing.stored or listing.logged)
        if resuming:
            resume_join = _Resume(listing.stored, listing.logged, config.fetch.retry_failed)
            to_fetch, reused, logged_failures = rows | "Resume" >> resume_join
        tars = bool(config.fetch.tar_dir)
        if tars:
            fetched, fetch_failures, outputs["shard_reports"] = to_fetch | "ReadShards" >> ReadShards(
                config.fetch.tar_dir, config.fetch.max_bytes, listing.shards
            )
        else:
            fetched, fetch_failures = to_fetch | "FetchImages" >> FetchImages(config.fetch)
        # fused with the fetch (no grouping between): bytes go from the source to the store
        decoded, decode_failures = fetched | "DecodeImages" >> DecodeImages(config.decode)
        stored_now = decoded | "StoreImages" >> WriteStoreParts(
            images_dir, IMAGES_SCHEMA, image_to_row, config.parts, to_ref=image_ref
        )
        new_failures = (fetch_failures, decode_failures) | "NewFailures" >> beam.Flatten()
        if tars:  # outcomes per copy in the shards -> one per row, by reference
            copies = {"rows": to_fetch, "stored": stored_now, "failed": new_failures}
            stored_now, new_failures = copies | "MatchCopies" >> MatchCopies()
        new_failures | "LogFailures" >> WriteStoreParts(
            listing.log_dir, INGEST_FAILURES_SCHEMA, record_to_row, replace(config.parts, indexed=False)
        )
        images, failures = stored_now, new_failures
        if resuming:
            images = (stored_now, reused) | "AllImages" >> beam.Flatten()
            failures = (new_failures, logged_failures) | "IngestFailures" >> beam.Flatten()
        outputs["duplicates"] = (
            images
            | "ByContent" >> beam.Map(lambda i: (i.sha256, (i.row.id, i.row.landmark_id)))
            | meter("MeterContent")
            | "GroupContent" >> beam.GroupByKey()
            | "Duplicates" >> beam.FlatMapTuple(duplicate_groups)
        )
        return {"images": images, "failures": failures, **outputs}
