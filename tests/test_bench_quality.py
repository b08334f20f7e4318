"""benchmarks/bench_quality.py and the truth scoring it shares with `gld demo`, on tiny
hand-made truth and decisions (no curation run, no shared data)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.demo.run import TruthScore, score_against_truth, score_kept
from tests.benchmark_modules import load_benchmark

bench = load_benchmark("bench_quality")

# class 1: members m1 m2 m3, noise n1 n2; class 2: members m4 m5; class 3: a lone member m6;
# broken b1 b2
TRUTH = {
    "m1": (1, "member"),
    "m2": (1, "member"),
    "m3": (1, "member"),
    "n1": (1, "noise"),
    "n2": (1, "noise"),
    "m4": (2, "member"),
    "m5": (2, "member"),
    "m6": (3, "member"),
    "b1": (2, "broken"),
    "b2": (1, "broken"),
}


def test_score_kept_counts_members_noise_and_broken() -> None:
    kept = {"m1": 1, "m2": 1, "n1": 1, "n2": 1, "m4": 2, "m6": 3}
    statuses = {i: "kept" for i in kept} | {"m3": "removed", "m5": "removed", "b1": "failed", "b2": "removed"}
    score = score_kept(kept, statuses, TRUTH)
    # precision 4 / 6 (m1 m2 m4 m6); recall over the 5 members of classes with >= 2 (m6 is alone)
    assert score == TruthScore(
        kept=6,
        precision=4 / 6,
        recall=3 / 5,
        broken_failed=0.5,
        noise_kept=2,
        members=5,
        broken=2,
        noise_ids=("n1", "n2"),
    )


def test_score_kept_needs_the_right_class_and_handles_empty_sets() -> None:
    # a member kept under another class is not a true keep, and unknown ids count against precision
    score = score_kept({"m1": 2, "m2": 1, "x": 1}, {}, TRUTH)
    assert (score.precision, score.recall, score.noise_kept) == (1 / 3, 1 / 5, 0)
    empty = score_kept({}, {}, {"m1": (1, "member")})
    assert (empty.precision, empty.recall, empty.broken_failed, empty.members) == (0.0, 0.0, 1.0, 0)


def test_score_against_truth_reads_a_run(tmp_path: Path) -> None:
    (tmp_path / "train_clean.csv").write_text("landmark_id,images\n1,m1 m2 n1\n2,m4 m5\n")
    decisions = {"id": ["b1", "b2", "m1"], "status": ["failed", "failed", "kept"]}
    pq.write_table(pa.table(decisions), tmp_path / "decisions.parquet")
    truth = tmp_path / "truth.csv"
    truth.write_text(
        "id,landmark_id,role,source\n" + "".join(f"{i},{lid},{role},x\n" for i, (lid, role) in TRUTH.items())
    )
    score = score_against_truth(str(tmp_path / "train_clean.csv"), str(tmp_path / "decisions.parquet"), str(truth))
    assert (score.kept, score.precision, score.recall, score.noise_ids, score.broken_failed) == (
        5,
        4 / 5,
        4 / 5,
        ("n1",),
        1.0,
    )


def test_configurations_parse_names_and_flags() -> None:
    assert bench.parse_configuration("default=") == bench.Configuration("default", ())
    loose = bench.parse_configuration('loose=--ransac-threshold 20 --extra "a b"')
    assert loose == bench.Configuration("loose", ("--ransac-threshold", "20", "--extra", "a b"))
    chosen = bench.configurations(["a=--min-inliers 40"], ["gldv2-official"])
    assert chosen == [
        bench.Configuration("a", ("--min-inliers", "40")),
        bench.Configuration("gldv2-official", ("--preset", "gldv2-official")),
    ]
    assert bench.configurations([], []) == [bench.Configuration("default", ())]
    for bad in ("noequals", "=--preset x", "a/b=", "../x="):
        with pytest.raises(ValueError):
            bench.parse_configuration(bad)
    with pytest.raises(ValueError, match="unique"):
        bench.configurations(["x=", "x=--min-inliers 3"], [])


def test_quality_line_divides_the_cost_and_leaves_scores_out_of_a_failed_run() -> None:
    score = score_kept({"m1": 1, "m2": 1, "n1": 1}, {"b1": "failed", "b2": "failed"}, TRUTH)
    stages = {"features_s_per_image": 0.25, "verify_s_per_pair": 0.0125}
    line = bench.quality_line(
        bench.Configuration("x", ("--preset", "p")),
        score,
        bench.Measured(0, 12.0, 512.4, 20.0),
        10,
        40,
        True,
        stages,
        matched=25,
    )
    assert line == {
        "config": "x",
        "flags": "--preset p",
        "precision": 0.6667,
        "recall": 0.4,
        "noise_kept": 1,
        "noise_ids": ["n1"],
        "broken_failed": 1.0,
        "kept": 3,
        "members": 5,
        "broken": 2,
        "rows": 10,
        "pairs": 40,
        "pairs_matched": 25,
        "pairs_matched_per_image": 2.5,
        "accounting_ok": True,
        "seconds": 12.0,
        "cpu_ms_per_image": 2000.0,
        "ms_per_image": 1200.0,
        "ms_per_pair": 300.0,
        "features_cpu_ms_per_image": 250.0,
        "verify_cpu_ms_per_pair": 12.5,
        "peak_rss_mb": 512,
        "exit_code": 0,
    }
    json.dumps(line)
    failed = bench.quality_line(bench.Configuration("y", ()), None, bench.Measured(2, 1.0, 50.0), 0, 0, False)
    assert "precision" not in failed and failed["ms_per_pair"] is None and failed["exit_code"] == 2
    assert failed["pairs_matched_per_image"] is None and failed["cpu_ms_per_image"] is None


def test_standard_configurations_come_first_and_name_the_default() -> None:
    chosen = bench.configurations(["extra=--min-inliers 40"], [], standard=True)
    names = [c.name for c in chosen]
    assert names == ["sift", "learned-exhaustive", "learned-adaptive", "cascade-exhaustive", "default", "extra"]
    assert dict((c.name, c.flags) for c in chosen)["default"] == ()


def test_run_gld_measures_a_process(tmp_path: Path) -> None:
    code = "import sys; b = bytearray(64 * 1024 * 1024); print('ok'); sys.exit(3)"
    measured = bench.run_gld([sys.executable, "-c", code], str(tmp_path / "log"))
    assert measured.exit_code == 3
    assert measured.peak_rss_mb >= 64 and measured.seconds > 0
    assert (tmp_path / "log").read_text().strip() == "ok"
