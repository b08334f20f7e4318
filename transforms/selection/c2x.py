"""Export for retraining ("c2x"): the images a clean class rejected, with their scores.

Later GLDv2 winners trained on the clean split first, then re-added the rejected images of the
clean classes. This writes those images in the `train_clean.csv` format (only classes that kept
at least one image) and their decisions (degree, component, max inliers, best partner) as a
sorted Parquet file with the `decisions.parquet` columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam

from schemas.records import ImageDecision
from schemas.tables import DECISIONS_SCHEMA, record_to_row
from schemas.vocabulary import Stage, Status
from transforms.plumbing.metering import meter
from transforms.plumbing.store import ParquetSpec, WriteSortedParquet, WriteTrainClean


def rejected_of_clean_class(landmark_id: int, decisions: Iterable[ImageDecision]) -> Iterator[ImageDecision]:
    """The removed decisions of one class, sorted by id, if the class kept any image; else none."""
    decisions = list(decisions)
    if any(d.status == Status.KEPT for d in decisions):
        yield from sorted((d for d in decisions if d.status == Status.REMOVED), key=lambda d: d.id)


def _selected_by_class(decision: ImageDecision) -> Iterator[tuple[int, ImageDecision]]:
    # failed rows never reached selection: they have no image to retrain on
    if decision.stage == Stage.SELECT.value:
        yield decision.landmark_id, decision


def _listed(decision: ImageDecision) -> Iterator[tuple[int, str]]:
    yield decision.landmark_id, decision.id


class ExportRejectedSameClass(beam.PTransform):
    """ImageDecision PCollection -> `csv_path` (train_clean format) and `scores_path` (Parquet).

    Groups one class's selection decisions at a time (the same bound as selection itself).
    """

    def __init__(self, csv_path: str, scores_path: str) -> None:
        super().__init__()
        self._csv_path = csv_path
        self._scores_path = scores_path

    def expand(self, decisions: beam.PCollection) -> beam.PCollection:
        rejected = (
            decisions
            | "SelectedByClass" >> beam.FlatMap(_selected_by_class)
            | meter("MeterSelected")
            | "GroupClass" >> beam.GroupByKey()
            | "Rejected" >> beam.FlatMapTuple(rejected_of_clean_class)
        )
        rejected | "WriteCsv" >> WriteTrainClean(self._csv_path, ids_of=_listed)
        spec = ParquetSpec(DECISIONS_SCHEMA, record_to_row, lambda r: (r["id"], r["line"]))
        return rejected | "WriteScores" >> WriteSortedParquet(self._scores_path, spec)
