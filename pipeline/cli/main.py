"""The `gld` command line. Project flags are parsed here; every other flag is handed to Beam."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any


class _DropOptionalGcpNotice(logging.Filter):
    """Beam logs that GCP client libraries are absent at every import; irrelevant offline."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


class _DropRunInferenceMemoryNotice(logging.Filter):
    """Beam's RunInference cannot measure model memory without torch installed and says so at
    every model load; the features still come out right."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "memory usage cannot be fetched" not in record.getMessage()


def _configure_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_DropOptionalGcpNotice())
    handler.addFilter(_DropRunInferenceMemoryNotice())
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


_configure_logging()

from pipeline.cli.baselines import BASELINE_COMMANDS, BASELINE_PARSERS, demo_baselines  # noqa: E402
from pipeline.cli.overlap import overlap_main, overlap_parser  # noqa: E402
from pipeline.cli.review import review_main, review_parser  # noqa: E402
from pipeline.cli.settings import (  # noqa: E402
    CURATE_RUN_FLAGS,
    FEATURES,
    INGEST,
    INGEST_RUN_FLAGS,
    PAIRS,
    SELECT_RUN_FLAGS,
    SELECTION,
    add_settings,
    curate_flags,
    overrides_from,
)
from pipeline.cli.strict import parse_strictly  # noqa: E402
from pipeline.cli.summary import print_summary  # noqa: E402
from pipeline.curation.config import CurateConfig, build_config  # noqa: E402 - logging must be set before Beam is imported


def _parser(
    prog: str, description: str, run_flags: tuple[tuple[str, dict[str, Any]], ...], groups: tuple[str, ...]
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for flag, options in run_flags:
        parser.add_argument(flag, **options)
    add_settings(parser, groups)
    return parser


def _ingest_parser() -> argparse.ArgumentParser:
    return _parser(
        "gld ingest",
        "Fetch, decode and store the images of a train.csv (resumable); `gld curate` with the same "
        "--output reuses them. Unknown flags go to Beam.",
        INGEST_RUN_FLAGS,
        (INGEST,),
    )


def _curate_parser() -> argparse.ArgumentParser:
    return _parser(
        "gld curate",
        "Clean a GLDv2-style train.csv into train_clean.csv. Unknown flags go to Beam "
        "(--runner, --direct_num_workers, --project, ...).",
        CURATE_RUN_FLAGS,
        (INGEST, FEATURES, PAIRS, SELECTION),
    )


def _select_parser() -> argparse.ArgumentParser:
    return _parser(
        "gld select",
        "Re-select a finished `gld curate --output DIR` with other selection settings, from its "
        "stored pair results: no feature extraction, no matching. Rewrites decisions, train_clean.csv, c2x, "
        "audit, report.html and run.json, byte-identical to a fresh curate with the same settings. "
        "Unknown flags go to Beam.",
        SELECT_RUN_FLAGS,
        (SELECTION,),
    )


def _dry_run(config: CurateConfig, beam_args: list[str]) -> int:
    from pipeline.curation.plan import plan_curation

    plan = plan_curation(config, beam_args)
    if plan["job_wide_accelerator"]:
        print(
            f"gld curate: {plan['job_wide_accelerator']} would put a GPU on every worker; "
            "use --gpu-accelerator, which puts it on the feature step only",
            file=sys.stderr,
        )
    if plan["local_paths"]:
        print(
            f"gld curate: {', '.join(plan['local_paths'])} are local paths, which {plan['runner']} workers "
            "cannot reach: use gs:// paths",
            file=sys.stderr,
        )
    print(json.dumps(plan))
    return 1 if plan["job_wide_accelerator"] or plan["local_paths"] else 0


def curate_main(argv: list[str]) -> int:
    from pipeline.curation.curate import run_curation

    args, beam_args = parse_strictly(_curate_parser(), argv)
    overrides = overrides_from(args)
    if args.no_audit:
        overrides.setdefault("audit", {})["enabled"] = False
    try:
        config = build_config(
            args.train_csv, args.output, args.preset, overrides, progress=not args.no_progress, matching=args.matching
        )
        if args.dry_run:
            return _dry_run(config, beam_args)
        run = run_curation(config, beam_args)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"gld curate: error: {exc}", file=sys.stderr)
        return 2
    counts = run["counts"]
    last = {"output": args.output, "by_status": counts["by_status"], "accounting_ok": counts["accounting_ok"]}
    print_summary(run, last, json_only=args.json)
    return 0 if counts["accounting_ok"] else 1


def ingest_main(argv: list[str]) -> int:
    from pipeline.curation.ingest import run_ingest

    args, beam_args = parse_strictly(_ingest_parser(), argv)
    try:
        overrides = overrides_from(args)
        config = build_config(args.train_csv, args.output, overrides=overrides, progress=not args.no_progress)
        stats = run_ingest(config, beam_args)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"gld ingest: error: {exc}", file=sys.stderr)
        return 2
    summary = {key: stats[key] for key in ("rows", "stored", "reused", "failed_total", "images_per_s", "accounting_ok")}
    print(json.dumps({"output": args.output, **summary}))
    return 0 if stats["accounting_ok"] else 1


def _demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gld demo",
        description="Offline demo with ground truth: generate a landmark-like dataset, serve it on loopback, "
        "curate it and score the kept images against the truth. Unknown flags go to Beam.",
    )
    parser.add_argument("--output", default="demo-output", help="folder for the data and the curated outputs")
    parser.add_argument("--images", type=int, default=600, help="rows in the generated train.csv")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated dataset")
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="loopback port to serve the images on (default: a free one); "
        "the URLs name it, so runs on one port give byte-identical outputs",
    )
    parser.add_argument(
        "--with-baselines", action="store_true", help="then export, train (CPU, minutes) and evaluate retrieval"
    )
    parser.add_argument("--baseline-steps", type=int, default=1000, help="training steps of --with-baselines")
    return parser


def demo_main(argv: list[str]) -> int:
    from pipeline.demo.run import run_demo

    args, beam_args = parse_strictly(_demo_parser(), argv)
    try:
        result = run_demo(args.output, args.images, args.seed, beam_args, args.port)
    except OSError as exc:
        print(f"gld demo: error: {exc}", file=sys.stderr)
        return 2
    score, counts = result["score"], result["run"]["counts"]
    truth = (
        f"against the truth: kept {score.kept}, precision {score.precision:.3f}, recall {score.recall:.3f}, "
        f"noise kept {score.noise_kept}, broken rows failed {score.broken_failed:.0%}; "
        f"{result['seconds']:.0f} s"
    )
    last = {
        "precision": round(score.precision, 4),
        "recall": round(score.recall, 4),
        "kept": score.kept,
        "accounting_ok": counts["accounting_ok"],
        "seconds": round(result["seconds"], 1),
    }
    print_summary(result["run"], last, more=[truth])
    if args.with_baselines:
        demo_baselines(args.output, args.baseline_steps, beam_args)
    return 0 if counts["accounting_ok"] else 1


def select_main(argv: list[str]) -> int:
    from pipeline.cli.settings import flags_of
    from pipeline.curation.reselect import SkippedPairsNeeded, run_reselection

    args, beam_args = parse_strictly(_select_parser(), argv)
    select = overrides_from(args).get("select", {})
    try:
        run = run_reselection(args.output, args.preset, select, beam_args, progress=not args.no_progress)
    except SkippedPairsNeeded as exc:
        command = shlex.join(["gld", "curate", "--train-csv", exc.config.train_csv, *flags_of(exc.config)])
        print(
            f"gld select: error: {exc} (their images were already joined at the run's settings); match them, "
            f"reusing every stored image, feature set and verified pair, with: {command}",
            file=sys.stderr,
        )
        return 2
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
        print(f"gld select: error: {exc}", file=sys.stderr)
        return 2
    counts = run["counts"]
    summary = {"output": args.output, "by_status": counts["by_status"], "accounting_ok": counts["accounting_ok"]}
    if "review" in run["counters"]:  # verdicts applied, changed, and the counted errors of --reviews
        summary["reviews"] = run["counters"]["review"]
    print_summary(run, {**summary, "seconds": run["seconds"]["select_wall"]}, json_only=args.json)
    return 0 if counts["accounting_ok"] else 1


def _compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gld compare",
        description="Agreement of two train_clean.csv splits: one JSON line on stdout, then the classes "
        "that disagree most as a table on stderr.",
    )
    parser.add_argument("--clean", required=True, help="our train_clean.csv (precision is over it)")
    parser.add_argument("--reference", required=True, help="reference train_clean.csv (recall is over it)")
    parser.add_argument("--top", type=int, default=20, help="classes listed in the table")
    return parser


def compare_main(argv: list[str]) -> int:
    from pipeline.curation.compare import agreement, class_disagreements, format_table, read_split

    args = _compare_parser().parse_args(argv)
    try:
        ours, ref = read_split(args.clean), read_split(args.reference)
    except (ValueError, OSError) as exc:
        print(f"gld compare: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(agreement(ours, ref), sort_keys=True))
    sys.stdout.flush()
    print(format_table(class_disagreements(ours, ref, args.top)), file=sys.stderr)
    return 0


def _audit_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gld audit", description="Rebuild report.html from a gld curate output.")
    parser.add_argument("--output", required=True, help="the --output folder of a gld curate run")
    return parser


def audit_main(argv: list[str]) -> int:
    from pipeline.curation.run_folder import finished_run, locked
    from pipeline.report.page import build_report

    args = _audit_parser().parse_args(argv)
    try:
        with locked(args.output, "gld audit", create=False):  # it rewrites report.html: one writer at a time
            finished_run(args.output, "gld audit")
            path = build_report(args.output)
    except (ValueError, KeyError, OSError) as exc:
        print(f"gld audit: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"report": path}))
    return 0


def _make_tiny_delf_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gld make-tiny-delf",
        description="Write a tiny SavedModel with DELF's serving signature (simple real local features), "
        "for `gld curate --extractor delf --delf-model DIR` without DELF's weights.",
    )
    parser.add_argument("dir", help="folder to write the SavedModel to")
    return parser


def make_tiny_delf_main(argv: list[str]) -> int:
    args = _make_tiny_delf_parser().parse_args(argv)
    # imported here: TensorFlow takes seconds to import
    from transforms.features.extractors.tiny_delf import build_tiny_delf

    print(build_tiny_delf(args.dir))
    return 0


def _template_metadata_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="gld template-metadata",
        description="Print the Dataflow flex template's metadata, made from the gld curate flags "
        "(gld template-metadata > deploy/dataflow/metadata.json).",
    )


def template_metadata_main(argv: list[str]) -> int:
    from pipeline.cli.template import template_metadata_text

    _template_metadata_parser().parse_args(argv)
    sys.stdout.write(template_metadata_text())
    return 0


def from_template_args(argv: list[str]) -> list[str]:
    """Dataflow flex templates pass parameters as `--name=value` with underscores; turn those
    naming a `gld curate` flag into its hyphenated spelling, leave Beam's options as they are,
    and drop boolean flags passed as `=false`."""
    flags = curate_flags()
    out = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        hyphenated = name.replace("_", "-")
        if not name.startswith("--") or hyphenated not in flags:
            out.append(arg)
        elif value.lower() in ("true", "false") and sep:
            out += [hyphenated] if value.lower() == "true" else []
        else:
            out.append(f"{hyphenated}{sep}{value}")
    return out


COMMANDS = {
    "ingest": ingest_main,
    "curate": curate_main,
    "demo": demo_main,
    "compare": compare_main,
    "audit": audit_main,
    "select": select_main,
    "make-tiny-delf": make_tiny_delf_main,
    "template-metadata": template_metadata_main,
}
COMMANDS.update(BASELINE_COMMANDS)
COMMANDS["overlap"] = overlap_main
COMMANDS["review"] = review_main

#: The parser of every command, by name (the CLI reference, docs/reference/cli.md, is made from them).
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "ingest": _ingest_parser,
    "curate": _curate_parser,
    "demo": _demo_parser,
    "compare": _compare_parser,
    "audit": _audit_parser,
    "select": _select_parser,
    "make-tiny-delf": _make_tiny_delf_parser,
    "template-metadata": _template_metadata_parser,
    **BASELINE_PARSERS,
    "overlap": overlap_parser,
    "review": review_parser,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: gld {" + ",".join(COMMANDS) + "} [options]   (gld COMMAND --help for details)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


def run() -> None:
    """The `gld` console command: `main`, then leave without tearing the interpreter down.

    Every output is written and closed when `main` returns. Where PyTorch is installed (the
    `learned` extra), Beam 2.77's `RunInference` module imports it in every process, and the
    interpreter's teardown then sometimes aborts with `terminate called without an active
    exception` (exit 134, after the job succeeded: 1 of 3 demo runs) while native threads are
    still alive. `os._exit` skips that teardown once the streams are flushed; an exception
    still ends the usual way, with its traceback."""
    try:
        code: int | str | None = main()
    except SystemExit as stop:  # argparse's --help and usage errors
        code = stop.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code or 0)


if __name__ == "__main__":
    run()
