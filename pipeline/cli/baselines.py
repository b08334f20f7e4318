"""The `gld` commands of the baseline stages: export-tfrecords, train, evaluate, score, and the
baseline part of `gld demo --with-baselines`. Heavy modules (TensorFlow, Beam) load inside each
command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from pipeline.cli.settings import StatedDefaults
from pipeline.cli.strict import parse_strictly

#: The numeric `gld train` flags: TrainConfig field -> what it sets (type and default from the config).
_TRAIN_NUMBERS = {
    "tiny_width": "channels of the first stage of the tiny backbone",
    "image_size": "side of the square training crops",
    "embedding_dim": "size of the embedding",
    "batch_size": "images per step",
    "steps": "training steps (0: export the untrained model)",
    "checkpoint_every": "steps between checkpoints",
    "log_every": "steps between loss log lines",
    "seed": "seed of the shard order, the shuffle and the crops",
    "shuffle_buffer": "examples in the shuffle buffer",
    "learning_rate": "SGD learning rate",
    "momentum": "SGD momentum",
    "clip_norm": "gradient clipping norm",
    "arcface_margin": "ArcFace additive angular margin (radians)",
    "arcface_scale": "ArcFace logit scale",
    "min_crop_area": "smallest random crop, as a share of the image area",
}


def demo_baselines(output: str, steps: int, beam_args: list[str]) -> None:
    import os

    from pipeline.baselines.demo_baselines import DemoBaselineConfig, run_baselines
    from pipeline.curation.curate import output_paths

    curated = output_paths(os.path.join(output, "curated"))
    work_dir = os.path.join(output, "baselines")
    config = DemoBaselineConfig(steps=steps)
    result = run_baselines(curated["train_clean"], curated["images"], work_dir, config, beam_args)
    print(
        f"baselines: {result['queries']} held-out queries against {result['index']} training images; "
        f"trained {steps} steps in {result['train_seconds']:.0f} s, loss {result['losses'][0]:.2f} -> "
        f"{result['losses'][-1]:.2f}; outputs under {work_dir}"
    )
    print(json.dumps({"untrained_map@100": result["untrained_map@100"], "trained_map@100": result["trained_map@100"]}))


def config_from(cls: type, args: argparse.Namespace) -> Any:
    """The config dataclass `cls` from parsed flags named as its fields (a list as a tuple);
    flags that are not fields (`--no-progress`, `--solution`) are left out."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})


def export_parser() -> argparse.ArgumentParser:
    from pipeline.baselines.tfrecords import TRAIN, VALIDATION, ExportConfig

    defaults = ExportConfig("", "", "")
    parser = argparse.ArgumentParser(
        prog="gld export-tfrecords",
        description="TFRecords in the official builder's format from a clean split and its stored images. "
        "Unknown flags go to Beam.",
        formatter_class=StatedDefaults,
    )
    parser.add_argument("--train-clean", required=True, help="train_clean.csv of the split")
    parser.add_argument("--images", required=True, help="image store folder (DIR/images of gld curate|ingest)")
    parser.add_argument("--output", required=True, help="folder for the shards, relabeling.csv, export.json")
    parser.add_argument("--train-shards", type=int, default=defaults.train_shards, help="TFRecord shards of train")
    parser.add_argument(
        "--validation-shards", type=int, default=defaults.validation_shards, help="TFRecord shards of validation"
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=defaults.validation_fraction,
        help="share of each class held out for validation",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the per-class split")
    parser.add_argument(
        "--single-image-split",
        choices=[TRAIN, VALIDATION],
        default=defaults.single_image_split,
        help="where a one-image class goes (the official builder: validation)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return parser


def export_main(argv: list[str]) -> int:
    from pipeline.baselines.tfrecords import ExportConfig, run_export

    args, beam_args = parse_strictly(export_parser(), argv)
    try:
        summary = run_export(config_from(ExportConfig, args), beam_args, show_progress=not args.no_progress)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"gld export-tfrecords: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0 if summary["accounting_ok"] else 1


def train_parser() -> argparse.ArgumentParser:
    from pipeline.baselines.train import BACKBONES, STRATEGIES, TrainConfig

    defaults = TrainConfig("", "")
    parser = argparse.ArgumentParser(
        prog="gld train",
        description="Train the ResNet-GeM-ArcFace baseline.",
        formatter_class=StatedDefaults,
    )
    parser.add_argument("--tfrecords", required=True, help="folder of gld export-tfrecords")
    parser.add_argument("--output", required=True, help="folder for checkpoints/, logs/ and saved_model/")
    parser.add_argument("--backbone", choices=BACKBONES, default=defaults.backbone, help="embedding network")
    parser.add_argument(
        "--backbone-weights", default=defaults.backbone_weights, help="Keras weights file for the ResNet backbone"
    )
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default=defaults.strategy, help="tf.distribute strategy of the devices"
    )
    parser.add_argument("--tpu", default=defaults.tpu, help="TPU name or address for --strategy tpu")
    for name, text in _TRAIN_NUMBERS.items():
        default = getattr(defaults, name)
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, help=text)
    parser.add_argument(
        "--test-scales", type=float, nargs="+", default=list(defaults.test_scales), help="scales of the export"
    )
    return parser


def train_main(argv: list[str]) -> int:
    from pipeline.baselines.train import TrainConfig, run_training

    args = train_parser().parse_args(argv)
    try:
        result = run_training(config_from(TrainConfig, args))
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"gld train: error: {exc}", file=sys.stderr)
        return 2
    last = result.losses[-1] if result.losses else None
    print(json.dumps({"step": result.step, "last_loss": last, "saved_model": result.saved_model}))
    return 0


def evaluate_parser() -> argparse.ArgumentParser:
    from pipeline.baselines.evaluate import EvaluateConfig
    from pipeline.baselines.metrics import TASKS

    defaults = EvaluateConfig("", "", "", "")
    parser = argparse.ArgumentParser(
        prog="gld evaluate",
        description="Embed, rank and write official predictions. Unknown flags go to Beam.",
        formatter_class=StatedDefaults,
    )
    parser.add_argument("--model", required=True, help="SavedModel of gld train")
    parser.add_argument("--index-images", required=True, help="image store folder of the index (or train) images")
    parser.add_argument("--query-images", required=True, help="image store folder of the query (test) images")
    parser.add_argument("--output", required=True, help="folder for the predictions and evaluate.json")
    parser.add_argument("--task", choices=TASKS, default=defaults.task, help="what the predictions answer")
    parser.add_argument("--signature", default=defaults.signature, help="the model's batch embedding signature")
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="neighbours ranked per query")
    parser.add_argument("--rerank", action="store_true", help="re-rank the top by spatial verification")
    parser.add_argument("--rerank-top", type=int, default=defaults.rerank_top, help="neighbours re-ranked")
    parser.add_argument("--solution", help="score the predictions against this solution CSV")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return parser


def evaluate_main(argv: list[str]) -> int:
    from pipeline.baselines.evaluate import EvaluateConfig, run_evaluation
    from pipeline.baselines.metrics import recognition_scores, retrieval_scores

    args, beam_args = parse_strictly(evaluate_parser(), argv)
    try:
        summary = run_evaluation(config_from(EvaluateConfig, args), beam_args, show_progress=not args.no_progress)
        if args.solution:
            score = recognition_scores if args.task == "recognition" else retrieval_scores
            summary["scores"] = score(_read_text(args.solution), _read_text(summary["predictions"]))
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"gld evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def _read_text(path: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        return handle.read().decode("utf-8")


def score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gld score", description="Official GLDv2 metrics (one JSON object).")
    parser.add_argument(
        "task",
        choices=["recognition", "retrieval", "revisited"],
        help="GLDv2 recognition (GAP) or retrieval (mAP@100), or Revisited Oxford/Paris",
    )
    parser.add_argument("--solution", help="solution CSV (recognition, retrieval)")
    parser.add_argument("--ground-truth", help="revisitop gnd_*.pkl or the same as .json (revisited)")
    parser.add_argument("--predictions", required=True, help="predictions CSV")
    return parser


def score_main(argv: list[str]) -> int:
    from pipeline.baselines import metrics

    args = score_parser().parse_args(argv)
    try:
        predictions = _read_text(args.predictions)
        if args.task == "revisited":
            if not args.ground_truth:
                raise ValueError("revisited needs --ground-truth")
            result = metrics.revisited_scores(metrics.load_revisited_ground_truth(args.ground_truth), predictions)
        else:
            if not args.solution:
                raise ValueError(f"{args.task} needs --solution")
            score = metrics.recognition_scores if args.task == "recognition" else metrics.retrieval_scores
            result = score(_read_text(args.solution), predictions)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"gld score: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


BASELINE_COMMANDS = {
    "export-tfrecords": export_main,
    "train": train_main,
    "evaluate": evaluate_main,
    "score": score_main,
}
#: Their parsers, by command (the CLI reference is made from them).
BASELINE_PARSERS = {
    "export-tfrecords": export_parser,
    "train": train_parser,
    "evaluate": evaluate_parser,
    "score": score_parser,
}
