"""The image store under `--output`: written while the run goes, read back by the next run.

Batch runners only commit a stage's output when the whole stage is done, so a store written by
a normal sink would be lost when a run is killed halfway. Here every worker writes its own
small Parquet parts as it goes (`part-<hash of the ids>.parquet`, each written under a
temporary name and renamed, so a part is either whole or absent). A re-run lists the parts that
exist and reuses them; an id found in several parts (a retried bundle) has identical content
in each, and readers keep one.

Ingest failures are logged the same way under `ingest_failures/attempt-NNNN/`, one folder per
run, so that a re-run knows which rows already failed (and `--retry-failed` can retry exactly
those) and the latest attempt of an id wins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas.records import DecodedImage, ImageRef
from schemas.tables import image_from_row
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import tick
from transforms.plumbing.store import write_atomically

IMAGES_DIR = "images"
FAILURES_DIR = "ingest_failures"
FINGERPRINT = "ingest.json"


@dataclass(frozen=True)
class StoreConfig:
    """A worker commits a part every `part_rows` records or `part_seconds` after the first
    buffered one, whichever comes first: what a killed run can lose is bounded by both."""

    part_rows: int = 256
    part_seconds: float = 30.0
    #: One row per row group, so that `read_at` reads one record and nothing else (images,
    #: features); off for stores only ever read whole (verified pairs, the failure log), where
    #: per-row metadata would outweigh the rows.
    indexed: bool = True

    def __post_init__(self) -> None:
        if self.part_rows < 1 or self.part_seconds <= 0:
            raise ValueError("part_rows must be >= 1 and part_seconds > 0")

    def for_results(self, factor: float, seconds: float = 5.0) -> StoreConfig:
        """Parts of a store of small results made slowly (verified pairs: ~150 bytes after tens of
        ms of matching each): `factor` times `part_rows` rows (for verified pairs, about one
        block pair's worth) and at most `seconds` of work, read whole (not indexed). A local run
        processes a stage as one bundle, so the end of a bundle comes only at the end of the
        stage: these bounds are what lets a killed run keep all but the last few seconds of
        each worker thread's results."""
        rows = max(1, round(self.part_rows * factor))
        return dataclasses.replace(self, part_rows=rows, part_seconds=min(self.part_seconds, seconds), indexed=False)

    def scaled(self, factor: float) -> StoreConfig:
        """The same settings for records `1 / factor` times the size of a stored image: parts
        of about the same bytes (a worker buffers one part per store it writes)."""
        return dataclasses.replace(self, part_rows=max(1, round(self.part_rows * factor)))


def part_files(directory: str) -> list[str]:
    """The committed `part-*.parquet` files directly under `directory` (sorted; [] if none)."""
    pattern = FileSystems.join(directory, "part-*.parquet")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def attempt_dirs(root: str) -> list[tuple[int, str]]:
    """(attempt number, folder) of every earlier run's failure log, oldest first."""
    pattern = FileSystems.join(root, FAILURES_DIR, "attempt-*", "part-*.parquet")
    paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    found: dict[int, str] = {}
    for path in paths:
        folder = path.rsplit("/", 1)[0]
        number = folder.rsplit("attempt-", 1)[1]
        if number.isdigit():
            found[int(number)] = folder
    return sorted(found.items())


def next_attempt_dir(root: str) -> str:
    previous = attempt_dirs(root)
    number = previous[-1][0] + 1 if previous else 1
    return FileSystems.join(root, FAILURES_DIR, f"attempt-{number:04d}")


def check_fingerprint(root: str, fingerprint: dict[str, Any]) -> None:
    """Refuse to mix images normalised with other settings into one store; record the settings
    on first use. Raises ValueError naming both settings."""
    path = FileSystems.join(root, FINGERPRINT)
    wanted = json.dumps(fingerprint, sort_keys=True)
    if FileSystems.exists(path):
        with FileSystems.open(path) as handle:
            found = json.dumps(json.loads(handle.read().decode("utf-8")), sort_keys=True)
        if found != wanted:
            raise ValueError(
                f"{root} holds images stored with {found}, this run asks for {wanted}: "
                "use another --output, or the same settings to reuse them"
            )
        return
    with FileSystems.create(path) as handle:
        handle.write((wanted + "\n").encode("utf-8"))


def write_part(directory: str, rows: list[dict], schema: pa.Schema, indexed: bool = True) -> str:
    """Write `rows` (sorted by id, stably) as one part, atomically; returns the final path.

    `indexed`: one row per row group, so a reader of one image or feature set (`read_at`) reads
    that row and nothing else; otherwise one row group. The name hashes the ids, so a retried
    bundle with the same rows replaces its own part.
    """
    rows = sorted(rows, key=lambda r: r["id"])
    digest = hashlib.sha1("\n".join(r["id"] for r in rows).encode("utf-8"), usedforsecurity=False).hexdigest()
    final = FileSystems.join(directory, f"part-{digest[:20]}.parquet")
    table = pa.Table.from_pylist(rows, schema=schema)
    write_atomically(final, table, row_group_size=1 if indexed else max(1, len(rows)))
    return final


class _WritePartsFn(beam.DoFn):
    """Buffers rows and writes a part when `StoreConfig` says so and at the end of a bundle;
    after the part is committed, emits `to_ref(record, path, index)` for each of its records
    (a claim check that is only ever handed out for data already on disk)."""

    def __init__(
        self,
        directory: str,
        schema: pa.Schema,
        to_row: Callable[[Any], dict],
        config: StoreConfig,
        to_ref: Callable[[Any, str, int], Any],
    ) -> None:
        self._directory = directory
        self._schema = schema
        self._to_row = to_row
        self._config = config
        self._to_ref = to_ref
        self._buffer: list[tuple[dict, Any]] = []
        self._since = 0.0

    def start_bundle(self) -> None:
        self._buffer = []

    def _flush(self) -> list:
        ordered = sorted(self._buffer, key=lambda item: item[0]["id"])
        self._buffer = []
        path = write_part(self._directory, [row for row, _ in ordered], self._schema, self._config.indexed)
        return [self._to_ref(record, path, index) for index, (_, record) in enumerate(ordered)]

    def process(self, record: Any) -> Iterator[Any]:
        if not self._buffer:
            self._since = time.monotonic()
        self._buffer.append((self._to_row(record), record))
        full = len(self._buffer) >= self._config.part_rows
        if full or time.monotonic() - self._since >= self._config.part_seconds:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[beam.utils.windowed_value.WindowedValue]:
        if self._buffer:
            for ref in self._flush():
                yield beam.transforms.window.GlobalWindows.windowed_value(ref)


def _path_only(_record: Any, path: str, _index: int) -> str:
    return path


class WriteStoreParts(beam.PTransform):
    """Records -> one claim check per record, `to_ref(record, part path, row index)`, emitted
    once its part is committed (default: the part path)."""

    def __init__(
        self,
        directory: str,
        schema: pa.Schema,
        to_row: Callable[[Any], dict],
        config: StoreConfig,
        to_ref: Callable[[Any, str, int], Any] = _path_only,
    ) -> None:
        super().__init__()
        self._fn = _WritePartsFn(directory, schema, to_row, config, to_ref)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "WriteParts" >> beam.ParDo(self._fn)


def read_at(path: str, indices: Iterable[int], columns: list[str] | None = None) -> dict[int, dict]:
    """{index: row} of the rows at `indices` of one part, reading only the row groups that hold
    them (one file open for all). Parts written before one-row groups still read correctly."""
    wanted = sorted(set(indices))
    found: dict[int, dict] = {}
    with FileSystems.open(path) as handle:
        parquet = pq.ParquetFile(handle)
        start = 0
        for group in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            inside = [i for i in wanted if start <= i < start + rows]
            if inside:
                table = parquet.read_row_group(group, columns=columns).to_pylist()
                found.update({i: table[i - start] for i in inside})
            start += rows
    missing = set(wanted) - set(found)
    if missing:
        raise KeyError(f"{path} has no rows at {sorted(missing)[:5]}: the store was changed under the run")
    return found


def load_image(item: DecodedImage | ImageRef) -> DecodedImage:
    """The image itself: a DecodedImage as is, an ImageRef read from the image store (one row
    group). Raises OSError/KeyError/ArrowException when the store cannot give it back."""
    if isinstance(item, DecodedImage):
        return item
    return image_from_row(read_at(item.path, [item.index])[item.index], item.row)


def readable_rows(path: str, columns: list[str] | None = None, stage: str = "store") -> Iterator[dict]:
    """Rows of a stored part (only `columns` when given), each with its `path` and row
    `index`; a part that cannot be read (damaged, foreign, or of an older layout) is counted
    as `<stage>/unreadable_part` and skipped, so what it held is simply made again."""
    try:
        rows = list(read_rows(path, columns))
    except (OSError, pa.ArrowException) as exc:
        tick(stage, "unreadable_part")
        logging.getLogger(__name__).warning("skipping unreadable store part %s: %s", path, exc)
        return
    for index, row in enumerate(rows):
        yield {**row, "path": path, "index": index}


def _parts_under(directory: str) -> list[str]:
    # at run time (a worker), not while the graph is built: a fresh store has no folder yet
    return part_files(directory) if FileSystems.exists(directory) else []


class ReadStore(beam.PTransform):
    """Begin -> the rows (`columns` of them, plus `path` and `index`) of every committed part
    under `directory`, listed and read when the pipeline runs; nothing when there is none."""

    def __init__(self, directory: str, columns: list[str], stage: str) -> None:
        super().__init__()
        self._directory = directory
        self._columns = columns
        self._stage = stage

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            begin
            | "Folder" >> beam.Create([self._directory])
            | "ListParts" >> beam.FlatMap(_parts_under)
            | meter("MeterParts")
            | "SpreadParts" >> beam.Reshuffle()
            | "ReadParts" >> beam.FlatMap(readable_rows, columns=self._columns, stage=self._stage)
        )


def settings_key(settings: dict[str, Any]) -> str:
    """A short, stable name for a set of settings: stores made with other settings live in
    other folders, so a re-run reuses exactly what its settings would make again."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:12]


def read_rows(path: str, columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of one Parquet part, a record batch at a time (bounded memory per part)."""
    with FileSystems.open(path) as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=256, columns=columns):
            yield from batch.to_pylist()
