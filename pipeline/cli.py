"""The `gld` command line. Project flags are parsed here; every other flag is handed to Beam."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any


class _DropOptionalGcpNotice(logging.Filter):
    """Beam logs that GCP client libraries are absent at every import; irrelevant offline."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def _configure_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_DropOptionalGcpNotice())
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


_configure_logging()

from pipeline.config import MATCHING_PRESETS, PRESETS, build_config  # noqa: E402 - logging must be set before Beam is imported


def _curate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gld curate",
        description="Clean a GLDv2-style train.csv into train_clean.csv. Unknown flags go to Beam "
        "(--runner, --direct_num_workers, --project, ...).",
    )
    parser.add_argument("--train-csv", required=True, help="manifest with columns id,url,landmark_id (any Beam path)")
    parser.add_argument("--output", required=True, help="output folder (any Beam path)")
    parser.add_argument("--preset", default="gldv2-components", choices=sorted(PRESETS))
    fetch = parser.add_argument_group("ingest")
    fetch.add_argument("--images-dir", help="read <dir>/a/b/c/<id>.jpg instead of downloading the urls")
    fetch.add_argument("--allow-private-hosts", action="store_true", help="allow loopback/private hosts (tests, demo)")
    fetch.add_argument("--max-image-bytes", type=int, help="cap on one image's bytes")
    fetch.add_argument("--max-side", type=int, help="longest side after normalisation (default 1024)")
    features = parser.add_argument_group("features")
    features.add_argument("--extractor", choices=["sift"], help="local feature extractor (default sift)")
    features.add_argument("--max-features", type=int, help="strongest keypoints kept per image (default 4000)")
    pairs = parser.add_argument_group("pairs and verification")
    pairs.add_argument(
        "--pairs", choices=["all", "knn", "random"], help="candidate pairs per class (default all; knn above the cap)"
    )
    pairs.add_argument("--pairs-k", type=int, help="partners per image for knn/random (default 10)")
    pairs.add_argument("--max-class-for-all", type=int, help="largest class that gets all pairs (default 40)")
    pairs.add_argument("--seed", type=int, help="seed of pair sampling")
    pairs.add_argument("--embedding-model", help="SavedModel (any Beam path) giving knn's global descriptor")
    pairs.add_argument("--embedding-signature", help="its embedding signature (default serving_default)")
    pairs.add_argument(
        "--matching", default="default", choices=sorted(MATCHING_PRESETS), help="verification recipe preset"
    )
    pairs.add_argument("--ransac-model", choices=["affine", "homography", "fundamental"], help="default affine")
    pairs.add_argument("--ratio", type=float, help="Lowe ratio (default 0.9)")
    pairs.add_argument("--ransac-threshold", type=float, help="RANSAC reprojection threshold in px (default 12)")
    select = parser.add_argument_group("selection")
    select.add_argument("--min-inliers", type=int, help="inliers that make a verified edge (default 30)")
    select.add_argument("--min-component-size", type=int, help="smallest component kept (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return parser


# flag attribute -> (stage, config field)
_OVERRIDES = {
    "images_dir": ("fetch", "images_dir"),
    "allow_private_hosts": ("fetch", "allow_private_hosts"),
    "max_image_bytes": ("fetch", "max_bytes"),
    "max_side": ("decode", "max_side"),
    "extractor": ("features", "extractor"),
    "max_features": ("features", "max_features"),
    "pairs": ("pairs", "mode"),
    "pairs_k": ("pairs", "k"),
    "max_class_for_all": ("pairs", "max_class_for_all"),
    "seed": ("pairs", "seed"),
    "embedding_model": ("pairs", "embedding_model"),
    "embedding_signature": ("pairs", "embedding_signature"),
    "ransac_model": ("verify", "model"),
    "ratio": ("verify", "ratio"),
    "ransac_threshold": ("verify", "ransac_threshold"),
    "min_inliers": ("select", "min_inliers"),
    "min_component_size": ("select", "min_component_size"),
}


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for attr, (stage, name) in _OVERRIDES.items():
        value = getattr(args, attr)
        if value is not None and value is not False:
            overrides.setdefault(stage, {})[name] = value
    return overrides


def curate_main(argv: list[str]) -> int:
    from pipeline.curate import run_curation

    args, beam_args = _curate_parser().parse_known_args(argv)
    try:
        config = build_config(
            args.train_csv,
            args.output,
            args.preset,
            overrides_from(args),
            progress=not args.no_progress,
            matching=args.matching,
        )
        run = run_curation(config, beam_args)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"gld curate: error: {exc}", file=sys.stderr)
        return 2
    counts = run["counts"]
    print(
        json.dumps({"output": args.output, "by_status": counts["by_status"], "accounting_ok": counts["accounting_ok"]})
    )
    return 0 if counts["accounting_ok"] else 1


def demo_main(argv: list[str]) -> int:
    from pipeline.demo import run_demo

    parser = argparse.ArgumentParser(prog="gld demo", description="Offline demo with ground truth.")
    parser.add_argument("--output", default="demo-output", help="folder for the data and the curated outputs")
    parser.add_argument("--images", type=int, default=600, help="rows in the generated train.csv")
    parser.add_argument("--seed", type=int, default=0)
    args, beam_args = parser.parse_known_args(argv)
    result = run_demo(args.output, args.images, args.seed, beam_args)
    score, counts = result["score"], result["run"]["counts"]
    print(f"rows {counts['rows']}: {counts['by_status']}")
    for key, value in counts["by_reason"].items():
        print(f"  {key:40s} {value}")
    print(f"outputs: {result['run']['outputs']['train_clean']} (+ decisions.parquet, pairs.parquet, run.json)")
    print(
        f"against the truth: kept {score.kept}, precision {score.precision:.3f}, recall {score.recall:.3f}, "
        f"noise kept {score.noise_kept}, broken rows failed {score.broken_failed:.0%}; "
        f"{result['seconds']:.0f} s"
    )
    print(
        json.dumps(
            {
                "precision": round(score.precision, 4),
                "recall": round(score.recall, 4),
                "kept": score.kept,
                "accounting_ok": counts["accounting_ok"],
                "seconds": round(result["seconds"], 1),
            }
        )
    )
    return 0 if counts["accounting_ok"] else 1


COMMANDS = {"curate": curate_main, "demo": demo_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: gld {" + ",".join(COMMANDS) + "} [options]   (gld COMMAND --help for details)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
