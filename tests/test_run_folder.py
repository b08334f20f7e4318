"""A run folder's life (pipeline/curation/run_folder.py): the lock, the in-progress marker, the
commit marker, and what readers are told."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.curation.run_folder import (
    IN_PROGRESS,
    LOCK,
    RUN_JSON,
    FolderInUse,
    Holder,
    UnfinishedRun,
    acquire_lock,
    begin_run,
    commit_run,
    create_exclusively,
    finished_run,
    is_stale,
    locked,
    release_lock,
    rerun_base,
)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_run_marks_clears_and_commits_in_that_order(tmp_path: Path) -> None:
    out = str(tmp_path)
    for name in (RUN_JSON, "train_clean.csv", "report.html"):
        (tmp_path / name).write_text("old")
    (tmp_path / "report_files").mkdir()
    (tmp_path / "report_files" / "a.jpg").write_text("old")
    (tmp_path / "images").mkdir()  # a store: not an output, kept
    holder = Holder.this_process("gld curate")
    previous = [str(tmp_path / n) for n in ("train_clean.csv", "report.html", "report_files", "pairs.parquet")]
    begin_run(out, holder, "gld curate --output X ...", previous)
    assert sorted(os.listdir(tmp_path)) == ["images", IN_PROGRESS]
    with pytest.raises(UnfinishedRun, match=r"gld curate started there .* run `gld curate --output X \.\.\.`"):
        finished_run(out, "gld select")
    commit_run(out, {"counts": 1})
    assert sorted(os.listdir(tmp_path)) == ["images", RUN_JSON]
    assert finished_run(out, "gld audit") == {"counts": 1}


def test_a_folder_without_run_json_is_refused_naming_curate(tmp_path: Path) -> None:
    with pytest.raises(UnfinishedRun, match=r"no run\.json.*`gld audit` needs one; run `gld curate"):
        finished_run(str(tmp_path), "gld audit")


def test_a_killed_rerun_starts_again_from_the_run_kept_in_its_marker(tmp_path: Path) -> None:
    out = str(tmp_path)
    commit_run(out, {"config": "first"})
    base = rerun_base(out, "gld select")
    begin_run(out, Holder.this_process("gld select"), "gld select --output X", [], base=base)
    assert not (tmp_path / RUN_JSON).exists()
    assert rerun_base(out, "gld select") == {"config": "first"}  # the killed select's base
    with pytest.raises(UnfinishedRun, match="gld select started"):
        rerun_base(out, "gld overlap")


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    out = str(tmp_path)
    with locked(out, "gld curate") as holder:
        stored = json.loads((tmp_path / LOCK).read_text())
        assert stored == {"command": "gld curate", "host": holder.host, "pid": os.getpid(), "started": holder.started}
        with pytest.raises(FolderInUse, match=r"in use by `gld curate` \(host .*pid .*started .*wait for it"):
            acquire_lock(out, Holder.this_process("gld select"))
    assert not (tmp_path / LOCK).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    out = str(tmp_path)
    dead = Holder("gld curate", Holder.this_process("x").host, _dead_pid(), "2026-01-01T00:00:00+00:00")
    (tmp_path / LOCK).write_text(json.dumps(dead.__dict__))
    assert is_stale(dead, dead.host)
    mine = Holder.this_process("gld curate")
    acquire_lock(out, mine)
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert os.listdir(tmp_path) == [LOCK]  # the stale lock is gone, not kept beside
    release_lock(out, dead)  # not the holder: nothing happens
    assert (tmp_path / LOCK).exists()
    release_lock(out, mine)
    assert not (tmp_path / LOCK).exists()


def test_a_lock_of_another_host_or_a_reused_pid(tmp_path: Path) -> None:
    elsewhere = Holder("gld curate", "other-host", os.getpid(), "2026-01-01T00:00:00+00:00")
    assert not is_stale(elsewhere, "this-host")  # cannot be checked from here
    (tmp_path / LOCK).write_text(json.dumps(elsewhere.__dict__))
    with pytest.raises(FolderInUse, match=f"if that run is gone, delete {tmp_path / LOCK}"):
        acquire_lock(str(tmp_path), Holder.this_process("gld curate"))
    # a lock taken long before this process started was left by another one with the same pid
    here = Holder.this_process("x").host
    assert is_stale(Holder("gld curate", here, os.getpid(), "2000-01-01T00:00:00+00:00"), here)
    assert not is_stale(Holder.this_process("gld curate"), here)


def test_a_reader_of_a_missing_folder_makes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UnfinishedRun, match=r"no run\.json\): `gld select` needs one"):
        acquire_lock(str(missing), Holder.this_process("gld select"), create=False)
    assert not missing.exists()


def test_on_gcs_the_lock_is_a_create_if_absent_precondition(monkeypatch: pytest.MonkeyPatch) -> None:
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud import storage

    created: dict[str, bytes] = {}

    class Blob:
        def __init__(self, name: str) -> None:
            self.name = name

        def upload_from_string(self, data: bytes, if_generation_match: int) -> None:
            assert if_generation_match == 0  # create only when no object of that name exists
            if self.name in created:
                raise PreconditionFailed("exists")
            created[self.name] = data

    class Bucket:
        def __init__(self, name: str) -> None:
            self.name = name

        def blob(self, name: str) -> Blob:
            return Blob(f"{self.name}/{name}")

    class Client:
        def bucket(self, name: str) -> Bucket:
            return Bucket(name)

    monkeypatch.setattr(storage, "Client", Client)
    assert create_exclusively("gs://bucket/out/run.lock", b"first")
    assert not create_exclusively("gs://bucket/out/run.lock", b"second")
    assert created == {"bucket/out/run.lock": b"first"}


def test_the_folders_a_run_clears_are_those_the_report_and_overlap_use() -> None:
    from pipeline.curation import outputs
    from pipeline.report.html import FILES_DIR
    from pipeline.report.overlap import OVERLAP_DIR

    assert (outputs.REPORT_FILES_DIR, outputs.OVERLAP_DIR) == (FILES_DIR, OVERLAP_DIR)
