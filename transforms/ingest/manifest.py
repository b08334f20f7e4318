"""Stage 1: read a GLDv2 `train.csv` into valid rows and failure records.

A bad line never stops the run: it becomes a `Failure` with stage `manifest`. Duplicate ids
keep their first line; every later line of the same id fails as `duplicate_id` under the
synthetic id `line:N`, so each input line still ends in exactly one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.gldv2_csv import missing_columns, parse_header, parse_manifest_line, synthetic_id
from schemas.records import Failure, ManifestRow
from schemas.vocabulary import Reason, Stage
from transforms.plumbing.metering import meter
from transforms.plumbing.routing import route

STAGE = Stage.MANIFEST.value


@dataclass(frozen=True)
class ManifestConfig:
    """`columns`: the header's columns, read and checked before the graph is built
    (`read_header`), or known (a plan that must not open the file)."""

    path: str
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("a manifest path is required")
        if not self.columns:
            raise ValueError("the manifest's columns are required (read_header)")


def read_header(path: str) -> tuple[str, ...]:
    """Columns of the manifest's header; raises ValueError when required ones are missing.

    Checked before the pipeline starts so that a wrong file fails fast with one clear message
    instead of millions of identical failure rows.
    """
    with FileSystems.open(path) as handle:
        first = handle.readline().decode("utf-8-sig", errors="replace")
    columns = parse_header(first)
    missing = missing_columns(columns)
    if missing:
        raise ValueError(f"{path}: header {first.strip()!r} lacks column(s) {', '.join(missing)}")
    return columns


def iter_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes without newline) of every non-blank data line.

    Counts them as `manifest/input_rows`, the total the run summary reconciles against.
    """
    counter = Metrics.counter(STAGE, "input_rows")
    with FileSystems.open(path) as handle:
        handle.readline()
        for number, raw in enumerate(handle, start=2):
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                counter.inc()
                yield number, raw


def parse_line(line: int, raw: bytes, columns: tuple[str, ...] = ()) -> ManifestRow | Failure:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Failure(line, synthetic_id(line), None, Stage.MANIFEST, Reason.MALFORMED_ROW, f"not UTF-8: {exc}")
    return parse_manifest_line(line, text, columns)


def resolve_duplicates(image_id: str, rows: Iterable[ManifestRow]) -> Iterator[ManifestRow | Failure]:
    """The first line of an id goes on; later lines with the same id fail as duplicates."""
    ordered = sorted(rows, key=lambda r: r.line)
    first = ordered[0]
    yield first
    for dup in ordered[1:]:
        detail = f"id {image_id} already on line {first.line}"
        yield Failure(
            dup.line, synthetic_id(dup.line), dup.landmark_id, Stage.MANIFEST, Reason.DUPLICATE_ID, detail, dup.url
        )


class ReadManifest(beam.PTransform):
    """PBegin -> (ManifestRow PCollection, Failure PCollection)."""

    def __init__(self, config: ManifestConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, pbegin: beam.pvalue.PBegin) -> tuple[beam.PCollection, beam.PCollection]:
        columns = self._config.columns
        parsed = (
            pbegin
            | "Path" >> beam.Create([self._config.path])
            | "ReadLines" >> beam.FlatMap(iter_lines)
            | meter("MeterLines")
            | "Spread" >> beam.Reshuffle()
            | "Parse" >> beam.MapTuple(parse_line, columns=columns)
        )
        rows, bad = route("RouteParsed", parsed, STAGE, ok_name="parsed")
        unique = (
            rows
            | "KeyById" >> beam.Map(lambda r: (r.id, r))
            | meter("MeterRows")
            | "GroupById" >> beam.GroupByKey()
            | "Dedupe" >> beam.FlatMapTuple(resolve_duplicates)
        )
        rows, duplicates = route("RouteUnique", unique, "dedupe", ok_name="unique")
        failures = (bad, duplicates) | "Failures" >> beam.Flatten()
        return rows, failures
