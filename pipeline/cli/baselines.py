"""The `gld` commands of the baseline stages: export-tfrecords, train, evaluate, score, and the
baseline part of `gld demo --with-baselines`. Heavy modules (TensorFlow, Beam) load inside each
command."""

from __future__ import annotations

import argparse
import json
import sys


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


def export_main(argv: list[str]) -> int:
    from pipeline.baselines.tfrecords import ExportConfig, run_export

    parser = argparse.ArgumentParser(
        prog="gld export-tfrecords",
        description="TFRecords in the official builder's format from a clean split and its stored images. "
        "Unknown flags go to Beam.",
    )
    parser.add_argument("--train-clean", required=True, help="train_clean.csv of the split")
    parser.add_argument("--images", required=True, help="image store folder (DIR/images of gld curate|ingest)")
    parser.add_argument("--output", required=True, help="folder for the shards, relabeling.csv, export.json")
    parser.add_argument("--train-shards", type=int, default=128)
    parser.add_argument("--validation-shards", type=int, default=128)
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--single-image-split",
        choices=["train", "validation"],
        default="train",
        help="where a one-image class goes (the official builder: validation)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args, beam_args = parser.parse_known_args(argv)
    try:
        config = ExportConfig(
            args.train_clean,
            args.images,
            args.output,
            args.train_shards,
            args.validation_shards,
            args.validation_fraction,
            args.seed,
            args.single_image_split,
        )
        summary = run_export(config, beam_args, show_progress=not args.no_progress)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"gld export-tfrecords: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0 if summary["accounting_ok"] else 1


def train_main(argv: list[str]) -> int:
    from pipeline.baselines.train import BACKBONES, STRATEGIES, TrainConfig, run_training

    defaults = TrainConfig("", "")
    parser = argparse.ArgumentParser(prog="gld train", description="Train the ResNet-GeM-ArcFace baseline.")
    parser.add_argument("--tfrecords", required=True, help="folder of gld export-tfrecords")
    parser.add_argument("--output", required=True, help="folder for checkpoints/, logs/ and saved_model/")
    parser.add_argument("--backbone", choices=BACKBONES, default=defaults.backbone)
    parser.add_argument("--backbone-weights", default="", help="Keras weights file for the ResNet backbone")
    parser.add_argument("--strategy", choices=STRATEGIES, default=defaults.strategy)
    parser.add_argument("--tpu", default="", help="TPU name or address for --strategy tpu")
    for name in ("tiny_width", "image_size", "embedding_dim", "batch_size", "steps", "checkpoint_every"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("log_every", "seed", "shuffle_buffer"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("learning_rate", "momentum", "clip_norm", "arcface_margin", "arcface_scale", "min_crop_area"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument(
        "--test-scales", type=float, nargs="+", default=list(defaults.test_scales), help="scales of the export"
    )
    args = parser.parse_args(argv)
    try:
        config = TrainConfig(**{**vars(args), "test_scales": tuple(args.test_scales)})
        result = run_training(config)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"gld train: error: {exc}", file=sys.stderr)
        return 2
    last = result.losses[-1] if result.losses else None
    print(json.dumps({"step": result.step, "last_loss": last, "saved_model": result.saved_model}))
    return 0


def evaluate_main(argv: list[str]) -> int:
    from pipeline.baselines.evaluate import EvaluateConfig, run_evaluation
    from pipeline.baselines.metrics import TASKS, recognition_scores, retrieval_scores

    parser = argparse.ArgumentParser(
        prog="gld evaluate", description="Embed, rank and write official predictions. Unknown flags go to Beam."
    )
    parser.add_argument("--model", required=True, help="SavedModel of gld train")
    parser.add_argument("--index-images", required=True, help="image store folder of the index (or train) images")
    parser.add_argument("--query-images", required=True, help="image store folder of the query (test) images")
    parser.add_argument("--output", required=True)
    parser.add_argument("--task", choices=TASKS, default="retrieval")
    parser.add_argument("--signature", default="embed_batch")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--rerank", action="store_true", help="re-rank the top by spatial verification")
    parser.add_argument("--rerank-top", type=int, default=100)
    parser.add_argument("--solution", help="score the predictions against this solution CSV")
    parser.add_argument("--no-progress", action="store_true")
    args, beam_args = parser.parse_known_args(argv)
    try:
        config = EvaluateConfig(
            args.model,
            args.index_images,
            args.query_images,
            args.output,
            task=args.task,
            signature=args.signature,
            top_k=args.top_k,
            rerank=args.rerank,
            rerank_top=args.rerank_top,
        )
        summary = run_evaluation(config, beam_args, show_progress=not args.no_progress)
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


def score_main(argv: list[str]) -> int:
    from pipeline.baselines import metrics

    parser = argparse.ArgumentParser(prog="gld score", description="Official GLDv2 metrics (one JSON object).")
    parser.add_argument("task", choices=["recognition", "retrieval", "revisited"])
    parser.add_argument("--solution", help="solution CSV (recognition, retrieval)")
    parser.add_argument("--ground-truth", help="revisitop gnd_*.pkl or the same as .json (revisited)")
    parser.add_argument("--predictions", required=True, help="predictions CSV")
    args = parser.parse_args(argv)
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
