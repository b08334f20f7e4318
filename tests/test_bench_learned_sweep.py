"""Tests of benchmarks/bench_learned_sweep.py's summary: merged runs, components, truth counts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmark_modules import load_benchmark

sweep = load_benchmark("bench_learned_sweep")


def _write(path: Path, settings: dict[str, dict[tuple[str, str], int]], pairs: list[tuple[str, str]]) -> str:
    roles = {"a": "member", "b": "member", "c": "member", "n": "noise"}
    lines = [{"kind": "run", "roles": roles, "min_inliers": 30}]
    for image in roles:
        cpu = dict.fromkeys(["sift-4000", "aliked640"], 10.0)
        lines.append(
            {
                "kind": "image",
                "id": image,
                "landmark_id": 1,
                "role": roles[image],
                "cpu_ms": cpu,
                "keypoints": dict.fromkeys(cpu, 100),
            }
        )
    for a, b in pairs:
        inliers = {name: counts[a, b] for name, counts in settings.items()}
        line = {"kind": "pair", "a": a, "b": b, "landmark_id": 1, "roles": [roles[a], roles[b]]}
        lines.append({**line, "inliers": inliers, "cpu_ms": dict.fromkeys(settings, 5.0)})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def test_components_precision_recall_and_merged_runs_on_common_pairs(tmp_path: Path) -> None:
    pairs = [("a", "b"), ("b", "c"), ("a", "n"), ("c", "n")]
    sift = {"sift-4000+nn": {("a", "b"): 40, ("b", "c"): 10, ("a", "n"): 5, ("c", "n"): 3}}
    learned = {"aliked640-1024+lg0.9:0.95": {("a", "b"): 80, ("b", "c"): 35, ("a", "n"): 31, ("c", "n"): 0}}
    first = _write(tmp_path / "first.jsonl", sift, pairs)
    second = _write(tmp_path / "second.jsonl", learned, pairs[:3])  # a shorter run: its pairs only
    rows = {row["setting"]: row for row in sweep.summarise([first, second])}
    assert rows["sift-4000+nn"]["kept"] == 2 and rows["sift-4000+nn"]["recall"] == round(2 / 3, 3)
    learned_row = rows["aliked640-1024+lg0.9:0.95"]
    # a-b-c and the noise image n joined through a-n: 4 kept, 3 of them members
    assert (learned_row["kept"], learned_row["precision"], learned_row["recall"]) == (4, 0.75, 1.0)
    assert (learned_row["member_pairs_verified"], learned_row["member_pairs"], learned_row["noise_max_inliers"]) == (
        2,
        2,
        31,
    )
    sweep.write_pairs_csv([first, second], str(tmp_path / "pairs.csv"))
    assert len((tmp_path / "pairs.csv").read_text().splitlines()) == 1 + 3
