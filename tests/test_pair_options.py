"""The pair and verification options: `--pairs knn`, `--matching delf-reference` and friends."""

from __future__ import annotations

import pytest

from pipeline.cli.main import _curate_parser, overrides_from
from pipeline.curation.config import build_config


def _parse(*flags: str) -> tuple[dict, str]:
    args, beam_args = _curate_parser().parse_known_args(["--train-csv", "t.csv", "--output", "o", *flags])
    assert beam_args == []
    return overrides_from(args), args.matching


def test_knn_flags_reach_the_pair_config() -> None:
    overrides, matching = _parse(
        "--pairs", "knn", "--pairs-k", "5", "--embedding-model", "gs://b/m", "--embedding-signature", "embed"
    )
    config = build_config("t.csv", "o", overrides=overrides, matching=matching)
    assert (config.pairs.mode, config.pairs.k) == ("knn", 5)
    assert (config.pairs.embedding_model, config.pairs.embedding_signature) == ("gs://b/m", "embed")
    assert config.verify == build_config("t.csv", "o").verify


def test_delf_reference_preset_is_the_official_recipe() -> None:
    overrides, matching = _parse("--matching", "delf-reference")
    verify = build_config("t.csv", "o", overrides=overrides, matching=matching).verify
    assert (verify.ratio, verify.mutual, verify.max_distance) == (1.0, False, 0.8)
    assert (verify.model, verify.ransac_threshold, verify.ransac_iterations) == ("affine", 20.0, 1000)
    assert not verify.local_optimisation
    assert build_config("t.csv", "o", matching="delf-reference").matching == "delf-reference"


def test_explicit_flags_override_the_matching_preset() -> None:
    overrides, matching = _parse(
        "--matching", "delf-reference", "--ransac-threshold", "8", "--ransac-model", "homography"
    )
    verify = build_config("t.csv", "o", overrides=overrides, matching=matching).verify
    assert (verify.max_distance, verify.ransac_threshold, verify.model) == (0.8, 8.0, "homography")


def test_unknown_matching_is_rejected() -> None:
    with pytest.raises(ValueError, match="matching"):
        build_config("t.csv", "o", matching="nope")
    with pytest.raises(SystemExit):
        _parse("--matching", "nope")
