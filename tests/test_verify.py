"""Tests of stage 6, geometric verification (transforms.matching.verify)."""

from __future__ import annotations

import apache_beam as beam
import cv2
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.demo.data import _texture
from schemas.records import LocalFeatures, PairResult
from tests.stores import store_features
from transforms.features.extractors.config import FeatureConfig
from transforms.features.extractors.sift import SiftExtractor
from transforms.matching import verify
from transforms.matching.pairs import GeneratePairs, PairConfig, candidate_pairs
from transforms.matching.verify import VerifyConfig, VerifyPairs, putative_matches, verify_pair, verify_result

WIDTH, HEIGHT = 640, 480


def _beam_options() -> PipelineOptions:
    return PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])


def _features(
    image_id: str, keypoints: np.ndarray, descriptors: np.ndarray, landmark_id: int = 1, line: int = 0
) -> LocalFeatures:
    n = len(keypoints)
    return LocalFeatures(
        id=image_id,
        landmark_id=landmark_id,
        line=line,
        keypoints=np.asarray(keypoints, np.float32).reshape(n, 2),
        descriptors=descriptors,
        scales=np.ones(n, np.float32),
        scores=np.ones(n, np.float32),
        width=WIDTH,
        height=HEIGHT,
    )


def _random_points(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform((0, 0), (WIDTH, HEIGHT), size=(n, 2)).astype(np.float32)


def _random_descriptors(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 128), dtype=np.uint8)


def _affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


# rotation 20 degrees, zoom 0.8, shift: a plausible change of viewpoint
AFFINE = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), 20, 0.8) + np.array([[0, 0, 25], [0, 0, -15]])


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return _random_points(rng, 200), _random_descriptors(rng, 200)


@pytest.fixture(scope="module")
def real_features() -> list[LocalFeatures]:
    """SIFT features of two unrelated textures and of a rotated copy of the first."""
    extractor = SiftExtractor(FeatureConfig(max_features=800))
    first = _texture(np.random.default_rng([3, 1]), (WIDTH, HEIGHT), distractor=False)
    other = _texture(np.random.default_rng([4, 1]), (WIDTH, HEIGHT), distractor=False)
    rotated = cv2.warpAffine(first, cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), 15, 0.9), (WIDTH, HEIGHT))
    return [_features(name, *extractor(pixels)[:2]) for name, pixels in (("a", first), ("b", other), ("c", rotated))]


# --- putative_matches ---------------------------------------------------------------------


def test_putative_matches_rejects_different_dimensions() -> None:
    with pytest.raises(ValueError, match="dimensions"):
        putative_matches(np.zeros((3, 128), np.uint8), np.zeros((3, 64), np.uint8), VerifyConfig())


def test_verify_pair_rejects_mixed_extractors() -> None:
    rng = np.random.default_rng(0)
    a = _features("a", _random_points(rng, 5), _random_descriptors(rng, 5))
    b = _features("b", _random_points(rng, 5), rng.random((5, 40), dtype=np.float32))
    with pytest.raises(ValueError):
        verify_pair(a, b, VerifyConfig())


@pytest.mark.parametrize(("na", "nb"), [(0, 0), (0, 5), (5, 0)])
def test_putative_matches_empty_inputs(na: int, nb: int) -> None:
    rng = np.random.default_rng(0)
    idx_a, idx_b = putative_matches(_random_descriptors(rng, na), _random_descriptors(rng, nb), VerifyConfig())
    assert idx_a.shape == idx_b.shape == (0,)
    assert np.issubdtype(idx_a.dtype, np.integer) and np.issubdtype(idx_b.dtype, np.integer)


def test_putative_matches_identity_and_permutation(scene: tuple) -> None:
    _, descriptors = scene
    permutation = np.random.default_rng(2).permutation(len(descriptors))
    idx_a, idx_b = putative_matches(descriptors, descriptors[permutation], VerifyConfig())
    assert len(idx_a) == len(descriptors)
    np.testing.assert_array_equal(permutation[idx_b], idx_a)


def test_ratio_test_drops_ambiguous_matches() -> None:
    rng = np.random.default_rng(5)
    a = _random_descriptors(rng, 4)
    # b holds a[0] twice (ambiguous for a[0]) and a[1], a[2], a[3] once
    b = np.concatenate([a[:1], a[:1], a[1:]])
    idx_a, _ = putative_matches(a, b, VerifyConfig(ratio=0.9))
    assert sorted(idx_a.tolist()) == [1, 2, 3]
    idx_a, idx_b = putative_matches(a, b, VerifyConfig(ratio=1.0))
    assert sorted(idx_a.tolist()) == [0, 1, 2, 3]
    assert b[idx_b].tolist() == a[idx_a].tolist()


def test_mutual_check_keeps_only_the_closest_query() -> None:
    target = np.zeros((2, 8), np.float32)
    target[0, 0] = 1.0
    target[1, 7] = 1.0
    queries = np.zeros((2, 8), np.float32)
    queries[0, :2] = (1.0, 0.1)  # closest to target[0]
    queries[1, :2] = (1.0, 0.5)  # also nearest target[0], but farther from it than queries[0]
    both = putative_matches(queries, target, VerifyConfig(ratio=1.0, mutual=False))
    assert both[0].tolist() == [0, 1] and both[1].tolist() == [0, 0]
    mutual = putative_matches(queries, target, VerifyConfig(ratio=1.0, mutual=True))
    assert mutual[0].tolist() == [0] and mutual[1].tolist() == [0]


def test_putative_matches_accept_float_descriptors(scene: tuple) -> None:
    _, descriptors = scene
    idx_a, idx_b = putative_matches(descriptors.astype(np.float16), descriptors.astype(np.float32), VerifyConfig())
    np.testing.assert_array_equal(idx_a, idx_b)
    assert len(idx_a) == len(descriptors)


# --- verify_pair --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["affine", "homography"])
def test_identical_feature_sets_are_all_inliers(scene: tuple, model: str) -> None:
    points, descriptors = scene
    a = _features("a", points, descriptors)
    assert verify_pair(a, a, VerifyConfig(model=model)) == (200, 200, "")


def test_affine_copy_is_verified(scene: tuple) -> None:
    points, descriptors = scene
    permutation = np.random.default_rng(3).permutation(len(points))
    a = _features("a", points, descriptors)
    b = _features("b", _affine(points, AFFINE)[permutation], descriptors[permutation])
    num_matches, inliers, reason = verify_pair(a, b, VerifyConfig())
    assert (num_matches, reason) == (200, "")
    assert inliers >= 0.95 * num_matches


def test_outliers_are_not_counted(scene: tuple) -> None:
    points, descriptors = scene
    moved = _affine(points, AFFINE)
    moved[:60] = _random_points(np.random.default_rng(4), 60)  # 30 % wrong positions
    num_matches, inliers, reason = verify_pair(
        _features("a", points, descriptors), _features("b", moved, descriptors), VerifyConfig()
    )
    assert (num_matches, reason) == (200, "")
    assert 140 <= inliers <= 145


def test_homography_model_handles_perspective(scene: tuple) -> None:
    points, descriptors = scene
    corners = np.float32([[0, 0], [WIDTH, 0], [WIDTH, HEIGHT], [0, HEIGHT]])
    # strong keystone: the right side recedes to 180 of 480 pixels
    homography = cv2.getPerspectiveTransform(corners, np.float32([[0, 0], [WIDTH, 150], [WIDTH, 330], [0, HEIGHT]]))
    moved = cv2.perspectiveTransform(points[None], homography)[0]
    a, b = _features("a", points, descriptors), _features("b", moved, descriptors)
    _, with_homography, reason = verify_pair(a, b, VerifyConfig(model="homography"))
    _, with_affine, _ = verify_pair(a, b, VerifyConfig(model="affine"))
    assert reason == ""
    assert with_homography >= 0.95 * len(points)
    assert with_affine < with_homography


def test_unrelated_random_descriptors_do_not_verify(scene: tuple) -> None:
    points, descriptors = scene
    rng = np.random.default_rng(9)
    other = _features("b", _random_points(rng, 200), _random_descriptors(rng, 200))
    for model in ("affine", "homography"):
        _, inliers, _ = verify_pair(_features("a", points, descriptors), other, VerifyConfig(model=model))
        assert inliers < 30


def test_real_features_of_unrelated_textures_do_not_verify(real_features: list[LocalFeatures]) -> None:
    a, b, _ = real_features
    assert a.count > 300 and b.count > 300
    for model in ("affine", "homography"):
        _, inliers, _ = verify_pair(a, b, VerifyConfig(model=model))
        assert inliers < 30


def test_real_features_of_a_rotated_copy_verify(real_features: list[LocalFeatures]) -> None:
    a, _, c = real_features
    num_matches, inliers, reason = verify_pair(a, c, VerifyConfig())
    assert reason == "" and inliers >= 200 and inliers <= num_matches


def test_verify_pair_is_deterministic(real_features: list[LocalFeatures]) -> None:
    a, b, c = real_features
    for config in (VerifyConfig(), VerifyConfig(model="homography"), VerifyConfig(model="fundamental")):
        assert verify_pair(a, b, config) == verify_pair(a, b, config)
        assert verify_pair(a, c, config) == verify_pair(a, c, config)


@pytest.mark.parametrize("model", ["affine", "homography", "fundamental"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_zero_to_three_matches_never_verify(scene: tuple, model: str, n: int) -> None:
    points, descriptors = scene
    few = _features("few", points[:n], descriptors[:n])
    many = _features("many", points, descriptors)
    config = VerifyConfig(model=model)
    assert verify_pair(few, few, config) == (n, 0, "too_few_matches")
    assert verify_pair(few, many, config) == (n, 0, "too_few_matches")
    assert verify_pair(many, few, config) == (n, 0, "too_few_matches")


@pytest.mark.parametrize("model", ["affine", "homography", "fundamental"])
def test_no_features_on_either_side(scene: tuple, model: str) -> None:
    points, descriptors = scene
    empty = _features("empty", np.zeros((0, 2)), np.zeros((0, 128), np.uint8))
    many = _features("many", points, descriptors)
    config = VerifyConfig(model=model)
    assert verify_pair(empty, many, config) == (0, 0, "no_features")
    assert verify_pair(many, empty, config) == (0, 0, "no_features")
    assert verify_pair(empty, empty, config) == (0, 0, "no_features")


def test_fundamental_needs_eight_matches(scene: tuple) -> None:
    points, descriptors = scene
    seven = _features("seven", points[:7], descriptors[:7])
    assert verify_pair(seven, seven, VerifyConfig(model="fundamental")) == (7, 0, "too_few_matches")
    assert verify_pair(seven, seven, VerifyConfig(model="affine")) == (7, 7, "")


@pytest.mark.parametrize("model", ["affine", "homography", "fundamental"])
def test_all_keypoints_at_one_place_is_degenerate(scene: tuple, model: str) -> None:
    points, descriptors = scene
    same = _features("same", np.full((200, 2), 10.0, np.float32), descriptors)
    normal = _features("normal", points, descriptors)
    for a, b in ((same, same), (same, normal), (normal, same)):
        assert verify_pair(a, b, VerifyConfig(model=model)) == (200, 0, "degenerate_keypoints")


def test_collinear_keypoints_are_degenerate(scene: tuple) -> None:
    _, descriptors = scene
    t = np.linspace(0, 400, 200, dtype=np.float32)
    line = _features("line", np.stack([t, 0.5 * t + 20], axis=1), descriptors)
    assert verify_pair(line, line, VerifyConfig()) == (200, 0, "degenerate_keypoints")


def test_fundamental_model_verifies_a_view_change(scene: tuple) -> None:
    points, descriptors = scene
    a, b = _features("a", points, descriptors), _features("b", _affine(points, AFFINE), descriptors)
    num_matches, inliers, reason = verify_pair(a, b, VerifyConfig(model="fundamental", ransac_threshold=2.0))
    assert (num_matches, reason) == (200, "")
    assert inliers >= 190


def test_distance_bound_drops_far_neighbours() -> None:
    rng = np.random.default_rng(6)
    a = rng.random((50, 32), dtype=np.float32)
    near = a + rng.normal(0, 0.01, a.shape).astype(np.float32)
    far = rng.random((50, 32), dtype=np.float32)
    config = VerifyConfig(ratio=1.0, mutual=False, max_distance=0.2)
    idx_a, idx_b = putative_matches(a, near, config)
    np.testing.assert_array_equal(idx_a, np.arange(50))
    np.testing.assert_array_equal(idx_b, np.arange(50))
    assert len(putative_matches(a, far, config)[0]) == 0
    # without the bound every descriptor keeps its nearest neighbour, however far
    assert len(putative_matches(a, far, VerifyConfig(ratio=1.0, mutual=False))[0]) == 50


def test_ransac_is_seeded(real_features: list[LocalFeatures]) -> None:
    a, b, c = real_features
    # few iterations on unrelated images: the outcome depends on the samples drawn
    by_seed = {
        seed: verify_pair(a, b, VerifyConfig(ratio=1.0, mutual=False, ransac_iterations=20, seed=seed))
        for seed in range(6)
    }
    assert len(set(by_seed.values())) > 1
    for seed, result in by_seed.items():
        assert verify_pair(a, b, VerifyConfig(ratio=1.0, mutual=False, ransac_iterations=20, seed=seed)) == result
    assert verify_pair(a, c, VerifyConfig(seed=1)) == verify_pair(a, c, VerifyConfig(seed=1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratio": 0.0},
        {"ratio": 1.5},
        {"model": "similarity"},
        {"max_distance": 0.0},
        {"max_distance": 2.5},
        {"seed": -1},
        {"ransac_threshold": 0.0},
        {"ransac_iterations": 0},
        {"ransac_confidence": 1.0},
        {"ransac_confidence": 0.0},
    ],
)
def test_verify_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        VerifyConfig(**kwargs)


# --- verify_result and the PTransform -----------------------------------------------------


def test_verify_result_orders_ids(scene: tuple) -> None:
    points, descriptors = scene
    small = _features("0aa", points[:50], descriptors[:50])
    big = _features("0ab", _affine(points, AFFINE), descriptors)
    forward = verify_result(6, small, big, VerifyConfig())
    backward = verify_result(6, big, small, VerifyConfig())
    assert forward == backward
    assert (forward.landmark_id, forward.id_a, forward.id_b) == (6, "0aa", "0ab")
    num_matches, inliers, reason = verify_pair(small, big, VerifyConfig())
    assert (forward.num_matches, forward.inliers, forward.reason) == (num_matches, inliers, reason)
    assert forward.num_matches == 50 and forward.inliers >= 45


def test_verify_pairs_transform(tmp_path, scene: tuple) -> None:
    points, descriptors = scene
    rng = np.random.default_rng(12)
    features = []
    # class 3: five views of one scene plus an unrelated image (six images, two blocks of 4)
    for i in range(5):
        matrix = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), 10 * i, 1.0 - 0.05 * i)
        features.append(_features(f"3{i:03d}", _affine(points, matrix), descriptors, landmark_id=3, line=i))
    features.append(_features("3999", _random_points(rng, 80), _random_descriptors(rng, 80), landmark_id=3))
    # class 8: an image without features, and two images with few shared features
    features.append(_features("8000", np.zeros((0, 2)), np.zeros((0, 128), np.uint8), landmark_id=8))
    features.append(_features("8001", points[:20], descriptors[:20], landmark_id=8))
    features.append(_features("8002", _affine(points[:20], AFFINE), descriptors[:20], landmark_id=8))
    by_id = {f.id: f for f in features}

    pair_config = PairConfig(block_size=4)
    verify_config = VerifyConfig()
    expected = []
    for landmark_id in (3, 8):
        ids = [f.id for f in features if f.landmark_id == landmark_id]
        for a, b in candidate_pairs(landmark_id, ids, pair_config):
            expected.append(verify_result(landmark_id, by_id[a], by_id[b], verify_config))
    assert len(expected) == 15 + 3
    verified = {(r.id_a, r.id_b) for r in expected if r.inliers >= 30}
    assert verified == {(f"3{i:03d}", f"3{j:03d}") for i in range(5) for j in range(i + 1, 5)}
    assert PairResult(8, "8000", "8001", 0, 0, "no_features") in expected
    assert PairResult(8, "8001", "8002", 20, 20, "") in expected

    refs = store_features(str(tmp_path / "features"), features)
    with BeamTestPipeline(options=_beam_options()) as pipeline:
        plans = {"features": pipeline | beam.Create(refs)} | GeneratePairs(pair_config)
        results = plans | VerifyPairs(verify_config, store=str(tmp_path / "verified"))
        assert_that(results, equal_to(expected))


def test_putative_matches_in_row_blocks_equal_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    a = _random_descriptors(rng, 300)
    b = np.concatenate([a[:200], _random_descriptors(rng, 150)])[rng.permutation(350)]
    config = VerifyConfig(max_distance=1.2)
    whole = putative_matches(a, b, config)
    monkeypatch.setattr(verify, "_MATCH_ROWS", 7)
    blocks = putative_matches(a, b, config)
    np.testing.assert_array_equal(whole[0], blocks[0])
    np.testing.assert_array_equal(whole[1], blocks[1])
    assert len(whole[0]) >= 200


def test_local_optimisation_finds_at_least_the_plain_inliers(real_features: list[LocalFeatures]) -> None:
    a, b, c = real_features
    plain = verify_pair(a, c, VerifyConfig(local_optimisation=False))
    optimised = verify_pair(a, c, VerifyConfig())
    assert optimised[0] == plain[0] and optimised[1] >= plain[1]
    assert verify_pair(a, b, VerifyConfig())[1] < 30
