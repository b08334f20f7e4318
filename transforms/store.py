"""Deterministic writers: sorted Parquet (one file or one file per id prefix) and the
official `train_clean.csv`.

Rows are range-partitioned by the first characters of their sort key, each partition is sorted
on its own worker, and partitions are laid out in key order, so the output is globally sorted
and byte-identical across runs while no worker ever holds more than one partition.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas.gldv2_csv import CLEAN_HEADER, format_clean_row
from schemas.records import ImageDecision
from schemas.vocabulary import Status
from transforms.metering import meter

SortKey = Callable[[Any], tuple]


def prefix_length(estimated_rows: int, rows_per_part: int) -> int:
    """Smallest id-prefix length (0..3) giving about `rows_per_part` rows per hex prefix."""
    length = 0
    while length < 3 and 16**length * rows_per_part < estimated_rows:
        length += 1
    return length


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


@dataclass(frozen=True)
class ParquetSpec:
    """How records become one sorted Parquet output.

    `to_row` makes a dict matching `schema`; `sort_key(row)` orders rows and its first string
    field's first `prefix` characters choose the partition.
    """

    schema: pa.Schema
    to_row: Callable[[Any], dict]
    sort_key: SortKey
    prefix: int


def _partition(record: Any, spec: ParquetSpec) -> tuple[str, dict]:
    row = spec.to_row(record)
    return str(spec.sort_key(row)[0])[: spec.prefix], row


def _write_part(prefix: str, rows: Iterable[dict], directory: str = "", spec: ParquetSpec | None = None) -> str:
    assert spec is not None
    path = FileSystems.join(directory, f"part-{prefix or 'all'}.parquet")
    with FileSystems.create(path) as handle:
        pq.write_table(_table(sorted(rows, key=spec.sort_key), spec.schema), handle, compression="zstd")
    return path


class WriteParquetParts(beam.PTransform):
    """Writes `<directory>/part-<prefix>.parquet` files (one per prefix); returns their paths."""

    def __init__(self, directory: str, spec: ParquetSpec) -> None:
        super().__init__()
        self._directory = directory
        self._spec = spec

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "Partition" >> beam.Map(_partition, spec=self._spec)
            | meter("MeterRows")
            | "GroupPartition" >> beam.GroupByKey()
            | "WritePart" >> beam.MapTuple(_write_part, directory=self._directory, spec=self._spec)
        )


def _part_prefix(path: str) -> str:
    """The partition prefix of a `.../part-<prefix>.parquet` path."""
    return path.rsplit("part-", 1)[-1][: -len(".parquet")]


def _concatenate(paths: list[str], destination: str, schema: pa.Schema) -> None:
    """Streams sorted part files into one Parquet file (one row group per part), then deletes them."""
    with FileSystems.create(destination) as handle, pq.ParquetWriter(handle, schema, compression="zstd") as writer:
        if not paths:
            writer.write_table(schema.empty_table())
        # Prefix order, not path order: "part-a.parquet" (ids shorter than the prefix) must come
        # before "part-a-.parquet", although "-" sorts before "." in the path.
        for path in sorted(paths, key=_part_prefix):
            with FileSystems.open(path) as part:
                writer.write_table(pq.read_table(io.BytesIO(part.read())))
    parts_dir = destination + ".parts"
    if paths:
        # One pattern for every part: FileSystems.delete globs, and part names hold id prefixes,
        # which may contain * ? [ (a literal "part-*.parquet" would match every part).
        FileSystems.delete([FileSystems.join(parts_dir, "*")])
    if FileSystems.exists(parts_dir):
        FileSystems.delete([parts_dir])


class WriteSortedParquet(beam.PTransform):
    """Writes one globally sorted Parquet file at `path` (parts go to `path + ".parts"` first).

    The final copy streams one part at a time through one worker: right for decisions and
    pairs (tens of bytes per row), not for image bytes, which use WriteParquetParts.
    """

    def __init__(self, path: str, spec: ParquetSpec) -> None:
        super().__init__()
        self._path = path
        self._spec = spec

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        parts = records | "Parts" >> WriteParquetParts(self._path + ".parts", self._spec)
        return (
            parts
            | "AllParts" >> beam.combiners.ToList()
            | "Concatenate" >> beam.Map(_concatenate, destination=self._path, schema=self._spec.schema)
        )


def clean_row(landmark_id: int, ids: Iterable[str]) -> tuple[int, str]:
    return landmark_id, format_clean_row(landmark_id, ids)


def _write_clean(lines: list[tuple[int, str]], path: str) -> None:
    text = "\n".join([CLEAN_HEADER] + [line for _, line in sorted(lines)]) + "\n"
    with FileSystems.create(path) as handle:
        handle.write(text.encode("utf-8"))


def kept_by_class(decision: ImageDecision) -> Iterator[tuple[int, str]]:
    if decision.status == Status.KEPT:
        yield decision.landmark_id, decision.id


class WriteTrainClean(beam.PTransform):
    """ImageDecision PCollection -> `train_clean.csv` in the official format.

    One text line per class is built in parallel; only those lines (about 20 bytes per kept
    image) meet on one worker to be sorted and written. `ids_of` picks the (landmark_id, id)
    pairs listed (default: the kept images).
    """

    def __init__(self, path: str, ids_of: Callable[[ImageDecision], Iterable[tuple[int, str]]] = kept_by_class) -> None:
        super().__init__()
        self._path = path
        self._ids_of = ids_of

    def expand(self, decisions: beam.PCollection) -> beam.PCollection:
        return (
            decisions
            | "Kept" >> beam.FlatMap(self._ids_of)
            | "GroupKept" >> beam.GroupByKey()
            | "Line" >> beam.MapTuple(clean_row)
            | "AllLines" >> beam.combiners.ToList()
            | "Write" >> beam.Map(_write_clean, path=self._path)
        )
