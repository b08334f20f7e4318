"""Option parsing, config resolution and the shape of the curation graph."""

from __future__ import annotations

import os

import apache_beam as beam
import pytest

from pipeline.cli.main import _curate_parser, main, overrides_from
from pipeline.curation.config import build_config
from pipeline.curation.curate import build_curation, build_selection
from pipeline.curation.preflight import preflight
from pipeline.runner import local_runner_args


def test_project_flags_are_parsed_apart_from_beam_flags() -> None:
    args, beam_args = _curate_parser().parse_known_args(
        [
            "--train-csv",
            "t.csv",
            "--output",
            "o",
            "--min-inliers",
            "40",
            "--runner",
            "DataflowRunner",
            "--project",
            "p",
            "--pairs",
            "random",
            "--pairs-k",
            "7",
        ]
    )
    assert beam_args == ["--runner", "DataflowRunner", "--project", "p"]
    assert overrides_from(args) == {"select": {"min_inliers": 40}, "pairs": {"mode": "random", "k": 7}}


def test_config_validates_at_construction() -> None:
    config = build_config("t.csv", "o", overrides={"select": {"min_inliers": 12}})
    assert config.select.min_inliers == 12 and config.select.min_component_size == 2
    with pytest.raises(ValueError):
        build_config("t.csv", "o", overrides={"select": {"min_inliers": 0}})
    with pytest.raises(ValueError):
        build_config("t.csv", "o", preset="nope")
    with pytest.raises(TypeError):
        build_config("t.csv", "o", overrides={"verify": {"no_such_field": 1}})


def test_local_default_runner_is_in_process_and_explicit_runner_wins() -> None:
    assert local_runner_args([])[0] == "--runner=FnApiRunner"  # never the Prism download
    assert "--direct_running_mode=multi_threading" in local_runner_args([])
    assert local_runner_args(["--runner=DataflowRunner"]) == ["--runner=DataflowRunner"]
    assert f"--direct_num_workers={len(os.sched_getaffinity(0))}" in local_runner_args([])  # one per core
    assert local_runner_args(["--direct_num_workers=3"]).count("--direct_num_workers=3") == 1
    assert sum(a.startswith("--direct_num_workers") for a in local_runner_args(["--direct_num_workers=3"])) == 1


def test_graph_has_one_composite_per_stage(tmp_path) -> None:
    manifest = tmp_path / "train.csv"
    manifest.write_text("id,url,landmark_id\n0123456789abcdef,http://127.0.0.1/x.jpg,1\n")
    pipeline = beam.Pipeline()
    config = build_config(str(manifest), str(tmp_path / "out"))
    outputs = build_curation(pipeline, config, preflight(config))
    outputs |= build_selection(pipeline, config)  # the second job: finds its inputs when it runs
    assert set(outputs) == {"rows", "features", "pairs", "decisions", "failures"}
    top = {t.full_label for t in pipeline.transforms_stack[0].parts}
    ingest = next(t for t in pipeline.transforms_stack[0].parts if t.full_label == "Ingest")
    assert {"Ingest/FetchImages", "Ingest/DecodeImages", "Ingest/StoreImages"} <= {t.full_label for t in ingest.parts}
    for stage in (
        "ReadManifest",
        "Ingest",
        "WriteDuplicates",
        "ExtractFeatures",
        "GeneratePairs",
        "VerifyPairs",
        "SelectClean",
        "WriteDecisions",
        "WritePairs",
        "WriteTrainClean",
    ):
        assert stage in top


def test_curate_refuses_a_manifest_without_required_columns(tmp_path, capsys) -> None:
    manifest = tmp_path / "train.csv"
    manifest.write_text("id,url\n0123456789abcdef,http://127.0.0.1/x.jpg\n")
    assert main(["curate", "--train-csv", str(manifest), "--output", str(tmp_path / "o")]) == 2
    assert "landmark_id" in capsys.readouterr().err


def test_unknown_command_prints_usage(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "usage: gld" in capsys.readouterr().err


def test_select_refuses_a_folder_without_a_finished_curation(tmp_path, capsys) -> None:
    assert main(["select", "--output", str(tmp_path), "--min-inliers", "40"]) == 2
    assert "holds no finished run (no run.json): `gld select` needs one" in capsys.readouterr().err
    (tmp_path / "run.json").write_text("{}")
    assert main(["select", "--output", str(tmp_path)]) == 2
    assert "has no members, failures, pairs, audit_candidates" in capsys.readouterr().err
