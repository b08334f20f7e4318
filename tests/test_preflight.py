"""Whole-run mistakes refused before the run folder is touched (pipeline/curation/preflight.py
`check_paths`), one line each, exit 2 from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.curation.config import CurateConfig, build_config
from pipeline.curation.preflight import check_paths


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("id,url,landmark_id\n0123456789abcdef,,1\n")
    return path


def _config(manifest: Path, output: Path, **fetch: str) -> CurateConfig:
    return build_config(str(manifest), str(output), overrides={"fetch": fetch} if fetch else None)


@pytest.mark.parametrize(
    ("flag", "make", "message"),
    [
        ("images_dir", None, "--images-dir {dir} does not exist"),
        ("images_dir", "empty", "--images-dir {dir} is empty"),
        ("tar_dir", None, "--tar-dir {dir} does not exist"),
        ("tar_dir", "empty", "--tar-dir {dir} is empty"),
    ],
)
def test_a_missing_or_empty_input_folder_is_refused(
    manifest: Path, tmp_path: Path, flag: str, make: str | None, message: str
) -> None:
    folder = tmp_path / "inputs"
    if make:
        folder.mkdir()
    with pytest.raises(ValueError, match=message.format(dir=folder)):
        check_paths(_config(manifest, tmp_path / "out", **{flag: str(folder)}))


def test_an_output_that_is_a_file_or_a_missing_manifest_is_refused(manifest: Path, tmp_path: Path) -> None:
    afile = tmp_path / "out.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match=f"--output {afile} is a file"):
        check_paths(_config(manifest, afile))
    with pytest.raises(ValueError, match=r"--train-csv .*nope\.csv does not exist"):
        check_paths(_config(tmp_path / "nope.csv", tmp_path / "out"))
    images = tmp_path / "images" / "a"
    images.mkdir(parents=True)
    (images / "x.jpg").write_bytes(b"x")
    check_paths(_config(manifest, tmp_path / "out", images_dir=str(tmp_path / "images")))  # fine


def test_the_command_line_says_it_in_one_line_and_exits_2(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out"
    code = main(["curate", "--train-csv", str(manifest), "--output", str(output), "--images-dir", "/nonexistent"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "gld curate: error: --images-dir /nonexistent does not exist\n"
    assert not output.exists()  # refused before the folder was touched
