"""The `gld` command line. Project flags are parsed here; every other flag is handed to Beam."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
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

from pipeline.cli.baselines import BASELINE_COMMANDS, demo_baselines  # noqa: E402
from pipeline.cli.overlap import overlap_main  # noqa: E402
from pipeline.curation.config import MATCHING_PRESETS, PRESETS, CurateConfig, build_config  # noqa: E402 - logging must be set before Beam is imported
from transforms.extractors.config import DEFAULT_MAX_FEATURES, DEFAULT_WORKING_SIDE  # noqa: E402
from transforms.extractors.registry import EXTRACTORS  # noqa: E402
from transforms.verify import MATCHERS  # noqa: E402


def _add_ingest_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-csv", required=True, help="manifest with columns id,url,landmark_id (any Beam path)")
    parser.add_argument("--output", required=True, help="output folder (any Beam path); re-runs reuse its images")
    fetch = parser.add_argument_group("ingest")
    fetch.add_argument("--images-dir", help="read <dir>/a/b/c/<id>.jpg instead of downloading the urls")
    fetch.add_argument("--tar-dir", help="read the official images_NNN.tar shards (and md5 files) here")
    fetch.add_argument(
        "--retry-failed", action="store_true", default=None, help="fetch again the rows an earlier run failed on"
    )
    fetch.add_argument(
        "--allow-private-hosts", action="store_true", default=None, help="allow loopback/private hosts (tests, demo)"
    )
    fetch.add_argument("--max-image-bytes", type=int, help="cap on one image's bytes (default 30 MiB)")
    fetch.add_argument("--max-side", type=int, help="longest side after normalisation (default 1024)")
    fetch.add_argument("--jpeg-quality", type=int, help="quality of the stored JPEG (default 90)")
    fetch.add_argument("--fetch-threads", type=int, help="concurrent downloads per worker (default 16)")
    fetch.add_argument("--max-per-host", type=int, help="concurrent requests to one host per worker (default 8)")
    fetch.add_argument("--per-host-rps", type=float, help="request starts per second per host and worker (0: no cap)")
    fetch.add_argument("--user-agent", help="User-Agent header sent with every request")
    fetch.add_argument("--timeout", type=float, help="total seconds for one image, retries included (default 60)")
    fetch.add_argument("--retries", type=int, help="retries on connection errors, 429 and 5xx (default 2)")
    fetch.add_argument(
        "--store-part-rows", type=int, help="images per store part; smaller parts lose less when a run is killed"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def _ingest_parser(prog: str = "gld ingest", description: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description
        or "Fetch, decode and store the images of a train.csv (resumable); `gld curate` with the same "
        "--output reuses them. Unknown flags go to Beam.",
    )
    _add_ingest_flags(parser)
    return parser


def _add_select_flags(parser: argparse.ArgumentParser) -> None:
    select = parser.add_argument_group("selection")
    select.add_argument("--min-inliers", type=int, help="inliers that make a verified edge (default 30)")
    select.add_argument("--min-component-size", type=int, help="smallest component kept (default 2)")
    select.add_argument("--policy", choices=["components", "degree"], help="selection rule (default components)")
    select.add_argument(
        "--keep-largest-component",
        action="store_true",
        default=None,
        help="components policy: keep only a class's largest",
    )
    select.add_argument("--min-degree", type=int, help="degree policy: verified pairs an image needs (default 3)")
    select.add_argument("--min-class-size", type=int, help="survivors a class needs to be kept (default 2)")
    select.add_argument(
        "--drop-isolated-components",
        action=argparse.BooleanOptionalAction,
        help="components policy: remove a small component beside a larger one of its class that no pair links "
        "to the rest of the class (default: on in gldv2-components)",
    )
    select.add_argument(
        "--isolated-max-size", type=int, help="largest component the isolated rule may remove (default 2)"
    )
    select.add_argument(
        "--isolation-inliers",
        type=int,
        help="a pair with this many inliers to the rest of the class keeps a component (default 15)",
    )


def _curate_parser() -> argparse.ArgumentParser:
    parser = _ingest_parser(
        "gld curate",
        "Clean a GLDv2-style train.csv into train_clean.csv. Unknown flags go to Beam "
        "(--runner, --direct_num_workers, --project, ...).",
    )
    parser.add_argument("--preset", default="gldv2-components", choices=sorted(PRESETS))
    parser.add_argument(
        "--dry-run", action="store_true", help="build the job offline and print its steps and resource hints (JSON)"
    )
    features = parser.add_argument_group("features")
    features.add_argument(
        "--extractor",
        choices=sorted(EXTRACTORS),
        help="local feature extractor (default sift; aliked needs the learned extra)",
    )
    features.add_argument(
        "--max-features",
        type=int,
        help="strongest features kept per image (default: "
        + ", ".join(f"{name} {count}" for name, count in DEFAULT_MAX_FEATURES.items())
        + ")",
    )
    features.add_argument(
        "--working-side",
        type=int,
        help="longest side SIFT or ALIKED sees (default: "
        + ", ".join(f"{name} {side}" for name, side in DEFAULT_WORKING_SIDE.items() if name != "delf")
        + ")",
    )
    features.add_argument("--descriptor-dtype", choices=["float16", "float32", "uint8"], help="stored descriptors")
    features.add_argument(
        "--delf-model", help="DELF TF-Hub handle or SavedModel path (default tfhub.dev/google/delf/1)"
    )
    features.add_argument(
        "--gpu-accelerator",
        help="Beam accelerator hint for the feature step only, e.g. "
        "'type:nvidia-tesla-t4;count:1;install-nvidia-driver'",
    )
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
    pairs.add_argument(
        "--matcher",
        choices=list(MATCHERS),
        help="nn: nearest neighbours + ratio/mutual tests (default); lightglue: LightGlue on ALIKED features",
    )
    pairs.add_argument("--ratio", type=float, help="Lowe ratio (default 0.9)")
    pairs.add_argument("--ransac-threshold", type=float, help="RANSAC reprojection threshold in px (default 12)")
    _add_select_flags(parser)
    parser.add_argument(
        "--no-audit", action="store_true", help="skip the label-noise audit (audit.parquet stays empty)"
    )
    return parser


# flag attribute -> (stage, config field)
_OVERRIDES = {
    "images_dir": ("fetch", "images_dir"),
    "tar_dir": ("fetch", "tar_dir"),
    "retry_failed": ("fetch", "retry_failed"),
    "allow_private_hosts": ("fetch", "allow_private_hosts"),
    "max_image_bytes": ("fetch", "max_bytes"),
    "fetch_threads": ("fetch", "threads"),
    "max_per_host": ("fetch", "max_per_host"),
    "per_host_rps": ("fetch", "per_host_rps"),
    "user_agent": ("fetch", "user_agent"),
    "timeout": ("fetch", "total_timeout_s"),
    "retries": ("fetch", "retries"),
    "max_side": ("decode", "max_side"),
    "jpeg_quality": ("decode", "jpeg_quality"),
    "store_part_rows": ("store", "part_rows"),
    "extractor": ("features", "extractor"),
    "max_features": ("features", "max_features"),
    "descriptor_dtype": ("features", "descriptor_dtype"),
    "working_side": ("features", "working_side"),
    "delf_model": ("features", "delf_model"),
    "gpu_accelerator": ("features", "gpu_accelerator"),
    "pairs": ("pairs", "mode"),
    "pairs_k": ("pairs", "k"),
    "max_class_for_all": ("pairs", "max_class_for_all"),
    "seed": ("pairs", "seed"),
    "embedding_model": ("pairs", "embedding_model"),
    "embedding_signature": ("pairs", "embedding_signature"),
    "ransac_model": ("verify", "model"),
    "matcher": ("verify", "matcher"),
    "ratio": ("verify", "ratio"),
    "ransac_threshold": ("verify", "ransac_threshold"),
    "min_inliers": ("select", "min_inliers"),
    "min_component_size": ("select", "min_component_size"),
    "policy": ("select", "policy"),
    "keep_largest_component": ("select", "largest_component_only"),
    "min_degree": ("select", "min_degree"),
    "min_class_size": ("select", "min_class_size"),
    "drop_isolated_components": ("select", "drop_isolated_components"),
    "isolated_max_size": ("select", "isolated_max_size"),
    "isolation_inliers": ("select", "isolation_inliers"),
}


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The stage settings the flags given set (stage -> field -> value). A flag left out is None
    (on-switches too: `default=None`) and leaves the preset's value; `--no-...` gives False."""
    overrides: dict[str, dict[str, Any]] = {}
    for attr, (stage, name) in _OVERRIDES.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.setdefault(stage, {})[name] = value
    return overrides


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

    args, beam_args = _curate_parser().parse_known_args(argv)
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
    print(
        json.dumps({"output": args.output, "by_status": counts["by_status"], "accounting_ok": counts["accounting_ok"]})
    )
    return 0 if counts["accounting_ok"] else 1


def ingest_main(argv: list[str]) -> int:
    from pipeline.curation.ingest import run_ingest

    args, beam_args = _ingest_parser().parse_known_args(argv)
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


def demo_main(argv: list[str]) -> int:
    from pipeline.demo.run import run_demo

    parser = argparse.ArgumentParser(prog="gld demo", description="Offline demo with ground truth.")
    parser.add_argument("--output", default="demo-output", help="folder for the data and the curated outputs")
    parser.add_argument("--images", type=int, default=600, help="rows in the generated train.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--with-baselines", action="store_true", help="then export, train (CPU, minutes) and evaluate retrieval"
    )
    parser.add_argument("--baseline-steps", type=int, default=1000, help="training steps of --with-baselines")
    args, beam_args = parser.parse_known_args(argv)
    result = run_demo(args.output, args.images, args.seed, beam_args)
    score, counts = result["score"], result["run"]["counts"]
    print(f"rows {counts['rows']}: {counts['by_status']}")
    for key, value in counts["by_reason"].items():
        print(f"  {key:40s} {value}")
    print(f"outputs: {result['run']['outputs']['train_clean']} (+ decisions, pairs, audit, report.html, run.json)")
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
    if args.with_baselines:
        demo_baselines(args.output, args.baseline_steps, beam_args)
    return 0 if counts["accounting_ok"] else 1


def select_main(argv: list[str]) -> int:
    from pipeline.curation.reselect import run_reselection

    parser = argparse.ArgumentParser(
        prog="gld select",
        description="Re-select a finished `gld curate --output DIR` with other selection settings, from its "
        "stored pair results: no feature extraction, no matching. Rewrites decisions, train_clean.csv, c2x, "
        "audit, report.html and run.json, byte-identical to a fresh curate with the same settings.",
    )
    parser.add_argument("--output", required=True, help="the --output folder of a finished gld curate run")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="take the selection part of this preset")
    _add_select_flags(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    args, beam_args = parser.parse_known_args(argv)
    select = overrides_from(args).get("select", {})
    try:
        run = run_reselection(args.output, args.preset, select, beam_args, progress=not args.no_progress)
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
        print(f"gld select: error: {exc}", file=sys.stderr)
        return 2
    counts = run["counts"]
    summary = {"output": args.output, "by_status": counts["by_status"], "accounting_ok": counts["accounting_ok"]}
    print(json.dumps({**summary, "seconds": run["seconds"]["select_wall"]}))
    return 0 if counts["accounting_ok"] else 1


def compare_main(argv: list[str]) -> int:
    from pipeline.curation.compare import agreement, class_disagreements, format_table, read_split

    parser = argparse.ArgumentParser(
        prog="gld compare",
        description="Agreement of two train_clean.csv splits: one JSON line on stdout, then the classes "
        "that disagree most as a table on stderr.",
    )
    parser.add_argument("--clean", required=True, help="our train_clean.csv (precision is over it)")
    parser.add_argument("--reference", required=True, help="reference train_clean.csv (recall is over it)")
    parser.add_argument("--top", type=int, default=20, help="classes listed in the table")
    args = parser.parse_args(argv)
    try:
        ours, ref = read_split(args.clean), read_split(args.reference)
    except (ValueError, OSError) as exc:
        print(f"gld compare: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(agreement(ours, ref), sort_keys=True))
    sys.stdout.flush()
    print(format_table(class_disagreements(ours, ref, args.top)), file=sys.stderr)
    return 0


def audit_main(argv: list[str]) -> int:
    from pipeline.report.page import build_report

    parser = argparse.ArgumentParser(prog="gld audit", description="Rebuild report.html from a gld curate output.")
    parser.add_argument("--output", required=True, help="the --output folder of a gld curate run")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.output)
    except (ValueError, KeyError, OSError) as exc:
        print(f"gld audit: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"report": path}))
    return 0


def make_tiny_delf_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gld make-tiny-delf",
        description="Write a tiny SavedModel with DELF's serving signature (simple real local features), "
        "for `gld curate --extractor delf --delf-model DIR` without DELF's weights.",
    )
    parser.add_argument("dir", help="folder to write the SavedModel to")
    args = parser.parse_args(argv)
    # imported here: TensorFlow takes seconds to import
    from transforms.extractors.tiny_delf import build_tiny_delf

    print(build_tiny_delf(args.dir))
    return 0


def curate_flags() -> frozenset[str]:
    """The long options of `gld curate` (e.g. `--train-csv`)."""
    parser = _curate_parser()
    return frozenset(s for action in parser._actions for s in action.option_strings if s.startswith("--"))


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
}
COMMANDS.update(BASELINE_COMMANDS)
COMMANDS["overlap"] = overlap_main


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
