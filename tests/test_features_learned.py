"""Tests of the learned extractor and matcher (transforms.features.extractors.learned): ALIKED features and
LightGlue matching from the installed weight files, offline, on the CPU."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.cli.main import main
from pipeline.curation.config import build_config
from pipeline.demo.data import DemoConfig, _texture, generate_demo, read_truth
from schemas.records import LocalFeatures
from transforms.features.extractors import learned as features_learned
from transforms.features.extractors.config import FeatureConfig
from transforms.features.extractors.registry import EXTRACTORS
from transforms.matching.verify import VerifyConfig, inlier_matches, verify_pair

WIDTH, HEIGHT = 480, 320


def _textured(seed: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    return _texture(np.random.default_rng([seed, 1]), (width, height), distractor=False)


def _warped(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image under a mild rotation + scale, and that affine map [2, 3]."""
    affine = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), 12, 0.9)
    return cv2.warpAffine(pixels, affine, (WIDTH, HEIGHT), borderMode=cv2.BORDER_REFLECT), affine


def _features(image_id: str, pixels: np.ndarray, config: FeatureConfig) -> LocalFeatures:
    keypoints, descriptors, scales, scores = EXTRACTORS["aliked"](config)(pixels)
    height, width = pixels.shape[:2]
    return LocalFeatures(image_id, 1, 1, keypoints, descriptors, scales, scores, width, height)


@pytest.fixture(scope="module")
def config() -> FeatureConfig:
    return FeatureConfig(extractor="aliked", max_features=1024)


def test_aliked_defaults_and_validation() -> None:
    config = FeatureConfig(extractor="aliked")
    assert (config.max_features, config.working_side, config.aliked_model) == (4096, 640, "aliked-n16")
    with pytest.raises(ValueError, match="aliked_model"):
        FeatureConfig(extractor="aliked", aliked_model="aliked-x99")
    with pytest.raises(ValueError, match="aliked_threshold"):
        FeatureConfig(extractor="aliked", aliked_threshold=0.0)
    with pytest.raises(ValueError, match="uint8"):
        FeatureConfig(extractor="aliked", descriptor_dtype="uint8")


def test_aliked_finds_strongest_first_within_the_image_and_repeats_exactly(config: FeatureConfig) -> None:
    pixels = _textured(1)
    keypoints, descriptors, scales, scores = EXTRACTORS["aliked"](config)(pixels)
    assert 100 < len(keypoints) <= config.max_features
    assert descriptors.shape == (len(keypoints), 128) and descriptors.dtype == np.float16
    assert keypoints.dtype == np.float32 and scores.dtype == np.float32 and scales.dtype == np.float32
    assert (keypoints[:, 0] >= -0.5).all() and (keypoints[:, 0] <= WIDTH - 0.5).all()
    assert (keypoints[:, 1] >= -0.5).all() and (keypoints[:, 1] <= HEIGHT - 0.5).all()
    assert (np.diff(scores) <= 0).all()
    again = EXTRACTORS["aliked"](config)(pixels)
    assert all(np.array_equal(x, y) for x, y in zip((keypoints, descriptors, scales, scores), again, strict=True))


@pytest.mark.parametrize("size", [(WIDTH, HEIGHT), (333, 517)])
def test_the_cpu_dense_map_computes_what_kornia_computes(config: FeatureConfig, size: tuple[int, int]) -> None:
    # the same keypoints and descriptors as kornia's own forward, up to float rounding, on an
    # image a multiple of 32 and on one that needs padding
    model = features_learned._aliked(config.aliked_model, config.aliked_threshold)
    pixels = _textured(4, *size)
    image = torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
    with torch.inference_mode():
        theirs = model(image)[0]
        keypoints, scores, descriptors = features_learned._aliked_forward(model, image)
    assert len(keypoints) == len(theirs.keypoints) > 100
    assert torch.allclose(keypoints, theirs.keypoints, atol=1e-3)
    assert torch.allclose(scores, theirs.keypoint_scores, atol=1e-5)
    assert torch.allclose(descriptors, theirs.descriptors, atol=1e-4)


def test_working_side_reports_keypoints_in_full_image_pixels(config: FeatureConfig) -> None:
    small = _textured(2)
    # pixel doubling: shrinking it back by area gives exactly `small`
    large = cv2.resize(small, (WIDTH * 2, HEIGHT * 2), interpolation=cv2.INTER_NEAREST)
    at_small = _features("s", small, config)
    at_large = _features("l", large, FeatureConfig(extractor="aliked", max_features=1024, working_side=WIDTH))
    # the same detections, at the pixel centres of an image twice as large
    assert np.array_equal(at_large.descriptors, at_small.descriptors)
    assert np.abs(at_large.keypoints - (at_small.keypoints * 2 + 0.5)).max() < 1e-3


def test_max_features_caps_the_strongest(config: FeatureConfig) -> None:
    pixels = _textured(3)
    full = _features("a", pixels, config)
    capped = _features("a", pixels, FeatureConfig(extractor="aliked", max_features=50))
    assert capped.count == 50
    assert np.array_equal(capped.scores, full.scores[:50])


@pytest.mark.parametrize("matcher", ["nn", "lightglue", "cascade"])
def test_a_warped_view_verifies_and_an_unrelated_image_does_not(config: FeatureConfig, matcher: str) -> None:
    pixels = _textured(4)
    view, affine = _warped(pixels)
    a, b = _features("a", pixels, config), _features("b", view, config)
    other = _features("c", _textured(5), config)
    verify = VerifyConfig(matcher=matcher)
    _, inliers, reason = verify_pair(a, b, verify)
    assert reason == "" and inliers >= 100
    assert verify_pair(a, other, verify)[1] < 30
    # the inliers follow the true map
    points_a, points_b = inlier_matches(a, b, verify)
    mapped = np.hstack([points_a, np.ones((len(points_a), 1), np.float32)]) @ affine.T
    assert np.median(np.linalg.norm(mapped - points_b, axis=1)) < 3.0


def test_the_cascade_keeps_what_nearest_neighbours_settle_and_asks_lightglue_the_rest(config: FeatureConfig) -> None:
    pixels = _textured(4)
    a, b = _features("a", pixels, config), _features("b", _warped(pixels)[0], config)
    other = _features("c", _textured(5), config)
    nn, lightglue = VerifyConfig(matcher="nn"), VerifyConfig(matcher="lightglue")
    settled = verify_pair(a, b, nn)
    assert settled[1] >= 30
    assert verify_pair(a, b, VerifyConfig(matcher="cascade", cascade_accept=30)) == settled
    # above what nearest neighbours reach, LightGlue decides
    stricter = VerifyConfig(matcher="cascade", cascade_accept=settled[1] + 1)
    assert verify_pair(a, b, stricter) == verify_pair(a, b, lightglue)
    assert verify_pair(a, other, VerifyConfig(matcher="cascade")) == verify_pair(a, other, lightglue)
    # at or under the rejection floor nearest neighbours settle the unrelated pair alone
    chance = verify_pair(a, other, nn)
    assert chance[1] < 30
    assert verify_pair(a, other, VerifyConfig(matcher="cascade", cascade_reject=chance[1])) == chance
    points = inlier_matches(a, b, stricter)
    assert len(points[0]) == verify_pair(a, b, lightglue)[1]


def test_lightglue_of_an_empty_feature_set_matches_nothing(config: FeatureConfig) -> None:
    a = _features("a", _textured(6), config)
    empty = LocalFeatures(
        "b",
        1,
        2,
        np.zeros((0, 2), np.float32),
        np.zeros((0, 128), np.float16),
        *[np.zeros(0, np.float32)] * 2,
        WIDTH,
        HEIGHT,
    )
    assert verify_pair(a, empty, VerifyConfig(matcher="lightglue")) == (0, 0, "no_features")


def test_lightglue_needs_aliked_features() -> None:
    with pytest.raises(ValueError, match="lightglue"):
        build_config("t.csv", "out", "gldv2-components", overrides={"verify": {"matcher": "lightglue"}})
    with pytest.raises(ValueError, match="cascade"):
        build_config("t.csv", "out", "gldv2-components", overrides={"verify": {"matcher": "cascade"}})
    with pytest.raises(ValueError, match="lightglue"):
        build_config(
            "t.csv",
            "out",
            "gldv2-components",
            overrides={
                "features": {"extractor": "aliked", "aliked_model": "aliked-t16"},
                "verify": {"matcher": "lightglue"},
            },
        )
    config = build_config(
        "t.csv", "out", overrides={"features": {"extractor": "aliked"}, "verify": {"matcher": "lightglue"}}
    )
    assert config.verify.matcher == "lightglue"


def test_weights_come_from_the_installed_wheel_or_fail_with_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    assert features_learned.weight_file("aliked-n16.pth").endswith("pretrained_weights/aliked-n16.pth")
    features_learned.check_weights("aliked-n16", "lightglue")
    with pytest.raises(ValueError, match="missing"):
        features_learned.weight_file("no-such-model.pth")

    def absent(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(ValueError, match="make install-learned"):
        features_learned.check_weights("aliked-n16")


def test_curate_with_aliked_and_lightglue_keeps_the_landmarks_and_repeats_exactly(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    dataset = generate_demo(data, "http://unused", DemoConfig(images=24, seed=5, broken_rows=0, image_size=320))
    truth = read_truth(dataset.truth_csv)
    outputs = []
    for run in ("a", "b"):
        out = str(tmp_path / f"out-{run}")
        argv = ["curate", "--train-csv", dataset.train_csv, "--output", out, "--images-dir", f"{data}/images"]
        argv += ["--extractor", "aliked", "--matcher", "lightglue", "--no-progress", "--direct_num_workers=2"]
        assert main(argv) == 0
        outputs.append(out)
    decisions = pq.read_table(os.path.join(outputs[0], "decisions.parquet")).to_pylist()
    assert len(decisions) == dataset.rows
    kept = {d["id"] for d in decisions if d["status"] == "kept"}
    members = {i for i, (_, role) in truth.items() if role == "member"}
    assert kept <= members and len(kept) >= 0.9 * len(members)
    for name in ("train_clean.csv", "decisions.parquet", "pairs.parquet"):
        with open(os.path.join(outputs[0], name), "rb") as a, open(os.path.join(outputs[1], name), "rb") as b:
            assert a.read() == b.read(), name


def test_lightglue_batch_gives_each_pair_what_it_gets_alone(config: FeatureConfig) -> None:
    pixels = _textured(7)
    a, b = _features("a", pixels, config), _features("b", _warped(pixels)[0], config)
    other = _features("c", _textured(8), config)
    empty = dataclasses.replace(
        b, keypoints=b.keypoints[:0], descriptors=b.descriptors[:0], scales=b.scales[:0], scores=b.scores[:0]
    )
    pairs = [(a, b), (a, other), (b, empty), (other, b)]
    alone = [features_learned.lightglue_matches(x, y, 0.1) for x, y in pairs]
    assert len(alone[0][0]) >= 100 and len(alone[2][0]) == 0
    # the same matches in a batch, whichever pairs share it and in whatever order
    order = [2, 0, 3, 1]
    batched = features_learned.lightglue_match_batch(pairs, 0.1)
    shuffled = features_learned.lightglue_match_batch([pairs[i] for i in order], 0.1)
    assert len(batched) == len(shuffled) == len(pairs)
    for k, (idx_a, idx_b) in enumerate(alone):
        for got in (batched[k], shuffled[order.index(k)]):
            assert np.array_equal(got[0], idx_a) and np.array_equal(got[1], idx_b) and got[0].dtype == np.int64
        assert (np.diff(idx_a) >= 0).all()
    assert features_learned.lightglue_match_batch([], 0.1) == []


def test_lightglue_runs_with_pinned_adaptive_settings_and_one_cpu_thread_in_any_thread(config: FeatureConfig) -> None:
    a = _features("a", _textured(9), config)
    features_learned.lightglue_matches(a, a, 0.1)
    model = features_learned._lightglue(128, 0.1, features_learned.DEPTH_CONFIDENCE, features_learned.WIDTH_CONFIDENCE)
    assert (model.conf.depth_confidence, model.conf.width_confidence, model.conf.mp) == (0.95, 0.99, False)
    seen: list[int] = []

    def match_elsewhere() -> None:
        # Beam runs bundles in threads other than the one that loaded the model
        features_learned.lightglue_matches(a, a, 0.1)
        seen.append(torch.get_num_threads())

    worker = threading.Thread(target=match_elsewhere)
    worker.start()
    worker.join()
    assert seen == [1] and torch.get_num_threads() == 1
