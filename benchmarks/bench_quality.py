"""Curation quality against a known truth: precision, recall, noise kept, cost, per configuration.

Takes any folder DIR holding `train.csv` (GLDv2 `id,url,landmark_id`), `images/` (the GLDv2
layout `a/b/c/<id>.jpg`) and `truth.csv` (`id,landmark_id,role[,source]`, role `member`, `noise`
or `broken`; the format of `landmarks-dev` and of `gld demo`'s data). For each configuration
named on the command line it runs `gld curate --train-csv DIR/train.csv --images-dir DIR/images
--output WORK/NAME --no-progress FLAGS` in a fresh output folder (nothing reused between
configurations, so every run pays ingest, extraction and matching) and prints one JSON line:

- `config`, `flags`: the configuration's name and its `gld curate` flags;
- `precision`: kept rows that are true members (role `member`) of the class they are kept under,
  over kept rows; "kept" = the ids of `train_clean.csv` (the rows `decisions.parquet` marks
  `kept`);
- `recall`: kept members over `members`, the members of classes with at least 2 members (a lone
  image has nothing to verify with; on `landmarks-dev` that is every member);
- `noise_kept`, `noise_ids`: kept rows whose role is `noise`;
- `broken_failed`: broken rows that ended `failed`, over `broken` (1.0 when there are none);
- `kept`, `members`, `broken`, `rows` (decisions), `pairs` (rows of `pairs.parquet`: the
  candidate pairs verified), `accounting_ok` (run.json);
- `seconds`: wall seconds of the `gld curate` process, start-up included; `ms_per_image` =
  seconds / rows; `ms_per_pair` = seconds / pairs (both are whole-run costs spread over the
  unit, not the cost of one stage); `cpu_ms_per_image`: the whole run's CPU time (user +
  system of the process and its children) per row, start-up included: what a run costs on a
  shared machine, where wall time follows the load of others; `pairs_matched_per_image`:
  candidate pairs actually matched (not skipped by adaptive verification) per row;
  `features_cpu_ms_per_image` and `verify_cpu_ms_per_pair`: the busy time of those stages
  alone (summed over worker threads) per extracted image and per matched pair, as
  `cost_model.py` prices them;
- `peak_rss_mb`: the peak resident memory of the `gld curate` process (`wait4`'s rusage: the
  largest of the process and the children it waited for);
- `exit_code`: of `gld curate`; a failed run prints its line with the scores left out.

    python benchmarks/bench_quality.py --data ../shared/data/landmarks-dev \\
        --config default= --config official="--preset gldv2-official" \\
        --config sift-loose="--ransac-threshold 20" [--preset NAME ...] [--work DIR] [--keep]

`--preset NAME` is short for `--config NAME="--preset NAME"`; with no configuration at all the
default (`default=`) runs. Extra Beam flags go in a configuration's FLAGS like any other flag.
`--standard` runs `STANDARD`: SIFT (the `gldv2-components` preset), LightGlue verified
exhaustively, the same verified adaptively, the cascade verified exhaustively, and the default
run (the cascade verified adaptively):

    python benchmarks/bench_quality.py --data ../shared/data/landmarks-dev --standard
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from pipeline.curation.curate import output_paths
from pipeline.demo.run import TruthScore, score_against_truth
from schemas.vocabulary import PairReason
from transforms.plumbing.store import read_table

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder's cost model
from cost_model import per_item_seconds


@dataclass(frozen=True)
class Configuration:
    """One named set of `gld curate` flags."""

    name: str
    flags: tuple[str, ...]


#: The configurations of `--standard`, each one step from the last on the default's features
#: (ALIKED, 480 px): SIFT (the `gldv2-components` preset); LightGlue on every candidate; LightGlue
#: verified adaptively; the cascade on every candidate; the default (cascade, adaptive).
STANDARD = (
    Configuration("sift", ("--preset", "gldv2-components")),
    Configuration("learned-exhaustive", ("--matcher", "lightglue", "--verification", "exhaustive")),
    Configuration("learned-adaptive", ("--matcher", "lightglue")),
    Configuration("cascade-exhaustive", ("--verification", "exhaustive")),
    Configuration("default", ()),
)


@dataclass(frozen=True)
class Measured:
    """What one `gld curate` process cost: wall and CPU seconds (user + system, the process
    and the children it waited for) and peak resident memory."""

    exit_code: int
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float = 0.0


def parse_configuration(text: str) -> Configuration:
    """`NAME=FLAGS` (FLAGS split like a shell would; may be empty) -> Configuration."""
    name, sep, flags = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"a configuration is NAME=FLAGS, got {text!r}")
    if not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"configuration name {name!r} must be letters, digits, '-', '_' or '.' (a folder name)")
    return Configuration(name, tuple(shlex.split(flags)))


def configurations(named: list[str], presets: list[str], standard: bool = False) -> list[Configuration]:
    """`STANDARD` (with `standard`), then the `--config` and `--preset` arguments in order, names
    unique; `default=` when none."""
    chosen = list(STANDARD) if standard else []
    chosen += [parse_configuration(text) for text in named]
    chosen += [Configuration(preset, ("--preset", preset)) for preset in presets]
    names = [c.name for c in chosen]
    if len(set(names)) != len(names):
        raise ValueError(f"configuration names must be unique, got {names}")
    return chosen or [Configuration("default", ())]


def quality_line(
    configuration: Configuration,
    score: TruthScore | None,
    measured: Measured,
    rows: int,
    pairs: int,
    ok: bool,
    stage_seconds: dict[str, float] | None = None,
    matched: int | None = None,
) -> dict[str, Any]:
    """The JSON line of one configuration (see the module docstring); `score` None when the run
    failed; `stage_seconds`: `cost_model.per_item_seconds` of its run.json; `matched`: the pairs
    matched (default: every pair)."""
    matched = pairs if matched is None else matched
    line: dict[str, Any] = {"config": configuration.name, "flags": shlex.join(configuration.flags)}
    if score is not None:
        line |= {
            "precision": round(score.precision, 4),
            "recall": round(score.recall, 4),
            "noise_kept": score.noise_kept,
            "noise_ids": list(score.noise_ids),
            "broken_failed": round(score.broken_failed, 4),
            "kept": score.kept,
            "members": score.members,
            "broken": score.broken,
        }
    return line | {
        "rows": rows,
        "pairs": pairs,
        "pairs_matched": matched,
        "pairs_matched_per_image": round(matched / rows, 2) if rows else None,
        "accounting_ok": ok,
        "seconds": round(measured.seconds, 1),
        "cpu_ms_per_image": round(1000 * measured.cpu_seconds / rows, 1) if rows else None,
        "ms_per_image": round(1000 * measured.seconds / rows, 1) if rows else None,
        "ms_per_pair": round(1000 * measured.seconds / pairs, 1) if pairs else None,
        "features_cpu_ms_per_image": round(1000 * stage_seconds["features_s_per_image"], 1) if stage_seconds else None,
        "verify_cpu_ms_per_pair": round(1000 * stage_seconds["verify_s_per_pair"], 1) if stage_seconds else None,
        "peak_rss_mb": round(measured.peak_rss_mb),
        "exit_code": measured.exit_code,
    }


def run_gld(command: list[str], log_path: str) -> Measured:
    """Run `command` with stdout and stderr to `log_path`; its wall seconds and peak RSS."""
    with open(log_path, "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(process.returncode, seconds, usage.ru_maxrss / 1024, cpu)  # ru_maxrss is in KiB on Linux


def curate_command(gld: str, data: str, output: str, flags: tuple[str, ...]) -> list[str]:
    train_csv, images = os.path.join(data, "train.csv"), os.path.join(data, "images")
    return [
        gld,
        "curate",
        "--train-csv",
        train_csv,
        "--images-dir",
        images,
        "--output",
        output,
        "--no-progress",
        *flags,
    ]


def measure(configuration: Configuration, data: str, work: str, gld: str) -> dict[str, Any]:
    """Curate `data` with `configuration` into a fresh `work/<name>` and score it."""
    output = os.path.join(work, configuration.name)
    shutil.rmtree(output, ignore_errors=True)
    os.makedirs(output)
    log = os.path.join(work, f"{configuration.name}.log")
    measured = run_gld(curate_command(gld, data, output, configuration.flags), log)
    paths = output_paths(output)
    if measured.exit_code != 0 or not os.path.exists(paths["run_json"]):
        print(f"bench_quality: {configuration.name} exited {measured.exit_code}; see {log}", file=sys.stderr)
        return quality_line(configuration, None, measured, 0, 0, False)
    with open(paths["run_json"], encoding="utf-8") as handle:
        run = json.load(handle)
    counts = run["counts"]
    score = score_against_truth(paths["train_clean"], paths["decisions"], os.path.join(data, "truth.csv"))
    reasons = read_table(paths["pairs"], columns=["reason"]).column("reason").to_pylist()
    matched = sum(reason != PairReason.ALREADY_JOINED.value for reason in reasons)
    return quality_line(
        configuration,
        score,
        measured,
        counts["rows"],
        len(reasons),
        counts["accounting_ok"],
        per_item_seconds(run),
        matched,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder with train.csv, images/ and truth.csv")
    parser.add_argument(
        "--config", action="append", default=[], metavar="NAME=FLAGS", help="a configuration: its gld curate flags"
    )
    parser.add_argument(
        "--preset", action="append", default=[], metavar="NAME", help='short for --config NAME="--preset NAME"'
    )
    parser.add_argument("--standard", action="store_true", help="run the standard configurations first (STANDARD)")
    parser.add_argument("--work", help="where the outputs go (default: a temporary folder, removed unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the outputs and logs")
    parser.add_argument(
        "--gld",
        default=os.path.join(os.path.dirname(sys.executable), "gld"),
        help="gld command (default: beside python)",
    )
    args = parser.parse_args(argv)
    try:
        chosen = configurations(args.config, args.preset, args.standard)
    except ValueError as exc:
        parser.error(str(exc))
    for name in ("train.csv", "truth.csv", "images"):
        if not os.path.exists(os.path.join(args.data, name)):
            parser.error(f"{args.data} has no {name}")
    work = args.work or tempfile.mkdtemp(prefix="bench-quality-")
    os.makedirs(work, exist_ok=True)
    try:
        failed = 0
        for configuration in chosen:
            line = measure(configuration, args.data, work, args.gld)
            failed += line["exit_code"] != 0
            print(json.dumps(line), flush=True)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
