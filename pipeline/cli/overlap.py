"""The option parsing of `gld overlap` (see `pipeline.curation.overlap`)."""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.cli.strict import parse_strictly
from pipeline.curation.overlap import OverlapRunConfig, run_overlap


def overlap_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gld overlap",
        description="Find the images of a finished curation's splits that show what an evaluation set shows "
        "(global-descriptor kNN across the two sets, verified with the curation's matcher), and optionally "
        "write the splits without them. Outputs go to DIR/overlap/<eval name>/. Unknown flags go to Beam.",
    )
    parser.add_argument("--output", required=True, help="the --output folder of a finished gld curate run")
    parser.add_argument(
        "--eval-images",
        required=True,
        help="image folder (a/b/c/<id>.jpg or flat <name>.jpg), folder of images_NNN.tar shards, "
        "gld ingest store folder, id,url CSV, or revisitop gnd_*.pkl",
    )
    parser.add_argument("--eval-name", default="", help="name of the output folder (default: from --eval-images)")
    parser.add_argument(
        "--eval-dir", default="", help="image folder of a gnd_*.pkl or CSV list (default: jpg/ beside it)"
    )
    parser.add_argument(
        "--exclude", choices=["classes", "images"], help="also write train_clean/c2x without the overlapping ..."
    )
    parser.add_argument("--pairs-k", type=int, help="partners each image proposes (default: the run's --pairs-k)")
    parser.add_argument("--min-inliers", type=int, help="inliers of a verified overlap (default: the run's)")
    parser.add_argument("--embedding-model", help="global descriptor model (default: the run's)")
    parser.add_argument("--clean-only", action="store_true", help="check train_clean.csv only, not c2x")
    parser.add_argument("--retry-failed", action="store_true", help="fetch again evaluation rows that failed before")
    parser.add_argument("--allow-private-hosts", action="store_true", help="allow loopback/private hosts")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return parser


def overlap_main(argv: list[str]) -> int:
    args, beam_args = parse_strictly(overlap_parser(), argv)
    try:
        config = OverlapRunConfig(
            output=args.output,
            eval_images=args.eval_images,
            eval_name=args.eval_name,
            eval_dir=args.eval_dir,
            exclude=args.exclude or "",
            k=args.pairs_k,
            min_inliers=args.min_inliers,
            embedding_model=args.embedding_model,
            include_c2x=not args.clean_only,
            retry_failed=args.retry_failed,
            allow_private_hosts=args.allow_private_hosts,
            progress=not args.no_progress,
        )
        counts = run_overlap(config, beam_args)
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
        print(f"gld overlap: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts, sort_keys=True))
    return 0 if counts["accounting_ok"] else 1
