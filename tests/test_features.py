"""Tests of stage 4, local feature extraction (transforms.features.stage)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import apache_beam as beam
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.demo.data import _texture
from schemas.records import DecodedImage, Failure, LocalFeatures, ManifestRow
from schemas.tables import FEATURES_SCHEMA, features_from_row, features_to_row
from schemas.vocabulary import Reason, Stage
from transforms.features.extractors.base import compact_descriptors
from transforms.features.extractors.config import FeatureConfig
from transforms.features.extractors.registry import EXTRACTORS, check_extractor
from transforms.features.extractors.sift import SiftExtractor, root_sift
from transforms.features.stage import ExtractFeatures, ExtractorModelHandler, extract_features
from transforms.ingest.decode import stored_pixels
from transforms.matching.verify import VerifyConfig, putative_matches, verify_pair

WIDTH, HEIGHT = 480, 320  # deliberately not square: an x/y swap would leave the bounds


def _beam_options() -> PipelineOptions:
    return PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])


def _textured(seed: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A landmark-like texture from the demo generator, uint8 [height, width, 3]."""
    return _texture(np.random.default_rng([seed, 1]), (width, height), distractor=False)


def _decoded(image_id: str, pixels: np.ndarray, line: int = 1, landmark_id: int = 7) -> DecodedImage:
    height, width = pixels.shape[:2]
    # PNG in the `jpeg` field: lossless, so the extractor sees exactly `pixels` (a real record
    # holds a JPEG; both decode through the same call).
    png = cv2.imencode(".png", np.ascontiguousarray(pixels[:, :, ::-1]))[1].tobytes()
    return DecodedImage(
        row=ManifestRow(line=line, id=image_id, url=f"http://x/{image_id}.jpg", landmark_id=landmark_id),
        jpeg=png,
        width=width,
        height=height,
        original_width=width,
        original_height=height,
        original_bytes=0,
        sha256="",
    )


def _undecodable(image_id: str, line: int, landmark_id: int) -> DecodedImage:
    """A record whose stored bytes do not decode (a corrupt store part)."""
    return dataclasses.replace(_decoded(image_id, np.zeros((8, 8, 3), np.uint8), line, landmark_id), jpeg=b"corrupt")


def _as_features(image_id: str, extracted: tuple, width: int = WIDTH, height: int = HEIGHT) -> LocalFeatures:
    keypoints, descriptors, scales, scores = extracted
    return LocalFeatures(image_id, 1, 0, keypoints, descriptors, scales, scores, width, height)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return _textured(5)


@pytest.fixture(scope="module")
def extracted(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return SiftExtractor(FeatureConfig(max_features=600))(image)


def test_output_types_shapes_and_order(extracted: tuple) -> None:
    keypoints, descriptors, scales, scores = extracted
    n = len(keypoints)
    assert 100 < n <= 600
    assert keypoints.dtype == np.float32 and keypoints.shape == (n, 2)
    assert descriptors.dtype == np.float16 and descriptors.shape == (n, 128)
    assert scales.dtype == np.float32 and scales.shape == (n,)
    assert scores.dtype == np.float32 and scores.shape == (n,)
    assert np.all(scales > 0) and np.all(scores > 0)
    assert np.all(np.diff(scores) <= 0), "strongest first"


def test_keypoints_are_xy_inside_a_non_square_image(extracted: tuple) -> None:
    keypoints = extracted[0]
    x, y = keypoints[:, 0], keypoints[:, 1]
    assert np.all((x >= 0) & (x < WIDTH)) and np.all((y >= 0) & (y < HEIGHT))
    # Features cover the whole width, which is larger than the height: (y, x) would not fit.
    assert x.max() > HEIGHT + 50


def test_keypoints_follow_the_content_in_x_and_y() -> None:
    """Texture only in the right half and bottom half: keypoints must be there, in (x, y)."""
    pixels = np.full((HEIGHT, WIDTH, 3), 120, np.uint8)
    pixels[HEIGHT // 2 :, WIDTH // 2 :] = _textured(9, WIDTH // 2, HEIGHT // 2)
    keypoints = SiftExtractor(FeatureConfig(max_features=300))(pixels)[0]
    assert len(keypoints) > 50
    # A blob detector responds a few pixels outside a step edge, hardly more.
    assert keypoints[:, 0].min() > WIDTH // 2 - 15
    assert keypoints[:, 1].min() > HEIGHT // 2 - 15


def test_deterministic_across_instances(image: np.ndarray, extracted: tuple) -> None:
    again = SiftExtractor(FeatureConfig(max_features=600))(image)
    for first, second in zip(extracted, again, strict=True):
        assert first.dtype == second.dtype
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("max_features", [1, 50, 200])
def test_max_features_caps_the_count(image: np.ndarray, max_features: int) -> None:
    keypoints, descriptors, scales, scores = SiftExtractor(FeatureConfig(max_features=max_features))(image)
    # The texture has far more than 200 features, so the cap is reached exactly.
    assert len(keypoints) == len(descriptors) == len(scales) == len(scores) == max_features


def test_root_sift_rows_have_unit_l2_norm(extracted: tuple) -> None:
    norms = np.linalg.norm(extracted[1].astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-3)


def test_uint8_root_sift_is_scaled_to_bytes(image: np.ndarray, extracted: tuple) -> None:
    as_bytes = SiftExtractor(FeatureConfig(max_features=600, descriptor_dtype="uint8"))(image)
    np.testing.assert_array_equal(as_bytes[0], extracted[0])
    assert as_bytes[1].dtype == np.uint8
    norms = np.linalg.norm(as_bytes[1].astype(np.float64) / 255.0, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=0.03)
    # the two storages hold the same descriptor up to the byte quantisation step
    np.testing.assert_allclose(as_bytes[1] / 255.0, extracted[1].astype(np.float64), atol=0.5 / 255 + 1e-3)


def test_plain_sift_is_not_root_normalised(image: np.ndarray) -> None:
    for dtype in ("uint8", "float32"):
        descriptors = SiftExtractor(FeatureConfig(max_features=100, root_sift=False, descriptor_dtype=dtype))(image)[1]
        assert descriptors.dtype == np.dtype(dtype) and descriptors.shape == (100, 128)
        # OpenCV scales SIFT to an L2 norm of 512 before clipping to bytes: far from 1 or 255.
        norms = np.linalg.norm(descriptors.astype(np.float64), axis=1)
        assert np.all(norms > 300)


def test_root_sift_and_compact_descriptor_values() -> None:
    raw = np.zeros((3, 128), np.float32)
    raw[0, 5] = 4.0  # L1 = 4 -> sqrt(1) = 1 -> 255
    raw[1, :4] = 1.0  # L1 = 4 -> sqrt(0.25) = 0.5 -> 127.5 -> 128
    # raw[2] is all zero: must stay zero, not NaN
    root = root_sift(raw)
    assert root.dtype == np.float32 and root[0, 5] == 1.0 and list(root[1, :5]) == [0.5, 0.5, 0.5, 0.5, 0.0]
    assert not root[2].any() and not np.isnan(root).any()
    as_bytes = compact_descriptors(root, "uint8")
    assert as_bytes.dtype == np.uint8
    assert as_bytes[0, 5] == 255 and as_bytes[0].sum() == 255
    assert list(as_bytes[1, :5]) == [128, 128, 128, 128, 0]
    plain = compact_descriptors(np.array([[0.4, 254.6, 300.0, -3.0]]), "uint8", byte_scale=1.0)
    assert plain.tolist() == [[0, 255, 255, 0]]
    half = compact_descriptors(root, "float16")
    assert half.dtype == np.float16 and half[1, 0] == 0.5


def test_working_side_reports_keypoints_in_full_image_pixels() -> None:
    """SIFT on the image shrunk to half: the same scene points, in the full image's pixels."""
    half = _textured(31, 640, 400)
    # each pixel repeated 2 x 2: shrinking by area averaging gives `half`'s grey levels back exactly
    full = np.repeat(np.repeat(half, 2, axis=0), 2, axis=1)
    shrunk = SiftExtractor(FeatureConfig(max_features=300, working_side=640))(full)
    direct = SiftExtractor(FeatureConfig(max_features=300))(half)
    np.testing.assert_allclose(shrunk[0], (direct[0] + 0.5) * 2 - 0.5, atol=1e-3)
    np.testing.assert_allclose(shrunk[2], direct[2] * 2, rtol=1e-5)
    np.testing.assert_array_equal(shrunk[1], direct[1])
    assert shrunk[0][:, 0].max() > 700, "keypoints cover the full width, not the working width"


def test_repeatable_under_rotation_and_scale(image: np.ndarray, extracted: tuple) -> None:
    """A 30 degree rotation + 0.7 zoom: matches agree with the known affine, RANSAC verifies."""
    known = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), 30, 0.7)  # maps original -> warped
    warped = cv2.warpAffine(image, known, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
    moved = SiftExtractor(FeatureConfig(max_features=600))(warped)
    original = _as_features("a", extracted)
    transformed = _as_features("b", moved)

    config = VerifyConfig()
    num_matches, inliers, reason = verify_pair(original, transformed, config)
    assert reason == ""
    assert inliers >= 150 and inliers >= 0.8 * num_matches

    idx_a, idx_b = putative_matches(original.descriptors, transformed.descriptors, config)
    predicted = original.keypoints[idx_a] @ known[:, :2].T + known[:, 2]
    error = np.linalg.norm(predicted - transformed.keypoints[idx_b], axis=1)
    assert np.mean(error < 3.0) > 0.8
    assert np.median(error) < 1.0

    estimated, _ = cv2.estimateAffine2D(original.keypoints[idx_a], transformed.keypoints[idx_b], method=cv2.RANSAC)
    assert estimated is not None
    np.testing.assert_allclose(estimated[:, :2], known[:, :2], atol=0.02)
    np.testing.assert_allclose(estimated[:, 2], known[:, 2], atol=3.0)
    angle = np.degrees(np.arctan2(estimated[1, 0], estimated[0, 0]))
    assert abs(angle - -30.0) < 1.0  # OpenCV's positive angle is counter-clockwise on screen
    assert abs(np.hypot(estimated[0, 0], estimated[1, 0]) - 0.7) < 0.01


def test_blank_image_gives_valid_empty_features() -> None:
    blank = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    extractor = SiftExtractor(FeatureConfig(max_features=100))
    keypoints, descriptors, scales, scores = extractor(blank)
    assert keypoints.shape == (0, 2) and keypoints.dtype == np.float32
    assert descriptors.shape == (0, 128) and descriptors.dtype == np.float16
    assert scales.shape == (0,) and scores.shape == (0,)

    features = extract_features(_decoded("blank", blank, line=3, landmark_id=11), extractor)
    assert isinstance(features, LocalFeatures)
    assert features.count == 0
    assert (features.id, features.landmark_id, features.line) == ("blank", 11, 3)
    assert (features.width, features.height) == (WIDTH, HEIGHT)


def test_extract_features_record(image: np.ndarray, extracted: tuple) -> None:
    extractor = SiftExtractor(FeatureConfig(max_features=600))
    features = extract_features(_decoded("abc", image, line=42, landmark_id=5), extractor)
    assert isinstance(features, LocalFeatures)
    assert (features.id, features.landmark_id, features.line) == ("abc", 5, 42)
    assert (features.width, features.height) == (WIDTH, HEIGHT)
    np.testing.assert_array_equal(features.keypoints, extracted[0])
    np.testing.assert_array_equal(features.descriptors, extracted[1])


def test_extractor_error_becomes_a_failure() -> None:
    failure = extract_features(_undecodable("bad", line=8, landmark_id=3), SiftExtractor(FeatureConfig()))
    assert isinstance(failure, Failure)
    assert (failure.line, failure.id, failure.landmark_id) == (8, "bad", 3)
    assert failure.stage == Stage.FEATURES and failure.reason == Reason.EXTRACTION_ERROR
    assert failure.detail and failure.url == "http://x/bad.jpg"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"extractor": "orb"},  # no default max_features; the name itself is the registry's to check
        {"max_features": 0},
        {"max_features": -5},
        {"contrast_threshold": 0.0},
        {"edge_threshold": -1.0},
        {"descriptor_dtype": "int8"},
        {"extractor": "delf", "descriptor_dtype": "uint8"},
        {"working_side": 8},
        {"delf_model": ""},
        {"delf_image_scales": ()},
        {"delf_image_scales": (1.0, 0.0)},
        {"max_batch_size": 0},
        {"gpu_accelerator": "nvidia-tesla-t4"},
    ],
)
def test_feature_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        FeatureConfig(**kwargs)


@pytest.mark.parametrize("name", ["orb", "SIFT"])
def test_unknown_extractors_are_refused_by_the_registry_and_the_stage(name: str) -> None:
    message = f"unknown extractor '{name}'; choose from \\['aliked', 'delf', 'sift'\\]"
    with pytest.raises(ValueError, match=message):
        check_extractor(name)
    config = FeatureConfig(extractor=name, max_features=100)  # the config does not know the registry
    with pytest.raises(ValueError, match=message):
        ExtractFeatures(config)
    assert check_extractor("sift") == "sift"


def test_feature_config_defaults() -> None:
    config = FeatureConfig()
    assert set(EXTRACTORS) == {"sift", "delf", "aliked"}
    assert (config.extractor, config.max_features, config.descriptor_dtype) == ("sift", 4000, "float16")
    assert FeatureConfig(extractor="delf").max_features == 1000  # DELF's max_feature_num
    assert FeatureConfig(extractor="delf", max_features=300).max_features == 300
    assert config.delf_model == "https://tfhub.dev/google/delf/1"
    assert config.delf_score_threshold == 100.0
    assert config.delf_image_scales == (0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0)
    assert config.gpu_accelerator == ""


def test_extract_features_transform_routes_records_and_failures() -> None:
    """The three images share one RunInference batch: only the broken one fails."""
    textured = _decoded("tex", _textured(21), line=1, landmark_id=4)
    blank = _decoded("blank", np.full((HEIGHT, WIDTH, 3), 200, np.uint8), line=2, landmark_id=4)
    broken = _undecodable("grey", line=3, landmark_id=6)
    expected_count = len(SiftExtractor(FeatureConfig(max_features=150))(stored_pixels(textured))[0])
    assert expected_count == 150

    with BeamTestPipeline(options=_beam_options()) as pipeline:
        images = pipeline | beam.Create([textured, blank, broken])
        features, failures = images | ExtractFeatures(FeatureConfig(max_features=150))
        summary = features | beam.Map(
            lambda f: (f.id, f.landmark_id, f.line, f.count, f.width, f.height, f.descriptors.shape[1])
        )
        assert_that(
            summary,
            equal_to([("tex", 4, 1, 150, WIDTH, HEIGHT, 128), ("blank", 4, 2, 0, WIDTH, HEIGHT, 128)]),
            label="CheckFeatures",
        )
        failed = failures | beam.Map(lambda f: (f.id, f.line, f.stage, f.reason))
        assert_that(failed, equal_to([("grey", 3, Stage.FEATURES, Reason.EXTRACTION_ERROR)]), label="CheckFailures")


_LOADS: Counter[int] = Counter()


class _CountingSift(SiftExtractor):
    """SiftExtractor that counts how often a worker builds it, by `max_features`."""

    def __init__(self, config: FeatureConfig) -> None:
        _LOADS[config.max_features] += 1
        super().__init__(config)


def test_extractor_is_loaded_once_per_process_and_batches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(EXTRACTORS, "counting", _CountingSift)
    config = FeatureConfig(extractor="counting", max_features=77, max_batch_size=3)
    assert ExtractorModelHandler(config).batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 3}
    images = [_decoded(f"img{n:02d}", _textured(40 + n, 160, 120), line=n) for n in range(12)]
    options = PipelineOptions(
        ["--runner=DirectRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=2"]
    )
    with BeamTestPipeline(options=options) as pipeline:
        features, _ = pipeline | beam.Create(images) | ExtractFeatures(config)
        assert_that(features | beam.Map(lambda f: f.id), equal_to([image.row.id for image in images]))
    assert _LOADS[77] == 1


@pytest.mark.parametrize("dtype", ["float16", "float32", "uint8"])
def test_feature_records_round_trip_through_parquet_bit_for_bit(tmp_path, image: np.ndarray, dtype: str) -> None:
    extractor = SiftExtractor(FeatureConfig(max_features=200, descriptor_dtype=dtype))
    records = [
        extract_features(_decoded("tex", image, line=1), extractor),
        extract_features(_decoded("blank", np.full((HEIGHT, WIDTH, 3), 50, np.uint8), line=2), extractor),
    ]
    # a model that returns no scores: NaN must come back as the same NaN bits
    records.append(dataclasses.replace(records[0], id="nan", scores=np.full(200, np.nan, np.float32)))
    path = str(tmp_path / "features.parquet")
    pq.write_table(pa.Table.from_pylist([features_to_row(r) for r in records], schema=FEATURES_SCHEMA), path)
    read = [features_from_row(row) for row in pq.read_table(path).to_pylist()]
    assert [r.count for r in read] == [200, 0, 200]
    for original, back in zip(records, read, strict=True):
        assert (back.id, back.landmark_id, back.line, back.width, back.height) == (
            original.id,
            original.landmark_id,
            original.line,
            original.width,
            original.height,
        )
        for name in ("keypoints", "descriptors", "scales", "scores"):
            a, b = getattr(original, name), getattr(back, name)
            assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes())
