"""The default preset end to end: learned features and the cascade matcher with adaptive
verification on the generated demo, and the clear stop of a machine without the `learned` extra."""

from __future__ import annotations

import sys

import pyarrow.parquet as pq

import transforms.features.extractors
from pipeline.cli.main import main
from pipeline.curation.config import DEFAULT_PRESET, build_config
from pipeline.demo.run import run_demo

BEAM = ["--direct_num_workers=2", "--no-progress"]


def test_the_default_is_learned_matching_verified_adaptively() -> None:
    config = build_config("t.csv", "o")
    assert config.preset == DEFAULT_PRESET == "balanced"
    assert (config.features.extractor, config.verify.matcher, config.pairs.verification) == (
        "aliked",
        "cascade",
        "adaptive",
    )
    assert config.verify.cascade_reject < config.verify.cascade_accept <= config.select.min_inliers
    assert config.select.policy == "components" and config.select.drop_isolated_components


def test_the_default_keeps_exactly_the_members_of_the_demo(tmp_path) -> None:
    result = run_demo(str(tmp_path / "demo"), 60, 5, BEAM)
    score = result["score"]
    assert (score.precision, score.recall, score.noise_kept) == (1.0, 1.0, 0)
    verify = result["run"]["counters"]["verify"]
    # nearest neighbours settled pairs, and adaptive verification skipped some
    assert verify["cascade_nn"] > 0 and verify["already_joined"] > 0
    pairs = pq.read_table(result["run"]["outputs"]["pairs"]).to_pylist()
    assert sum(p["reason"] == "already_joined" for p in pairs) == verify["already_joined"]


def test_without_the_learned_extra_the_default_stops_before_any_work(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "transforms.features.extractors.learned", None)  # as if torch were absent
    monkeypatch.delattr(transforms.features.extractors, "learned", raising=False)
    manifest = tmp_path / "train.csv"
    manifest.write_text("id,url,landmark_id\n0123456789abcdef,http://127.0.0.1/x.jpg,1\n")
    out = tmp_path / "out"
    assert main(["curate", "--train-csv", str(manifest), "--output", str(out), *BEAM]) == 2
    message = capsys.readouterr().err
    assert "`learned` extra" in message and "make install-learned" in message
    assert "--preset gldv2-components" in message
    assert not (out / "decisions.parquet").exists()
