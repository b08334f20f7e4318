"""Kill a curation half-way through verification, resume it, and count what it verified again.

Runs `gld curate` once uninterrupted (the reference, and the number of candidate pairs), then
again into a fresh folder, reading its progress line and sending SIGKILL once the verified
pairs reach `--kill-at` of the total, then resumes that folder with the same command. The
resumed run's counters say how many pairs it matched again (`verify/<outcome>`) and how many
it took from the verified store (`verify/reused`).

    .venv/bin/python benchmarks/bench_resume.py --train-csv data/train.csv --images-dir data/images

Last line: {"pairs", "killed_at_verified", "reverified", "reverified_fraction", "reused",
"outputs_equal"}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from schemas.vocabulary import PAIR_OUTCOMES

_PROGRESS = re.compile(r"\bverify (\d+)")
_COMPARED = ("train_clean.csv", "decisions.parquet", "pairs.parquet")
#: The runs are `python -m pipeline.cli.main` from the repository root.
_ROOT = Path(__file__).resolve().parents[1]


def _command(args: argparse.Namespace, out: Path) -> list[str]:
    flags = ["--train-csv", os.path.abspath(args.train_csv), "--output", str(out)]
    flags += ["--images-dir", os.path.abspath(args.images_dir)]
    return [sys.executable, "-m", "pipeline.cli.main", "curate", *flags, f"--direct_num_workers={args.workers}"]


def _verified(out: Path) -> tuple[int, int]:
    """(pairs matched, pairs reused) by the run in `out`."""
    verify = json.loads((out / "run.json").read_text())["counters"]["verify"]
    return sum(verify.get(outcome, 0) for outcome in PAIR_OUTCOMES), verify.get("reused", 0)


def kill_when_verified(command: list[str], pairs: int) -> int:
    """Run `command`, SIGKILL it once its progress line shows `pairs` verified; returns the
    count the line showed then."""
    process = subprocess.Popen(command, cwd=_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        found = _PROGRESS.search(line) if line.startswith("[gld] progress") else None
        if found and int(found.group(1)) >= pairs:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return int(found.group(1))
    process.wait()
    raise RuntimeError(f"the run ended (exit {process.returncode}) before {pairs} pairs were verified")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-csv", required=True)
    parser.add_argument("--images-dir", required=True)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction of the pairs verified at the kill")
    parser.add_argument("--workers", type=int, default=2, help="--direct_num_workers of every run")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="gld-resume-"))
    reference, killed = root / "reference", root / "killed"
    subprocess.run([*_command(args, reference), "--no-progress"], check=True, cwd=_ROOT, stdout=subprocess.DEVNULL)
    pairs, _ = _verified(reference)
    at_kill = kill_when_verified(_command(args, killed), max(1, round(pairs * args.kill_at)))
    subprocess.run([*_command(args, killed), "--no-progress"], check=True, cwd=_ROOT, stdout=subprocess.DEVNULL)
    reverified, reused = _verified(killed)
    equal = all((killed / name).read_bytes() == (reference / name).read_bytes() for name in _COMPARED)
    result = {
        "pairs": pairs,
        "killed_at_verified": at_kill,
        "reverified": reverified,
        "reverified_fraction": round(reverified / pairs, 3) if pairs else 0.0,
        "reused": reused,
        "outputs_equal": equal,
        "folder": str(root),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
