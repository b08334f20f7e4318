"""Fast tests of benchmarks/bench_scale.py: the image generator and the RSS parsing helpers."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import cv2
import pytest

from tests.benchmark_modules import load_benchmark

bench = load_benchmark("bench_scale")


def test_plan_is_prefix_stable_and_class_ordered() -> None:
    small, large = bench.plan_rows(50, 8, seed=3), bench.plan_rows(200, 8, seed=3)
    assert large[:50] == small
    assert [row.index for row in large] == list(range(200))
    assert len({row.id for row in large}) == 200
    assert all(len(row.id) == 16 and int(row.id, 16) >= 0 and row.id == row.id.lower() for row in large)
    labels = [row.label for row in large]
    assert labels == sorted(labels)  # whole classes, one after another
    sizes = Counter(labels)
    assert len(set(list(sizes.values())[:-1])) > 1  # class sizes vary
    assert all(4 <= n <= 16 for n in list(sizes.values())[:-1])
    foreign = [(row.label, row.shows) for row in large if row.shows not in (row.label, -1)]
    assert foreign and all(shows > label for label, shows in foreign)
    assert len(set(foreign)) == len(foreign)  # noise views of one class never show one facade twice
    assert any(row.shows == -1 for row in large)
    assert bench.plan_rows(30, 8, seed=3, single_class=True)[-1].label == 0


def test_generate_writes_deterministic_photo_sized_jpegs(tmp_path: Path) -> None:
    rows = bench.plan_rows(3, 20, seed=1)
    rows.append(bench.Row(3, "f" * 16, 0, -1))  # a random texture
    first = bench.generate(rows, 1, bench.PHOTO_FRAME, str(tmp_path / "a"), processes=1)
    second = bench.generate(rows, 1, bench.PHOTO_FRAME, str(tmp_path / "b"), processes=1)
    assert first == second
    for row in rows:
        a = Path(bench.image_path(str(tmp_path / "a"), row.id))
        assert a.parent.relative_to(tmp_path / "a") == Path(row.id[0], row.id[1], row.id[2])
        assert a.read_bytes() == Path(bench.image_path(str(tmp_path / "b"), row.id)).read_bytes()
        assert 40_000 < a.stat().st_size < 400_000
        image = cv2.imread(str(a))
        assert image is not None and image.shape == (600, 800, 3)


def test_write_manifest(tmp_path: Path) -> None:
    rows = bench.plan_rows(10, 4, seed=0)
    path = tmp_path / "train.csv"
    bench.write_manifest(str(path), rows, seed=0)
    lines = path.read_text().splitlines()
    assert lines[0] == "id,url,landmark_id"
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(row.id for row in rows)


def test_parse_time_rss() -> None:
    stderr = (
        'progress...\n\tCommand being timed: "gld curate"\n'
        "\tMaximum resident set size (kbytes): 123456\n\tExit status: 0\n"
    )
    assert bench.parse_time_rss_kb(stderr) == 123456
    assert bench.parse_time_rss_kb("no such line") is None


def test_parse_proc_files() -> None:
    assert bench.parse_stat_ppid("4242 (python3 (x) y) S 17 4242 4242 0 -1 4194304") == (4242, 17)
    assert bench.parse_vmrss_kb("Name:\tpython3\nVmPeak:\t 900 kB\nVmRSS:\t  2048 kB\nThreads:\t4\n") == 2048
    assert bench.parse_vmrss_kb("Name:\tkthreadd\nState:\tS\n") == 0


def test_descendants() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 12, 20: 1, 21: 20}
    assert bench.descendants(parents, 10) == {10, 11, 12, 13}
    assert bench.descendants(parents, 13) == {13}
    assert bench.descendants(parents, 99) == {99}


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_tree_rss_of_this_process() -> None:
    rss_kb, processes = bench.tree_rss_kb(os.getpid())
    assert rss_kb > 10_000 and processes >= 1


@pytest.mark.skipif(not os.access("/usr/bin/time", os.X_OK), reason="needs /usr/bin/time")
def test_run_curate_measures_and_limits_a_child(tmp_path: Path) -> None:
    # a grandchild holds the memory: only the tree sum sees it with its parent's
    child = "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]])"
    hold = "import time; x = bytearray(80 * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(2)"
    measured = bench.run_curate([sys.executable, "-c", child, hold], str(tmp_path / "log"), 0)
    assert measured["returncode"] == 0 and not measured["killed_at_rss_limit"]
    assert measured["max_processes"] == 3 and measured["peak_rss_mb"] > 80
    assert measured["time_rss_mb"] is not None and 80 < measured["time_rss_mb"] < measured["peak_rss_mb"]
    killed = bench.run_curate([sys.executable, "-c", hold.replace("(2)", "(30)")], str(tmp_path / "log2"), 40 * 1024)
    assert killed["killed_at_rss_limit"] and killed["returncode"] != 0 and killed["seconds"] < 20
