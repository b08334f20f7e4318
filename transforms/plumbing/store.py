"""Deterministic writers and their readers: sorted Parquet tables and the official
`train_clean.csv`.

Rows are range-partitioned by the first characters of their sort key (a prefix as long as the
row count of the data needs), each partition is sorted and written by its own worker, and parts
are named in key order, so a table is globally sorted and byte-identical across runs while no
worker holds more than one partition and none concatenates the others. Every Parquet file of the
project is written through `write_atomically` (the stores' parts too): whole or absent.
"""

from __future__ import annotations

import uuid
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
from transforms.plumbing.metering import meter

SortKey = Callable[[Any], tuple]


def write_atomically(path: str, table: pa.Table, row_group_size: int | None = None) -> None:
    """Write a Parquet file under a temporary name beside `path`, then rename it: readers see
    the whole file or none, and a retried write replaces its own file."""
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temporary) as handle:
        pq.write_table(table, handle, compression="zstd", row_group_size=row_group_size)
    FileSystems.rename([temporary], [path])


def prefix_length(rows: int, rows_per_part: int) -> int:
    """Smallest key-prefix length (0..3) giving at most about `rows_per_part` rows per hex prefix."""
    length = 0
    while length < 3 and 16**length * rows_per_part < rows:
        length += 1
    return length


@dataclass(frozen=True)
class ParquetSpec:
    """How records become one sorted Parquet table.

    `to_row` makes a dict matching `schema`; `sort_key(row)` orders rows, and the first
    characters of its first field choose the part: a table of up to `rows_per_part` rows is one
    file, a larger one a folder of parts, cut by a key prefix just long enough (from the row
    count of the data itself) that a part holds about `rows_per_part` rows."""

    schema: pa.Schema
    to_row: Callable[[Any], dict]
    sort_key: SortKey
    rows_per_part: int = 500_000

    def __post_init__(self) -> None:
        if self.rows_per_part < 1:
            raise ValueError("rows_per_part must be >= 1")


def part_name(prefix: str) -> str:
    """`part-<hex of the prefix's UTF-8>.parquet`: file names sort like the prefixes (hex keeps
    byte order, and a shorter prefix's name sorts first since "." < any hex digit), so reading
    the parts in name order reads the rows in key order."""
    return f"part-{prefix.encode('utf-8').hex()}.parquet"


def _partition(record: Any, total: int, spec: ParquetSpec) -> tuple[str, dict]:
    row = spec.to_row(record)
    return str(spec.sort_key(row)[0])[: prefix_length(total, spec.rows_per_part)], row


def _write_partition(partition: tuple[str, Iterable[dict]], total: int, path: str, spec: ParquetSpec) -> str:
    prefix, rows = partition
    target = path if prefix_length(total, spec.rows_per_part) == 0 else FileSystems.join(path, part_name(prefix))
    write_atomically(target, pa.Table.from_pylist(sorted(rows, key=spec.sort_key), schema=spec.schema))
    return target


def _write_if_empty(total: int, path: str, schema: pa.Schema) -> None:
    if total == 0:
        write_atomically(path, schema.empty_table())


class WriteSortedParquet(beam.PTransform):
    """Writes a globally sorted table at `path`: one file, or, above `spec.rows_per_part` rows,
    a folder of parts named in key order (`part_name`), each sorted and written by its own
    worker in parallel. No worker ever holds more than one part; returns the written paths."""

    def __init__(self, path: str, spec: ParquetSpec) -> None:
        super().__init__()
        self._path = path
        self._spec = spec

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        counted = records | "CountRows" >> beam.combiners.Count.Globally()
        total = beam.pvalue.AsSingleton(counted)
        counted | "WriteIfEmpty" >> beam.Map(_write_if_empty, path=self._path, schema=self._spec.schema)
        return (
            records
            | "Partition" >> beam.Map(_partition, total, spec=self._spec)
            | meter("MeterRows")
            | "GroupPartition" >> beam.GroupByKey()
            | "WritePartition" >> beam.Map(_write_partition, total, path=self._path, spec=self._spec)
        )


def table_files(path: str) -> list[str]:
    """The files of a table written by `WriteSortedParquet`: its parts in key order when `path`
    is a folder of parts, else `path` itself."""
    parts = FileSystems.match([FileSystems.join(path, "part-*.parquet")])[0].metadata_list
    return sorted(m.path for m in parts) if parts else [path]


def remove_table(path: str) -> None:
    """Delete a table (file, or folder of parts) if it exists: run before a job writes it again."""
    parts = FileSystems.match([FileSystems.join(path, "*")])[0].metadata_list
    if parts:
        FileSystems.delete([m.path for m in parts])
    if FileSystems.exists(path):
        FileSystems.delete([path])


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    """A whole table (file or folder of parts), in key order."""
    tables = []
    for file in table_files(path):
        with FileSystems.open(file) as handle:
            tables.append(pq.read_table(handle, columns=columns))
    return pa.concat_tables(tables)


def stream_batches(path: str, columns: list[str], batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
    """A table's record batches in key order, one file open at a time (bounded memory)."""
    for file in table_files(path):
        with FileSystems.open(file) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_size, columns=columns)


class ReadTable(beam.PTransform):
    """Begin -> the rows (dicts) of a table written by `WriteSortedParquet`, file or folder,
    found when the pipeline runs (the table may not exist yet while the graph is built)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            begin
            | "Table" >> beam.Create([self._path])
            | "Files" >> beam.FlatMap(table_files)
            | meter("MeterFiles")
            | "ReadFiles" >> beam.io.ReadAllFromParquet()
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
            | meter("MeterKept")
            | "GroupKept" >> beam.GroupByKey()
            | "Line" >> beam.MapTuple(clean_row)
            | meter("MeterLines")
            | "AllLines" >> beam.combiners.ToList()
            | "Write" >> beam.Map(_write_clean, path=self._path)
        )
