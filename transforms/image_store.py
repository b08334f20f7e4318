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

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

IMAGES_DIR = "images"
FAILURES_DIR = "ingest_failures"
FINGERPRINT = "ingest.json"


@dataclass(frozen=True)
class StoreConfig:
    """A worker commits a part every `part_rows` records or `part_seconds` after the first
    buffered one, whichever comes first: what a killed run can lose is bounded by both."""

    part_rows: int = 256
    part_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.part_rows < 1 or self.part_seconds <= 0:
            raise ValueError("part_rows must be >= 1 and part_seconds > 0")


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


def write_part(directory: str, rows: list[dict], schema: pa.Schema) -> str:
    """Write `rows` (sorted by id) as one part, atomically; returns the final path.

    The name hashes the ids, so a retried bundle with the same rows replaces its own part.
    """
    rows = sorted(rows, key=lambda r: r["id"])
    digest = hashlib.sha1("\n".join(r["id"] for r in rows).encode("utf-8"), usedforsecurity=False).hexdigest()
    final = FileSystems.join(directory, f"part-{digest[:20]}.parquet")
    temporary = FileSystems.join(directory, f".tmp-{uuid.uuid4().hex}.parquet")
    with FileSystems.create(temporary) as handle:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), handle, compression="zstd")
    FileSystems.rename([temporary], [final])
    return final


class _WritePartsFn(beam.DoFn):
    """Buffers rows and writes a part when `StoreConfig` says so and at the end of a bundle."""

    def __init__(self, directory: str, schema: pa.Schema, to_row: Callable[[Any], dict], config: StoreConfig) -> None:
        self._directory = directory
        self._schema = schema
        self._to_row = to_row
        self._config = config
        self._buffer: list[dict] = []
        self._since = 0.0

    def start_bundle(self) -> None:
        self._buffer = []

    def process(self, record: Any) -> Iterator[str]:
        if not self._buffer:
            self._since = time.monotonic()
        self._buffer.append(self._to_row(record))
        full = len(self._buffer) >= self._config.part_rows
        if full or time.monotonic() - self._since >= self._config.part_seconds:
            yield write_part(self._directory, self._buffer, self._schema)
            self._buffer = []

    def finish_bundle(self) -> Iterator[beam.utils.windowed_value.WindowedValue]:
        if self._buffer:
            path = write_part(self._directory, self._buffer, self._schema)
            yield beam.transforms.window.GlobalWindows.windowed_value(path)
        self._buffer = []


class WriteStoreParts(beam.PTransform):
    """Records -> paths of the parts written under `directory` as the records arrive."""

    def __init__(self, directory: str, schema: pa.Schema, to_row: Callable[[Any], dict], config: StoreConfig) -> None:
        super().__init__()
        self._fn = _WritePartsFn(directory, schema, to_row, config)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "WriteParts" >> beam.ParDo(self._fn)


def read_rows(path: str, columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of one Parquet part, a record batch at a time (bounded memory per part)."""
    with FileSystems.open(path) as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=256, columns=columns):
            yield from batch.to_pylist()
