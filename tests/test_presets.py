"""Presets and flags: `balanced` (the default), `gldv2-components` (SIFT), `gldv2-official`
(smlyaka), and the learned `recall-first` and `precision-first`."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.cli.main import _curate_parser, main, overrides_from
from pipeline.curation.config import CurateConfig, build_config
from transforms.features.extractors.config import FeatureConfig


def _config(*flags: str):
    args, _ = _curate_parser().parse_known_args(["--train-csv", "t.csv", "--output", "o", *flags])
    return build_config(args.train_csv, args.output, args.preset, overrides_from(args))


def test_default_and_sift_presets_are_connected_components() -> None:
    default, sift = _config(), _config("--preset", "gldv2-components")
    assert default.preset == "balanced"
    assert (default.features.extractor, sift.features.extractor) == ("aliked", "sift")
    assert (default.verify.matcher, sift.verify.matcher) == ("cascade", "nn")
    for config in (default, sift):
        select = config.select
        assert (select.policy, select.min_inliers, select.min_component_size) == ("components", 30, 2)
        assert not select.largest_component_only
        assert select.drop_isolated_components
        assert (select.isolated_max_size, select.isolation_inliers) == (2, 15)


def test_official_preset_is_the_smlyaka_rule_with_their_ransac() -> None:
    config = _config("--preset", "gldv2-official")
    select = config.select
    assert (select.policy, select.min_inliers, select.min_degree, select.min_class_size) == ("degree", 30, 3, 2)
    assert (config.verify.model, config.verify.ransac_threshold, config.verify.ransac_iterations) == (
        "affine",
        20.0,
        1000,
    )
    assert config.pairs.k == 100


def test_flags_override_the_preset() -> None:
    config = _config("--preset", "gldv2-official", "--min-degree", "2", "--min-class-size", "3")
    assert (config.select.policy, config.select.min_degree, config.select.min_class_size) == ("degree", 2, 3)
    largest = _config("--policy", "components", "--keep-largest-component")
    assert largest.select.largest_component_only and largest.select.policy == "components"


def test_learned_presets_name_the_trade_off_on_aliked_and_lightglue() -> None:
    recall, precision = _config("--preset", "recall-first"), _config("--preset", "precision-first")
    for config in (recall, precision):
        assert (config.features.extractor, config.verify.matcher) == ("aliked", "lightglue")
        assert (config.features.max_features, config.features.working_side) == (4096, 640)
    assert recall.select.min_inliers < precision.select.min_inliers
    # a flag still overrides: nearest-neighbour matching of the same features
    assert _config("--preset", "recall-first", "--matcher", "nn").verify.matcher == "nn"


def test_isolated_rule_flags() -> None:
    assert not _config("--no-drop-isolated-components").select.drop_isolated_components
    assert not _config("--preset", "gldv2-official").select.drop_isolated_components
    tuned = _config(
        "--preset",
        "gldv2-official",
        "--policy",
        "components",
        "--drop-isolated-components",
        "--isolated-max-size",
        "3",
        "--isolation-inliers",
        "20",
    )
    assert (tuned.select.drop_isolated_components, tuned.select.isolated_max_size, tuned.select.isolation_inliers) == (
        True,
        3,
        20,
    )
    # an on-switch left out leaves the preset's value (False is only an override when given)
    assert not _config("--policy", "components").select.largest_component_only


@pytest.mark.parametrize("name", ["orb", "SIFT"])
def test_an_unknown_extractor_is_refused_wherever_a_config_is_resolved(name: str) -> None:
    """`FeatureConfig` does not import the registry: presets and overrides, a run.json's config
    and a config built in code are checked against it (`check_extractor`) all the same."""
    message = f"unknown extractor '{name}'; choose from \\['aliked', 'delf', 'sift'\\]"
    with pytest.raises(ValueError, match=message):
        build_config("t.csv", "o", overrides={"features": {"extractor": name}})
    with pytest.raises(ValueError, match=message):
        build_config("t.csv", "o", overrides={"features": {"extractor": name, "max_features": 100}})
    with pytest.raises(ValueError, match=message):
        CurateConfig.from_json({"train_csv": "t.csv", "output": "o", "features": {"extractor": name}})
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(_config(), features=FeatureConfig(extractor=name, max_features=100))


def test_a_bad_extractor_flag_stops_gld_curate_with_one_line_and_exit_2(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["curate", "--train-csv", "t.csv", "--output", str(tmp_path / "out"), "--extractor", "orb"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gld curate: error: argument --extractor: invalid choice: 'orb' (choose from ")
    assert all(name in err[-1] for name in ("aliked", "delf", "sift"))
    assert not (tmp_path / "out").exists()
