"""`gld demo --with-baselines`: the baseline stages on the demo's clean split, small enough for
a laptop CPU.

The clean split is exported to TFRecords (seeded per-class split); the validation images are
the held-out queries and the training images the index, so a query's ground truth is the
index images of its class, none of which it was trained on. The same `tiny` ResNet-like model
is exported once untrained (its initial weights) and once after training, and both are
evaluated with the same retrieval job and scored with the official mAP@100.

What the demo uses vs the paper recipe: a 3-stage tiny backbone instead of ResNet-50/101,
`image_size` 96 instead of 321, a 64-d embedding instead of 2048, 1000 steps on CPU
instead of days on 8 GPUs; GeM, ArcFace (margin 0.1, scale 45.25), the augmentation, SGD with
linear decay and clip-norm 10 are the recipe's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.baselines.evaluate import EvaluateConfig, run_evaluation
from pipeline.baselines.metrics import retrieval_scores
from pipeline.baselines.tfrecords import TRAIN, VALIDATION, ExportConfig, run_export, split_class
from pipeline.baselines.train import TrainConfig, run_training
from schemas.gldv2_csv import parse_train_clean
from schemas.tables import IMAGES_SCHEMA
from transforms.ingest.image_store import part_files, read_rows, write_part


@dataclass(frozen=True)
class DemoBaselineConfig:
    """The demo's training run (see the module docstring for how it differs from the paper)."""

    image_size: int = 96
    tiny_width: int = 16
    embedding_dim: int = 64
    batch_size: int = 32
    steps: int = 1000
    learning_rate: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1: the demo compares a trained model with an untrained one")


def _write_subset_store(source: str, ids: set[str], directory: str) -> int:
    rows = [row for path in part_files(source) for row in read_rows(path) if row["id"] in ids]
    unique = list({row["id"]: row for row in rows}.values())
    for start in range(0, len(unique), 256):
        write_part(directory, unique[start : start + 256], IMAGES_SCHEMA)
    return len(unique)


def _solution_csv(classes: dict[int, list[str]], split: dict[str, str]) -> str:
    """Public retrieval solution: each held-out query -> the index images of its class."""
    lines = ["id,images,Usage"]
    for _, ids in sorted(classes.items()):
        index = sorted(i for i in ids if split[i] == TRAIN)
        lines += [f"{q},{' '.join(index)},Public" for q in sorted(ids) if split[q] == VALIDATION and index]
    return "\n".join(lines) + "\n"


def run_baselines(
    train_clean: str, images: str, work_dir: str, config: DemoBaselineConfig, beam_args: list[str] | None = None
) -> dict:
    """Export, train, evaluate; returns `{"untrained_map@100", "trained_map@100", "queries",
    "index", "train_seconds"}`."""
    records = os.path.join(work_dir, "tfrecords")
    export = ExportConfig(train_clean, images, records, train_shards=4, validation_shards=1, seed=config.seed)
    run_export(export, beam_args, show_progress=False)
    with open(train_clean, encoding="utf-8") as handle:
        classes = parse_train_clean(handle.read())
    split = {i: s for lid, ids in classes.items() if ids for i, s in split_class(lid, ids, export).items()}
    index_store = os.path.join(work_dir, "index", "images")
    query_store = os.path.join(work_dir, "queries", "images")
    index_count = _write_subset_store(images, {i for i, s in split.items() if s == TRAIN}, index_store)
    query_count = _write_subset_store(images, {i for i, s in split.items() if s == VALIDATION}, query_store)
    solution = _solution_csv(classes, split)
    result: dict = {"queries": query_count, "index": index_count}
    for name, steps in (("untrained", 0), ("trained", config.steps)):
        trained = run_training(
            TrainConfig(
                records,
                os.path.join(work_dir, name),
                backbone="tiny",
                tiny_width=config.tiny_width,
                image_size=config.image_size,
                embedding_dim=config.embedding_dim,
                batch_size=config.batch_size,
                steps=steps,
                learning_rate=config.learning_rate,
                checkpoint_every=max(steps, 1),
                log_every=25,
                seed=config.seed,
            )
        )
        evaluation = EvaluateConfig(
            trained.saved_model, index_store, query_store, os.path.join(work_dir, name, "evaluation")
        )
        summary = run_evaluation(evaluation, beam_args, show_progress=False)
        with open(summary["predictions"], encoding="utf-8") as handle:
            scores = retrieval_scores(solution, handle.read())["public"]
        result[f"{name}_map@100"] = scores["map@100"]
        if steps:
            result["train_seconds"] = round(trained.seconds, 1)
            result["losses"] = [round(loss, 3) for loss in trained.losses]
    return result
