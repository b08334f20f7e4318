"""Adaptive against exhaustive verification on the same data: same split, how many pairs matched.

For each policy it runs `gld curate` with `--verification adaptive` into WORK/<policy>-adaptive,
copies that folder (its image, feature and verified-pair stores) to WORK/<policy>-exhaustive and
runs `--verification exhaustive` there: the stored pairs are reused as a cache, which decides
exactly as a fresh run, so only the pairs adaptive verification skipped are matched again. Then
it compares the two folders and prints one JSON line per policy:

- `train_clean_identical`: `train_clean.csv` byte for byte;
- `decisions_identical`: every row of `decisions.parquet` in every column that states a decision
  (`id`, `line`, `landmark_id`, `status`, `reason`, `stage`, `detail`, `component_id`,
  `component_size`); `evidence_differs`: the rows whose `degree`, `max_inliers` or
  `best_partner` differ (these count matched pairs only, so they can be lower where pairs were
  skipped);
- `candidates`, `matched`, `matched_fraction`: candidate pairs and those adaptive verification matched;
- `unsafe_skips`: skipped pairs the run's own rule would not skip on the final graph (0 = exact).

    python benchmarks/bench_adaptive.py --data ../shared/data/landmarks-dev [--flags "--preset gldv2-components"]
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
from collections import defaultdict

import pyarrow.parquet as pq

from schemas.tables import pair_from_row
from transforms.matching.rounds import SKIPPED, SkipRule, unsafe_skips
from transforms.selection.select import SelectConfig

DECISION_COLUMNS = (
    "id",
    "line",
    "landmark_id",
    "status",
    "reason",
    "stage",
    "detail",
    "component_id",
    "component_size",
)
EVIDENCE_COLUMNS = ("degree", "max_inliers", "best_partner")
POLICIES = {"components": [], "degree": ["--policy", "degree"]}


def compare(adaptive: str, exhaustive: str) -> dict:
    """The comparison of two finished run folders (see the module docstring)."""
    with (
        open(os.path.join(adaptive, "train_clean.csv"), "rb") as a,
        open(os.path.join(exhaustive, "train_clean.csv"), "rb") as b,
    ):
        same_split = a.read() == b.read()
    rows_a = pq.read_table(os.path.join(adaptive, "decisions.parquet")).to_pylist()
    rows_e = pq.read_table(os.path.join(exhaustive, "decisions.parquet")).to_pylist()
    decided = len(rows_a) == len(rows_e) and all(
        all(x[c] == y[c] for c in DECISION_COLUMNS) for x, y in zip(rows_a, rows_e, strict=True)
    )
    evidence = sum(any(x[c] != y[c] for c in EVIDENCE_COLUMNS) for x, y in zip(rows_a, rows_e, strict=False))
    with open(os.path.join(adaptive, "run.json"), encoding="utf-8") as handle:
        select = SelectConfig(**json.load(handle)["config"]["select"])
    pairs = [pair_from_row(row) for row in pq.read_table(os.path.join(adaptive, "pairs.parquet")).to_pylist()]
    by_class = defaultdict(list)
    for pair in pairs:
        by_class[pair.landmark_id].append(pair)
    unsafe = sum(len(unsafe_skips(group, SkipRule.of(select))) for group in by_class.values())
    matched = sum(pair.reason != SKIPPED for pair in pairs)
    return {
        "train_clean_identical": same_split,
        "decisions_identical": decided,
        "evidence_differs": evidence,
        "candidates": len(pairs),
        "matched": matched,
        "matched_fraction": round(matched / max(1, len(pairs)), 3),
        "unsafe_skips": unsafe,
    }


def _curate(gld: str, data: str, output: str, flags: list[str]) -> None:
    command = [gld, "curate", "--train-csv", os.path.join(data, "train.csv"), "--output", output]
    command += ["--images-dir", os.path.join(data, "images"), "--no-progress", *flags]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder with train.csv and images/")
    parser.add_argument("--flags", default="", help="more gld curate flags for every run")
    parser.add_argument("--work", help="where the runs go (default: a temporary folder, removed)")
    parser.add_argument("--gld", default=os.path.join(os.path.dirname(sys.executable), "gld"))
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="bench-adaptive-")
    try:
        for policy, policy_flags in POLICIES.items():
            flags = [*shlex.split(args.flags), *policy_flags]
            adaptive, exhaustive = os.path.join(work, f"{policy}-adaptive"), os.path.join(work, f"{policy}-exhaustive")
            shutil.rmtree(adaptive, ignore_errors=True)
            shutil.rmtree(exhaustive, ignore_errors=True)
            _curate(args.gld, args.data, adaptive, [*flags, "--verification", "adaptive"])
            shutil.copytree(adaptive, exhaustive)
            _curate(args.gld, args.data, exhaustive, [*flags, "--verification", "exhaustive"])
            print(
                json.dumps({"policy": policy, "flags": shlex.join(flags), **compare(adaptive, exhaustive)}), flush=True
            )
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
