"""A run folder through kills, re-runs, a second writer and a cross-process runner, end to end on
a small generated set read from an image folder (pipeline/curation/run_folder.py, the verified
store's incremental parts, `--direct_running_mode=multi_processing`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import transforms.matching.verify
from pipeline.cli.main import main
from pipeline.demo.data import DemoConfig, generate_demo
from schemas.vocabulary import PAIR_OUTCOMES

BEAM = ["--direct_num_workers=2", "--no-progress"]
OUTPUTS = ("train_clean.csv", "decisions.parquet", "pairs.parquet", "c2x_rejected.csv", "audit.parquet")
ROOT = Path(__file__).resolve().parents[1]


def _curate_args(data: dict, out: Path) -> list[str]:
    return ["curate", "--train-csv", data["train_csv"], "--output", str(out), "--images-dir", data["images"]]


def _run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def _verified(run: dict) -> int:
    """Pairs this run matched (not reused from the verified store)."""
    return sum(run["counters"]["verify"].get(outcome, 0) for outcome in PAIR_OUTCOMES)


def _same_outputs(out: Path, reference: Path) -> None:
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The generated set and an uninterrupted run of it (the reference)."""
    root = tmp_path_factory.mktemp("lifecycle")
    dataset = generate_demo(str(root / "data"), "http://127.0.0.1:1", DemoConfig(images=30, seed=4))
    found = {"train_csv": dataset.train_csv, "images": str(root / "data" / "images"), "root": root}
    reference = root / "reference"
    assert main([*_curate_args(found, reference), *BEAM]) == 0
    found["reference"] = reference
    found["pairs"] = _verified(_run_json(reference))
    assert found["pairs"] >= 40  # enough to kill half-way through
    return found


def _readers_refuse(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["select"], ["audit"], ["overlap", "--eval-images", str(out)]):
        assert main([*command, "--output", str(out), *(["--no-progress"] if command[0] != "audit" else [])]) == 2
        err = capsys.readouterr().err
        assert f"gld {command[0]}: error: {out} holds an unfinished run" in err, err
        assert "run `gld curate --train-csv" in err, err


def test_killed_in_verification_then_resumed_reverifies_at_most_70_percent(
    data: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = data["root"] / "killed"
    # a finished run with other verification settings first: its outputs must go, not mix
    assert main([*_curate_args(data, out), "--pairs", "random", "--pairs-k", "1", "--ratio", "0.85", *BEAM]) == 0
    assert (out / "run.json").exists() and (out / "report.html").exists()

    half, calls, lock = data["pairs"] // 2, [0], threading.Lock()
    verify = transforms.matching.verify.verify_result

    def killed_half_way(*args: object) -> object:
        with lock:
            calls[0] += 1
            if calls[0] > half:
                raise RuntimeError("killed half-way through verification")
        return verify(*args)

    monkeypatch.setattr(transforms.matching.verify, "verify_result", killed_half_way)
    with pytest.raises(Exception, match="killed half-way"):
        main([*_curate_args(data, out), "--store-part-rows", "8", *BEAM])
    monkeypatch.undo()
    left = set(os.listdir(out))
    assert "run.in-progress.json" in left and "run.lock" not in left
    assert not left & {"run.json", "report.html", "report_files", *OUTPUTS}, left
    _readers_refuse(out, capsys)

    assert main([*_curate_args(data, out), "--store-part-rows", "8", *BEAM]) == 0
    resumed = _run_json(out)
    assert resumed["counters"]["verify"]["reused"] + _verified(resumed) == data["pairs"]
    assert _verified(resumed) <= 0.7 * data["pairs"], (_verified(resumed), data["pairs"])
    _same_outputs(out, data["reference"])
    assert sorted(os.listdir(out)) == sorted(os.listdir(data["reference"]))


def test_killed_before_its_commit_then_run_again(
    data: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = data["root"] / "uncommitted"
    shutil.copytree(data["reference"], out)

    def killed(*_: object) -> None:
        raise RuntimeError("killed while writing the report")

    monkeypatch.setattr("pipeline.curation.curate.build_report", killed)
    with pytest.raises(RuntimeError, match="killed while"):
        main([*_curate_args(data, out), *BEAM])
    monkeypatch.undo()
    assert not (out / "run.json").exists() and (out / "train_clean.csv").exists()
    _readers_refuse(out, capsys)
    assert main([*_curate_args(data, out), *BEAM]) == 0
    _same_outputs(out, data["reference"])
    assert _verified(_run_json(out)) == 0  # everything came from the stores


def test_a_second_writer_stops_and_the_first_finishes_intact(data: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out = data["root"] / "shared"
    shutil.copytree(data["reference"], out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", *_curate_args(data, out), *BEAM],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "run.lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (out / "run.lock").exists(), first.communicate()
    assert main([*_curate_args(data, out), *BEAM]) == 2
    err = capsys.readouterr().err
    assert f"gld curate: error: {out} is in use by `gld curate` (host" in err
    assert f"pid {first.pid}" in err and "wait for it to finish" in err
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    _same_outputs(out, data["reference"])
    run = _run_json(out)
    assert run["counts"]["accounting_ok"]
    for store in ("images", "features"):  # one writer: no image stored twice
        ids = pq.read_table(run["outputs"][store], columns=["id"]).column("id").to_pylist()
        assert len(ids) == len(set(ids)), store


def test_a_cross_process_run_gives_the_same_split(data: dict) -> None:
    out = data["root"] / "multi-processing"
    beam = ["--direct_running_mode=multi_processing", "--direct_num_workers=2", "--no-progress"]
    assert main([*_curate_args(data, out), *beam]) == 0
    assert (out / "train_clean.csv").read_bytes() == (data["reference"] / "train_clean.csv").read_bytes()
    assert _verified(_run_json(out)) == data["pairs"]  # matched afresh in the worker processes
