"""Tests of the resumable ingest (transforms/ingest/stage.py, transforms/ingest/image_store.py,
pipeline/curation/ingest.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.cli.main import main
from pipeline.demo.data import DemoConfig, generate_demo
from pipeline.demo.serve import serve_folder
from schemas.records import Failure, ImageRef, ManifestRow
from schemas.vocabulary import Reason, Stage
from tests.flags import SIFT
from transforms.ingest.image_store import (
    StoreConfig,
    attempt_dirs,
    check_fingerprint,
    next_attempt_dir,
    part_files,
    readable_rows,
)
from transforms.ingest.stage import duplicate_groups, resume

REPO = Path(__file__).resolve().parents[1]
BEAM = ["--direct_num_workers=2", "--no-progress"]
ROW = ManifestRow(line=5, id="0123456789abcdef", url="http://h/a.jpg", landmark_id=3)


def _stored(url: str = ROW.url, sha: str = "aa", path: str = "part-a.parquet") -> dict:
    return {
        "path": path,
        "index": 0,
        "id": ROW.id,
        "url": url,
        "jpeg": b"jpeg-" + sha.encode(),
        "width": 4,
        "height": 3,
        "original_width": 8,
        "original_height": 6,
        "original_bytes": 99,
        "sha256": sha,
    }


def _logged(attempt: int, reason: str, url: str = ROW.url, stage: str = "fetch") -> tuple[int, dict]:
    return attempt, {"id": ROW.id, "url": url, "stage": stage, "reason": reason, "detail": f"try {attempt}"}


def _resume(stored: list[dict], failed: list[tuple[int, dict]], retry: bool = False) -> list[object]:
    return list(resume(ROW.id, {"rows": [ROW], "stored": stored, "failed": failed}, retry))


# ---------------------------------------------------------------------------------------------
# the resume rule (pure)


def test_nothing_stored_means_fetch() -> None:
    assert _resume([], []) == [ROW]


def test_a_stored_image_is_reused_as_the_current_row() -> None:
    [image] = _resume([_stored(sha="bb", path="part-b.parquet"), _stored(sha="aa")], [_logged(1, "http_404")])
    assert isinstance(image, ImageRef)
    assert image.row == ROW and image.sha256 == "aa"  # the same choice whatever the order of parts
    assert (image.width, image.height, image.path, image.index) == (4, 3, "part-a.parquet", 0)


def test_a_stored_image_of_another_url_is_fetched_again() -> None:
    assert _resume([_stored(url="http://h/old.jpg")], []) == [ROW]


def test_the_latest_logged_failure_is_kept_unless_retrying() -> None:
    [failure] = _resume([], [_logged(2, "http_5xx"), _logged(1, "http_404")])
    assert isinstance(failure, Failure)
    assert (failure.stage, failure.reason, failure.detail) == (Stage.FETCH, Reason.HTTP_5XX, "try 2")
    assert (failure.line, failure.id, failure.url) == (ROW.line, ROW.id, ROW.url)
    assert _resume([], [_logged(1, "http_404")], retry=True) == [ROW]


def test_logged_failures_of_another_url_or_an_unknown_reason_are_fetched_again() -> None:
    assert _resume([], [_logged(1, "http_404", url="http://h/old.jpg")]) == [ROW]
    assert _resume([], [_logged(1, "reason_from_the_future")]) == [ROW]


def test_stored_ids_missing_from_the_manifest_yield_nothing() -> None:
    assert list(resume(ROW.id, {"rows": [], "stored": [_stored()], "failed": []}, False)) == []


def test_duplicate_groups_report_every_member_once() -> None:
    rows = list(duplicate_groups("s", [("b", 2), ("a", 1)]))
    assert [(r["id"], r["group_size"], r["same_class"]) for r in rows] == [("a", 2, False), ("b", 2, False)]
    assert list(duplicate_groups("s", [("a", 1)])) == []


# ---------------------------------------------------------------------------------------------
# the store


def test_fingerprint_refuses_a_store_made_with_other_settings(tmp_path: Path) -> None:
    check_fingerprint(str(tmp_path), {"decode": {"max_side": 1024}})
    check_fingerprint(str(tmp_path), {"decode": {"max_side": 1024}})
    with pytest.raises(ValueError, match="another --output"):
        check_fingerprint(str(tmp_path), {"decode": {"max_side": 512}})


def test_attempt_folders_count_up(tmp_path: Path) -> None:
    assert next_attempt_dir(str(tmp_path)).endswith("attempt-0001")
    first = tmp_path / "ingest_failures" / "attempt-0001"
    first.mkdir(parents=True)
    (first / "part-x.parquet").write_bytes(b"")
    assert attempt_dirs(str(tmp_path)) == [(1, str(first))]
    assert next_attempt_dir(str(tmp_path)).endswith("attempt-0002")


def test_store_config_validation() -> None:
    with pytest.raises(ValueError):
        StoreConfig(part_rows=0)
    with pytest.raises(ValueError):
        StoreConfig(part_seconds=0)


# ---------------------------------------------------------------------------------------------
# gld ingest / gld curate on generated data


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ingest")
    data = str(root / "data")
    os.makedirs(data)
    return root, data


def _stats(out: Path) -> dict:
    return json.loads((out / "ingest_stats.json").read_text())


def _stored_ids(out: Path) -> list[str]:
    ids: list[str] = []
    for path in part_files(str(out / "images")):
        ids += pq.read_table(path, columns=["id"]).column("id").to_pylist()
    return ids


def test_ingest_then_rerun_reuses_and_retry_failed_retries_only_failures(dataset) -> None:
    root, data = dataset
    hits: Counter[str] = Counter()
    with serve_folder(data, hits=hits) as base:
        demo = generate_demo(data, base, DemoConfig(images=30, seed=5, broken_rows=3))
        out = root / "store-a"
        args = ["ingest", "--train-csv", demo.train_csv, "--output", str(out), "--allow-private-hosts", *BEAM]
        assert main(args) == 0
        first = _stats(out)
        assert first["accounting_ok"] and first["rows"] == 30
        assert first["stored"] == 27 and first["failed_total"] == 3 and first["reused"] == 0
        assert set(first["failed"]) == {"fetch/http_404", "decode/truncated", "decode/not_an_image"}
        assert first["bytes_fetched"] > 0
        assert sorted(_stored_ids(out)) == sorted(set(_stored_ids(out)))  # each image stored once
        requests_after_first = sum(hits.values())
        assert requests_after_first == 30

        assert main(args) == 0
        second = _stats(out)
        assert (second["stored"], second["reused"], second["failed_total"]) == (0, 27, 3)
        assert second["failed"] == first["failed"]
        assert sum(hits.values()) == requests_after_first  # nothing downloaded again

        assert main([*args, "--retry-failed"]) == 0
        third = _stats(out)
        assert (third["stored"], third["reused"], third["failed_total"]) == (0, 27, 3)
        assert sum(hits.values()) == requests_after_first + 3  # exactly the failed rows again


def test_a_store_with_other_decode_settings_is_refused(dataset, capsys) -> None:
    root, data = dataset
    out = root / "store-b"
    train_csv = str(Path(data) / "train.csv")
    assert main(["ingest", "--train-csv", train_csv, "--output", str(out), "--images-dir", data, *BEAM]) == 0
    code = main(["ingest", "--train-csv", train_csv, "--output", str(out), "--max-side", "512", *BEAM])
    assert code == 2
    assert "another --output" in capsys.readouterr().err


def _curate_args(train_csv: str, out: Path) -> list[str]:
    return ["curate", "--train-csv", train_csv, "--output", str(out), "--allow-private-hosts", *SIFT]


def test_a_killed_run_resumes_without_downloading_again_and_matches_an_uninterrupted_run(dataset) -> None:
    root, data = dataset
    hits: Counter[str] = Counter()
    with serve_folder(data, delay_s=0.1, hits=hits) as base:
        demo = generate_demo(data, base, DemoConfig(images=40, seed=8, broken_rows=3))
        killed = root / "killed"
        slow = ["--fetch-threads", "1", "--store-part-rows", "4", "--direct_num_workers=1", "--no-progress"]
        command = [sys.executable, "-m", "pipeline.cli.main", *_curate_args(demo.train_csv, killed), *slow]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(part_files(str(killed / "images"))) < 2 and time.monotonic() < deadline:
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        stored_before = set(_stored_ids(killed))
        assert 0 < len(stored_before) < 37
        assert not (killed / "decisions.parquet").exists()

        assert main([*_curate_args(demo.train_csv, killed), *BEAM]) == 0
        whole = root / "whole"
        assert main([*_curate_args(demo.train_csv, whole), *BEAM]) == 0

    resumed_stats = _stats(killed)
    assert resumed_stats["reused"] >= len(stored_before) and resumed_stats["accounting_ok"]
    for image_id in stored_before:
        path = f"/images/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"
        assert hits[path] == 2, path  # once by the killed run, once by the uninterrupted one
    for name in ("train_clean.csv", "decisions.parquet", "pairs.parquet", "duplicates.parquet"):
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    assert sorted(set(_stored_ids(killed))) == sorted(set(_stored_ids(whole)))


def test_ingest_from_tar_shards_accounts_for_every_row(dataset) -> None:
    root, data = dataset
    train_csv = Path(data) / "train.csv"
    if not train_csv.exists():
        generate_demo(data, "http://127.0.0.1:9", DemoConfig(images=30, seed=5, broken_rows=3))
    ids = [line.split(",")[0] for line in train_csv.read_text().splitlines()[1:]]
    tars = root / "tars"
    tars.mkdir()
    halves = {"images_000.tar": ids[: len(ids) // 2], "images_001.tar": ids[len(ids) // 2 :]}
    for name, members in halves.items():
        with tarfile.open(tars / name, "w") as archive:
            for image_id in members:
                path = Path(data) / "images" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"
                if path.exists():  # the generator leaves no file for its http_404 rows
                    archive.add(path, arcname=f"{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg")
        digest = hashlib.md5((tars / name).read_bytes()).hexdigest()
        (tars / f"md5.{name[:-4]}.txt").write_text(f"{digest if name.endswith('0.tar') else '0' * 32}  {name}\n")
    out = root / "from-tars"
    assert main(["ingest", "--train-csv", str(train_csv), "--output", str(out), "--tar-dir", str(tars), *BEAM]) == 0
    stats = _stats(out)
    assert stats["accounting_ok"] and stats["rows"] == len(ids)
    assert stats["failed"]["fetch/md5_mismatch"] == sum(
        1 for i in halves["images_001.tar"] if (Path(data) / "images" / i[0] / i[1] / i[2] / f"{i}.jpg").exists()
    )
    assert stats["stored"] > 0 and "fetch/missing_file" in stats["failed"]
    shards = json.loads((out / "tar_shards.json").read_text())
    assert [(Path(s["shard"]).name, s["md5"]) for s in shards] == [
        ("images_000.tar", "ok"),
        ("images_001.tar", "mismatch"),
    ]


def test_an_unreadable_store_part_is_skipped_so_its_rows_are_fetched_again(tmp_path: Path) -> None:
    bad = tmp_path / "part-0000.parquet"
    bad.write_bytes(b"not parquet at all")
    assert list(readable_rows(str(bad))) == []
