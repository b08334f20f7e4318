"""The retraining export: rejected images of clean classes, in the train_clean format."""

from __future__ import annotations

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from schemas.records import ImageDecision
from schemas.vocabulary import Status
from transforms.selection.c2x import ExportRejectedSameClass, rejected_of_clean_class


def _decision(image_id: str, landmark_id: int, status: Status, reason: str, stage: str = "select") -> ImageDecision:
    return ImageDecision(line=1, id=image_id, landmark_id=landmark_id, status=status, reason=reason, stage=stage)


DECISIONS = [
    # class 1 keeps a, b and rejects d, c -> exported
    _decision("a", 1, Status.KEPT, "verified_component"),
    _decision("b", 1, Status.KEPT, "verified_component"),
    _decision("d", 1, Status.REMOVED, "no_verified_pair"),
    _decision("c", 1, Status.REMOVED, "small_component"),
    # class 1's failed row has no image: never exported
    _decision("e", 1, Status.FAILED, "http_404", stage="fetch"),
    # class 2 keeps nothing: not a clean class, nothing exported
    _decision("f", 2, Status.REMOVED, "no_verified_pair"),
    _decision("g", 2, Status.REMOVED, "no_verified_pair"),
    # class 3 keeps everything: nothing to export
    _decision("h", 3, Status.KEPT, "verified_component"),
    _decision("i", 3, Status.KEPT, "verified_component"),
]


def test_rejected_of_clean_class() -> None:
    class_one = [d for d in DECISIONS if d.landmark_id == 1 and d.stage == "select"]
    assert [d.id for d in rejected_of_clean_class(1, class_one)] == ["c", "d"]
    assert list(rejected_of_clean_class(2, [d for d in DECISIONS if d.landmark_id == 2])) == []


def test_export_writes_the_csv_and_the_scores(tmp_path) -> None:
    csv_path, scores_path = str(tmp_path / "c2x.csv"), str(tmp_path / "scores.parquet")
    options = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    with BeamTestPipeline(options=options) as pipeline:
        pipeline | beam.Create(DECISIONS) | ExportRejectedSameClass(csv_path, scores_path)
    assert (tmp_path / "c2x.csv").read_text(encoding="utf-8") == "landmark_id,images\n1,c d\n"
    scores = pq.read_table(scores_path).to_pylist()
    assert [(r["id"], r["reason"], r["status"]) for r in scores] == [
        ("c", "small_component", "removed"),
        ("d", "no_verified_pair", "removed"),
    ]
