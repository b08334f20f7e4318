"""Dead-letter routing shared by every stage: records go on, `Failure`s go to their own output."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam

from schemas.records import Failure
from transforms.plumbing.progress import tick


class _Route(beam.DoFn):
    def __init__(self, stage: str, ok_name: str) -> None:
        self._stage = stage
        self._ok_name = ok_name

    def process(self, item: object) -> Iterator[object]:
        if isinstance(item, Failure):
            tick(self._stage, item.reason.value)
            yield beam.pvalue.TaggedOutput("failures", item)
        else:
            tick(self._stage, self._ok_name)
            yield item


def route(
    label: str, pcoll: beam.PCollection, stage: str, ok_name: str = "ok"
) -> tuple[beam.PCollection, beam.PCollection]:
    """Split a PCollection of records and Failures into (records, failures), counting each
    outcome as the Beam counter `<stage>/<reason>` (`<stage>/<ok_name>` for records)."""
    out = pcoll | label >> beam.ParDo(_Route(stage, ok_name)).with_outputs("failures", main="ok")
    return out.ok, out.failures
