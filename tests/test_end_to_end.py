"""`gld curate` end to end on generated landmark photos served over loopback HTTP."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
from collections import Counter

import pyarrow.parquet as pq
import pytest

from pipeline.cli.main import main
from pipeline.cli.summary import summary_lines
from pipeline.demo.data import DemoConfig, generate_demo, read_truth
from pipeline.demo.serve import serve_folder
from schemas.gldv2_csv import format_train_clean, parse_train_clean
from schemas.vocabulary import PAIR_OUTCOMES
from tests.flags import SIFT
from transforms.matching.rounds import SKIPPED

BEAM = ["--direct_num_workers=2", "--no-progress"]

# Lines appended to the generated train.csv: each must fail with exactly this reason.
BAD_LINES = {
    "ffffffffffffffff,{base}/images/f/f/f/ffffffffffffffff.jpg,notanumber": "bad_landmark_id",
    "eeeeeeeeeeeeeeee,{base}/images": "missing_column",
    ",{base}/images/x.jpg,1000": "empty_id",
    "../../etc/passwd,{base}/x.jpg,1000": "bad_id",
    "dddddddddddddddd,file:///etc/passwd,1000": "bad_url",
    "cccccccccccccccc,ftp://127.0.0.1/c.jpg,1000": "bad_url",
}


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    data = str(root / "data")
    os.makedirs(data)
    with serve_folder(data) as base:
        dataset = generate_demo(data, base, DemoConfig(images=60, seed=3, broken_rows=3))
        with open(dataset.train_csv, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        first_data_line = lines[1]
        extra = [line.format(base=base) for line in BAD_LINES] + [first_data_line]  # last: a duplicate id
        with open(dataset.train_csv, "w", encoding="utf-8") as handle:
            handle.write("\n".join([*lines, *extra]) + "\n")
        outputs = []
        for run in ("a", "b"):
            out = str(root / f"out-{run}")
            code = main(
                ["curate", "--train-csv", dataset.train_csv, "--output", out, "--allow-private-hosts", *SIFT, *BEAM]
            )
            assert code == 0
            outputs.append(out)
    decisions = pq.read_table(os.path.join(outputs[0], "decisions.parquet")).to_pylist()
    return {
        "dataset": dataset,
        "outputs": outputs,
        "decisions": decisions,
        "input_lines": len(lines) - 1 + len(extra),
        "extra_start": len(lines) + 1,
        "duplicate_of": first_data_line.split(",")[0],
    }


def test_train_clean_is_exactly_the_verifiable_members(curated: dict) -> None:
    truth = read_truth(curated["dataset"].truth_csv)
    members = Counter(lid for lid, role in truth.values() if role == "member")
    expected: dict[int, list[str]] = {}
    for image_id, (lid, role) in truth.items():
        if role == "member" and members[lid] >= 2:
            expected.setdefault(lid, []).append(image_id)
    with open(os.path.join(curated["outputs"][0], "train_clean.csv"), encoding="utf-8") as handle:
        assert handle.read() == format_train_clean(expected)


def test_every_input_line_has_exactly_one_decision(curated: dict) -> None:
    decisions = curated["decisions"]
    assert len(decisions) == curated["input_lines"]
    assert len({d["id"] for d in decisions}) == len(decisions)
    assert sorted(d["line"] for d in decisions) == list(range(2, curated["input_lines"] + 2))
    assert {d["status"] for d in decisions} <= {"kept", "removed", "failed"}
    assert [d["id"] for d in decisions] == sorted(d["id"] for d in decisions)


def test_broken_and_malformed_rows_fail_with_their_reason(curated: dict) -> None:
    by_line = {d["line"]: d for d in curated["decisions"]}
    for offset, reason in enumerate(BAD_LINES.values()):
        decision = by_line[curated["extra_start"] + offset]
        assert (decision["status"], decision["reason"]) == ("failed", reason), decision
    duplicate = by_line[curated["extra_start"] + len(BAD_LINES)]
    assert (duplicate["status"], duplicate["reason"], duplicate["id"]) == (
        "failed",
        "duplicate_id",
        f"line:{duplicate['line']}",
    )
    assert curated["duplicate_of"] in duplicate["detail"]
    by_id = {d["id"]: d for d in curated["decisions"]}
    with open(curated["dataset"].truth_csv, encoding="utf-8") as handle:
        broken = {r["id"]: r["source"] for r in csv.DictReader(handle) if r["role"] == "broken"}
    assert broken
    expected = {"http_404": ("fetch", "http_404"), "truncated": ("decode", "truncated")}
    expected["not_an_image"] = ("decode", "not_an_image")
    for image_id, source in broken.items():
        assert (by_id[image_id]["stage"], by_id[image_id]["reason"]) == expected[source]


def test_noise_is_removed_with_a_reason(curated: dict) -> None:
    truth = read_truth(curated["dataset"].truth_csv)
    for decision in curated["decisions"]:
        if truth.get(decision["id"], (0, ""))[1] == "noise":
            assert decision["status"] == "removed"
            assert decision["reason"] in {"no_verified_pair", "small_component"}


def test_two_runs_are_byte_identical(curated: dict) -> None:
    first, second = curated["outputs"]
    for name in ("train_clean.csv", "decisions.parquet", "pairs.parquet"):
        with open(os.path.join(first, name), "rb") as a, open(os.path.join(second, name), "rb") as b:
            assert a.read() == b.read(), name


def test_run_json_accounts_for_every_row(curated: dict) -> None:
    with open(os.path.join(curated["outputs"][0], "run.json"), encoding="utf-8") as handle:
        run = json.load(handle)
    counts = run["counts"]
    assert counts["accounting_ok"] is True
    assert counts["input_rows"] == curated["input_lines"] == sum(counts["by_status"].values())
    assert run["config"]["select"]["min_inliers"] == 30
    assert run["seconds"]["wall"] > 0
    assert set(run["outputs"]) >= {"train_clean", "decisions", "pairs"}


def test_pairs_parquet_has_one_row_per_candidate_pair(curated: dict) -> None:
    pairs = pq.read_table(os.path.join(curated["outputs"][0], "pairs.parquet")).to_pylist()
    assert pairs
    assert all(p["id_a"] < p["id_b"] for p in pairs)
    assert len({(p["id_a"], p["id_b"]) for p in pairs}) == len(pairs)
    kept = {d["id"]: d["landmark_id"] for d in curated["decisions"] if d["status"] == "kept"}
    assert all(p["landmark_id"] == kept.get(p["id_a"], p["landmark_id"]) for p in pairs)


def test_audit_report_and_c2x_are_byte_identical(curated: dict) -> None:
    first, second = curated["outputs"]
    for name in ("audit.parquet", "c2x_rejected.csv", "c2x_scores.parquet", "report.html"):
        with open(os.path.join(first, name), "rb") as a, open(os.path.join(second, name), "rb") as b:
            assert a.read() == b.read(), name


def test_c2x_lists_the_rejected_images_of_clean_classes(curated: dict) -> None:
    out = curated["outputs"][0]
    with open(os.path.join(out, "train_clean.csv"), encoding="utf-8") as handle:
        clean = parse_train_clean(handle.read())
    expected: dict[int, list[str]] = {}
    for d in curated["decisions"]:
        if d["status"] == "removed" and d["landmark_id"] in clean:
            expected.setdefault(d["landmark_id"], []).append(d["id"])
    assert expected  # the generated noise sits in clean classes
    with open(os.path.join(out, "c2x_rejected.csv"), encoding="utf-8") as handle:
        assert handle.read() == format_train_clean(expected)
    scores = pq.read_table(os.path.join(out, "c2x_scores.parquet")).to_pylist()
    assert sorted(r["id"] for r in scores) == sorted(i for ids in expected.values() for i in ids)


def test_cross_class_findings_point_at_label_noise(curated: dict) -> None:
    truth = read_truth(curated["dataset"].truth_csv)
    findings = pq.read_table(os.path.join(curated["outputs"][0], "audit.parquet")).to_pylist()
    matches = [f for f in findings if f["kind"] == "cross_class_match"]
    assert matches
    for f in matches:
        assert f["landmark_a"] != f["landmark_b"] and f["score"] >= 30
        assert "noise" in (truth[f["id_a"]][1], truth[f["id_b"]][1]), f


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(curated: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    out = curated["outputs"][0]
    report = os.path.join(out, "report.html")
    with open(report, encoding="utf-8") as handle:
        html = handle.read()
    sources = re.findall(r'src="([^"]+)"', html)
    assert len(sources) >= 6  # thumbnails of the noisiest classes and the drawn pairs
    missing = [s for s in sources if not os.path.isfile(os.path.join(out, s))]
    assert not missing
    for section in ("by status", "Class sizes", "Inliers", "ranked by removal", "inlier matches", "Label-noise"):
        assert section in html
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get install chromium)")
    screenshot = str(tmp_path_factory.mktemp("report") / "report.png")
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    command += ["--window-size=1200,4000", f"--screenshot={screenshot}", "file://" + os.path.abspath(report)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert not console
    assert os.path.getsize(screenshot) > 10_000
    print(f"report screenshot: {screenshot}")


def test_gld_audit_rebuilds_the_same_report(curated: dict, capsys: pytest.CaptureFixture) -> None:
    out = curated["outputs"][1]
    with open(os.path.join(out, "report.html"), "rb") as handle:
        before = handle.read()
    os.remove(os.path.join(out, "report.html"))
    assert main(["audit", "--output", out]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"report": os.path.join(out, "report.html")}
    with open(os.path.join(out, "report.html"), "rb") as handle:
        assert handle.read() == before


def test_official_preset_keeps_a_subset_of_components(curated: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    out = str(tmp_path_factory.mktemp("official"))
    images = os.path.join(os.path.dirname(curated["dataset"].train_csv), "images")
    args = ["curate", "--train-csv", curated["dataset"].train_csv, "--output", out, "--images-dir", images]
    assert main([*args, "--preset", "gldv2-official", "--no-audit", *BEAM]) == 0
    official = pq.read_table(os.path.join(out, "decisions.parquet")).to_pylist()
    kept = {d["id"] for d in official if d["status"] == "kept"}
    assert kept and kept <= {d["id"] for d in curated["decisions"] if d["status"] == "kept"}
    select_reasons = {"verified_degree", "no_verified_pair", "low_degree", "class_too_small"}
    for d in official:
        assert d["reason"] in select_reasons if d["stage"] == "select" else d["status"] == "failed", d


def _images_args(curated: dict, out: str, train_csv: str | None = None) -> list[str]:
    images = os.path.join(os.path.dirname(curated["dataset"].train_csv), "images")
    return ["--train-csv", train_csv or curated["dataset"].train_csv, "--output", out, "--images-dir", images]


def _run_json(out: str) -> dict:
    with open(os.path.join(out, "run.json"), encoding="utf-8") as handle:
        return json.load(handle)


SELECTION_FILES = ("train_clean.csv", "decisions.parquet", "c2x_rejected.csv", "c2x_scores.parquet", "audit.parquet")


def test_select_equals_a_fresh_curate_and_matches_nothing(
    curated: dict, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture
) -> None:
    """`gld select` with another rule on a finished run writes what a fresh run with that rule
    writes, byte for byte, without extracting or verifying anything."""
    root = tmp_path_factory.mktemp("select")
    base, reselected, fresh = str(root / "base"), str(root / "reselected"), str(root / "fresh")
    exhaustive = ["--verification", "exhaustive"]
    assert main(["curate", *_images_args(curated, base), *exhaustive, *SIFT, *BEAM]) == 0
    shutil.copytree(base, reselected)  # a copied run folder is re-selected where it now is
    rule = ["--policy", "degree", "--min-degree", "2", "--min-inliers", "150"]
    capsys.readouterr()  # the curate's summary
    assert main(["select", "--output", reselected, *rule, "--no-progress"]) == 0
    printed = capsys.readouterr().out.splitlines()  # the readable summary, then the JSON line
    assert main(["curate", *_images_args(curated, fresh), *rule, *exhaustive, *SIFT, *BEAM]) == 0
    for name in (*SELECTION_FILES, "pairs.parquet"):
        with open(os.path.join(reselected, name), "rb") as a, open(os.path.join(fresh, name), "rb") as b:
            assert a.read() == b.read(), name
    before, after = _run_json(base), _run_json(reselected)
    assert after["config"]["select"]["min_inliers"] == 150 and after["counts"]["accounting_ok"]
    for stage in ("features", "verify", "fetch"):
        assert after["counters"][stage] == before["counters"][stage], stage
    assert after["counts"] != before["counts"]  # the stricter rule removed images
    assert printed[:-1] == summary_lines(after) and printed[-1].startswith("{")
    assert json.loads(printed[-1])["by_status"] == after["counts"]["by_status"]
    named = ("train_clean.csv", "decisions.parquet", "pairs.parquet", "audit.parquet", "c2x_rejected.csv")
    assert printed[-2] == f"outputs in {reselected}: {', '.join(named)}, report.html, run.json"

    # after adaptive verification a stricter rule needs pairs the run skipped: select stops and
    # names the curate that matches them; that curate then decides as exhaustive verification
    adaptive = str(root / "adaptive")
    assert main(["curate", *_images_args(curated, adaptive), *SIFT, *BEAM]) == 0
    assert main(["select", "--output", adaptive, *rule, "--no-progress"]) == 2
    message = capsys.readouterr().err
    assert "pairs that adaptive verification skipped could change this selection" in message
    command = shlex.split(message.split("with: ", 1)[1])
    assert command[:2] == ["gld", "curate"] and "--min-inliers" in command and "--images-dir" in command
    assert main([*command[1:], *SIFT, *BEAM]) == 0
    assert _run_json(adaptive)["counters"]["verify"]["reused"] > 0
    for name in ("train_clean.csv", "c2x_rejected.csv"):
        with open(os.path.join(adaptive, name), "rb") as a, open(os.path.join(fresh, name), "rb") as b:
            assert a.read() == b.read(), name
    # a lower threshold needs nothing the run skipped: exact, and no check job
    assert main(["select", "--output", adaptive, "--min-inliers", "60", "--no-progress"]) == 0
    assert main(["select", "--output", base, "--min-inliers", "60", "--no-progress"]) == 0
    with (
        open(os.path.join(adaptive, "train_clean.csv"), "rb") as a,
        open(os.path.join(base, "train_clean.csv"), "rb") as b,
    ):
        assert a.read() == b.read()


def test_rerun_with_new_rows_extracts_and_verifies_only_the_new_work(
    curated: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("incremental")
    with open(curated["dataset"].train_csv, encoding="utf-8") as handle:
        lines = handle.read().splitlines()[: curated["extra_start"] - 1]  # header + generated rows
    head = lines[: len(lines) - len(lines) // 10]
    partial, full = str(root / "partial.csv"), str(root / "full.csv")
    for path, content in ((partial, head), (full, lines)):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(content) + "\n")
    out = str(root / "out")
    assert main(["curate", *_images_args(curated, out, partial), *SIFT, *BEAM]) == 0
    first = _run_json(out)
    first_pairs = _pairs_of(first)
    first_matched = _pairs_of(first, matched_only=True)
    assert main(["curate", *_images_args(curated, out, full), *SIFT, *BEAM]) == 0
    second = _run_json(out)
    extracted_before = first["counters"]["features"]["ok"]
    assert second["counters"]["features"]["reused"] == extracted_before
    new_images = second["counters"]["features"]["ok"]
    assert 0 < new_images <= len(lines) - len(head)
    pairs = pq.read_table(os.path.join(out, "pairs.parquet")).to_pylist()
    verify = second["counters"]["verify"]
    # the new images re-rank partners: some pairs matched before are skipped now, none is matched twice
    assert 0 < verify["reused"] <= len(first_matched)
    skipped = verify.get(SKIPPED, 0)
    assert verify["reused"] + sum(verify.get(k, 0) for k in PAIR_OUTCOMES) + skipped == len(pairs)
    assert first_pairs <= {(p["id_a"], p["id_b"]) for p in pairs}
    reference = curated["outputs"][0]
    with open(os.path.join(out, "pairs.parquet"), "rb") as a, open(os.path.join(reference, "pairs.parquet"), "rb") as b:
        assert a.read() == b.read()


def _pairs_of(run: dict, matched_only: bool = False) -> set[tuple[str, str]]:
    pairs = pq.read_table(run["outputs"]["pairs"]).to_pylist()
    return {(p["id_a"], p["id_b"]) for p in pairs if not (matched_only and p["reason"] == SKIPPED)}
