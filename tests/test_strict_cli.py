"""Strict command lines (pipeline/cli/strict.py): a flag that is neither a `gld` flag nor a Beam
option stops the command before any work, exit 2, with the closest flag."""

from __future__ import annotations

import pytest

from pipeline.cli.main import _curate_parser, main
from pipeline.cli.strict import beam_option_names, parse_strictly, suggestion, unknown_arguments

BEAM_OPTIONS = [
    "--direct_num_workers=1",
    "--direct_running_mode",
    "multi_processing",
    "--runner",
    "FnApiRunner",
    "--project=p",
    "--region",
    "europe-west1",
    "--temp_location=gs://b/tmp",
    "--worker_machine_type=n1-standard-8",
    "--experiments=use_runner_v2",
    "--sdk_container_image=gcr.io/p/gld",
    "--save_main_session",
]


def test_beam_options_pass_through_and_project_flags_are_parsed() -> None:
    argv = ["--train-csv", "t.csv", "--output", "o", "--min-inliers", "40", *BEAM_OPTIONS]
    args, beam_args = parse_strictly(_curate_parser(), argv)
    assert args.min_inliers == 40
    assert beam_args == BEAM_OPTIONS
    assert unknown_arguments(BEAM_OPTIONS) == []


@pytest.mark.parametrize(
    ("argv", "unknown", "close"),
    [
        (["--min_inliers", "400"], "--min_inliers 400", "--min-inliers"),
        (["--min-inlier=400"], "--min-inlier=400", "--min-inliers"),
        (["--direct-num-workers=1"], "--direct-num-workers=1", "--direct_num_workers"),
        (["--colour", "red"], "--colour red", ""),
        (["stray"], "stray", ""),
    ],
)
def test_anything_else_stops_with_exit_2_and_the_closest_flag(
    argv: list[str], unknown: str, close: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse_strictly(_curate_parser(), ["--train-csv", "t.csv", "--output", "o", *argv])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"gld curate: error: unrecognized arguments: {unknown} " in err
    assert (f"did you mean {close}?" in err) if close else "did you mean" not in err


@pytest.mark.parametrize(
    "command",
    [
        ["curate", "--train-csv", "t.csv", "--output", "o"],
        ["ingest", "--train-csv", "t.csv", "--output", "o"],
        ["select", "--output", "o"],
        ["overlap", "--output", "o", "--eval-images", "e"],
        ["demo", "--output", "o"],
        ["export-tfrecords", "--train-clean", "t.csv", "--output", "o", "--images", "i"],
    ],
)
def test_every_command_that_hands_flags_to_beam_is_strict(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--min_inliers", "400"])
    assert stopped.value.code == 2
    assert "unrecognized arguments: --min_inliers 400" in capsys.readouterr().err


def test_suggestions_read_underscores_as_hyphens() -> None:
    assert suggestion("--pairs_k=5", ["--pairs-k", "--pairs"]) == "--pairs-k"
    assert suggestion("--zzz", ["--pairs-k"]) == ""
    assert "--runner" in beam_option_names() and "--direct_num_workers" in beam_option_names()
