"""The option parsing of `gld review` (see `pipeline.review.app` and `pipeline.review.export`)."""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.review.queues import DEFAULT_PORT, QUEUE_LIMIT


def review_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gld review",
        description="Judge a finished run by eye in a local web page (127.0.0.1 only): the audit's findings, "
        "removed images beside kept ones, the weakest kept edges, isolated components. Each verdict (keep, "
        "remove, relabel) is appended to DIR/reviews.csv; `gld select --output DIR --reviews DIR/reviews.csv` "
        "applies them.",
    )
    parser.add_argument("--output", required=True, help="the --output folder of a finished gld curate run (local)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"loopback port, 0 for a free one (default {DEFAULT_PORT})"
    )
    parser.add_argument("--limit", type=int, default=QUEUE_LIMIT, help=f"items per queue (default {QUEUE_LIMIT})")
    parser.add_argument(
        "--export",
        metavar="FOLDER",
        help="instead of serving, write the verdicts with their images to FOLDER (verdicts.csv, reviews.csv, "
        "images/, index.html) for an offline check",
    )
    return parser


def _listening(url: str) -> None:
    print(f"gld review: {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)


def review_main(argv: list[str]) -> int:
    from pipeline.curation.run_folder import finished_run
    from pipeline.review.app import ReviewConfig, serve
    from pipeline.review.export import export_reviews

    args = review_parser().parse_args(argv)
    try:
        config = ReviewConfig(args.output, args.port, args.limit)
        if args.export:
            print(
                json.dumps(export_reviews(args.output, finished_run(args.output, "gld review --export"), args.export))
            )
            return 0
        serve(config, ready=_listening)
    except KeyboardInterrupt:
        return 0
    except (ValueError, KeyError, OSError) as exc:
        print(f"gld review: error: {exc}", file=sys.stderr)
        return 2
    return 0
