"""`gld curate` and `gld select` end with the readable summary `gld demo` prints (counts per
status and per reason, the accounting, where the outputs are), then the JSON object on the last
line of stdout; `--json` prints the JSON alone. The runs are stubbed: what is tested is what the
commands print of a run summary. `tests/test_end_to_end.py` prints a real one."""

from __future__ import annotations

import json

import pytest

from pipeline.cli.main import main
from pipeline.cli.summary import summary_lines
from pipeline.curation.outputs import output_paths

OUT = "/data/run-7"


def _run(accounting_ok: bool = True, reviews: dict | None = None) -> dict:
    """A run summary as `run_curation` and `run_reselection` return it (the `run.json` dict)."""
    counts = {
        "rows": 12,
        "distinct_ids": 12,
        "input_rows": 12 if accounting_ok else 13,
        "accounting_ok": accounting_ok,
        "by_status": {"failed": 2, "kept": 7, "removed": 3},
        "by_reason": {
            "failed/fetch/http_404": 1,
            "failed/manifest/bad_id": 1,
            "kept/verified_component": 7,
            "removed/isolated_component": 2,
            "removed/no_verified_pair": 1,
        },
    }
    counters = {"verify": {"verified": 20}}
    if reviews:
        counters["review"] = reviews
    outputs = {key: path for key, path in output_paths(OUT).items() if key != "run_json"}
    return {"counts": counts, "counters": counters, "outputs": outputs, "seconds": {"select_wall": 1.5}}


def test_the_summary_names_every_status_reason_and_the_outputs() -> None:
    lines = summary_lines(_run())
    assert lines[0] == "rows 12: failed 2, kept 7, removed 3"
    for reason, n in _run()["counts"]["by_reason"].items():
        assert any(line.split() == [reason, str(n)] for line in lines), reason
    assert "accounting: every input row ends in exactly one decision" in lines
    assert lines[-1] == (
        f"outputs in {OUT}: train_clean.csv, decisions.parquet, pairs.parquet, audit.parquet, c2x_rejected.csv, "
        "report.html, run.json"
    )


def test_the_summary_says_when_the_accounting_fails_and_what_reviews_did() -> None:
    lines = summary_lines(_run(accounting_ok=False, reviews={"keep": 2, "changed": 1}))
    assert "accounting FAILED: 12 decisions for 13 input rows, 12 distinct ids" in lines
    assert "reviews: changed 1, keep 2" in lines


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> list:
    """`run_curation` and `run_reselection` replaced by a finished run; the calls they got."""
    calls = []

    def curate(config, beam_args):
        calls.append(("curate", config.output))
        return _run()

    def reselect(output, preset, select, beam_args, progress=True):
        calls.append(("select", output))
        return _run(reviews={"keep": 1})

    monkeypatch.setattr("pipeline.curation.curate.run_curation", curate)
    monkeypatch.setattr("pipeline.curation.reselect.run_reselection", reselect)
    return calls


CURATE = ["curate", "--train-csv", "train.csv", "--output", OUT, "--no-progress"]
SELECT = ["select", "--output", OUT, "--min-inliers", "40", "--no-progress"]


@pytest.mark.parametrize("argv", [CURATE, SELECT], ids=["curate", "select"])
def test_the_summary_comes_first_and_the_json_line_last(argv, stubbed, capsys) -> None:
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:-1] == summary_lines(_run(reviews={"keep": 1} if argv is SELECT else None))
    last = json.loads(lines[-1])
    assert last["output"] == OUT and last["by_status"] == {"failed": 2, "kept": 7, "removed": 3}
    assert last["accounting_ok"] is True
    if argv is SELECT:
        assert last["reviews"] == {"keep": 1} and last["seconds"] == 1.5
    assert stubbed == [(argv[0], OUT)]


@pytest.mark.parametrize("argv", [CURATE, SELECT], ids=["curate", "select"])
def test_json_prints_the_json_line_alone(argv, stubbed, capsys) -> None:
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    assert json.loads(out)["by_status"]["kept"] == 7


def test_the_dry_run_prints_its_plan_alone(capsys) -> None:
    """`gld curate --dry-run` keeps its contract: the plan, one JSON object, and nothing else."""
    assert main([*CURATE, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and {"runner", "steps"} <= set(json.loads(out))
