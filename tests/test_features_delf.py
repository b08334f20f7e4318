"""DELF through a SavedModel with DELF's signature, under RunInference (transforms.features.extractors.delf).

The model is `transforms.features.extractors.tiny_delf`, built here: same signature, inputs and output names as the
public DELF module, real (if simple) local features, so matching and RANSAC work on them.
"""

from __future__ import annotations

import csv
import os

import apache_beam as beam
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipeline.cli.main import main
from pipeline.curation.config import build_config
from pipeline.curation.curate import build_curation
from pipeline.curation.preflight import preflight
from pipeline.demo.data import _texture
from schemas.records import Failure, LocalFeatures
from schemas.tables import features_from_row
from schemas.vocabulary import Reason, Stage
from tests.beam_graph import applied_transforms
from tests.flags import SIFT
from tests.test_features import _decoded, _undecodable
from transforms.features.extractors.config import FeatureConfig
from transforms.features.extractors.delf import DelfExtractor
from transforms.features.extractors.registry import EXTRACTORS
from transforms.features.extractors.tiny_delf import build_tiny_delf
from transforms.features.stage import ExtractFeatures, extract_features
from transforms.matching.verify import VerifyConfig, verify_pair

WIDTH, HEIGHT = 480, 240  # wider than high: a (y, x) / (x, y) mix-up leaves the image
ACCELERATOR = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_delf(str(tmp_path_factory.mktemp("delf") / "tiny_delf"))


@pytest.fixture(scope="module")
def delf(model_path: str) -> DelfExtractor:
    return DelfExtractor(FeatureConfig(extractor="delf", delf_model=model_path))


def _scene(seed: int, width: int = 900, height: int = 700) -> np.ndarray:
    return _texture(np.random.default_rng([seed, 1]), (width, height), distractor=False)


def _features(image_id: str, pixels: np.ndarray, extractor: DelfExtractor) -> LocalFeatures:
    features = extract_features(_decoded(image_id, pixels), extractor)
    assert isinstance(features, LocalFeatures)
    return features


def test_the_test_model_has_delfs_signature(model_path: str) -> None:
    signature = tf.saved_model.load(model_path).signatures["default"]
    inputs = signature.structured_input_signature[1]
    assert {name: spec.dtype for name, spec in inputs.items()} == {
        "image": tf.float32,
        "score_threshold": tf.float32,
        "image_scales": tf.float32,
        "max_feature_num": tf.int32,
    }
    assert set(signature.structured_outputs) == {"locations", "descriptors", "scales", "attention"}


def test_gld_make_tiny_delf_writes_the_model(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "tiny")
    assert main(["make-tiny-delf", path]) == 0
    assert capsys.readouterr().out.strip() == path
    assert isinstance(DelfExtractor(FeatureConfig(extractor="delf", delf_model=path)), DelfExtractor)


def test_registry_builds_delf_from_the_configured_model(model_path: str) -> None:
    extractor = EXTRACTORS["delf"](FeatureConfig(extractor="delf", delf_model=model_path))
    assert isinstance(extractor, DelfExtractor)


def test_locations_are_swapped_to_xy_on_a_non_square_image(delf: DelfExtractor, model_path: str) -> None:
    """Texture only in a box at the right end of a wide image: keypoints must lie in that box."""
    pixels = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    left, top, size = 340, 50, 120
    pixels[top : top + size, left : left + size] = _scene(3)[:size, :size]
    keypoints = delf(pixels)[0]
    assert len(keypoints) > 20
    x, y = keypoints[:, 0], keypoints[:, 1]
    # a blurred patch reacts a little outside the textured box, never far
    assert x.min() > left - 25 and x.max() < left + size + 25
    assert y.min() > top - 25 and y.max() < top + size + 25
    assert x.min() > HEIGHT, "x beyond the image height: these cannot be (y, x) rows"
    raw = (
        tf.saved_model.load(model_path)
        .signatures["default"](
            image=tf.image.convert_image_dtype(pixels, tf.float32),
            score_threshold=tf.constant(100.0),
            image_scales=tf.constant([0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0]),
            max_feature_num=tf.constant(1000),
        )["locations"]
        .numpy()
    )
    np.testing.assert_allclose(keypoints, raw[:, ::-1], atol=1e-4)


def test_outputs_types_shapes_and_strongest_first(delf: DelfExtractor) -> None:
    keypoints, descriptors, scales, scores = delf(_scene(4, WIDTH, HEIGHT))
    n = len(keypoints)
    assert 100 < n <= 1000
    assert keypoints.dtype == np.float32 and keypoints.shape == (n, 2)
    assert descriptors.dtype == np.float16 and descriptors.shape == (n, 40)
    np.testing.assert_allclose(np.linalg.norm(descriptors.astype(np.float32), axis=1), 1.0, atol=2e-3)
    assert scales.dtype == np.float32  # DELF's convention: 1 / the pyramid scale a feature came from
    assert np.isclose(1 / scales[:, None], FeatureConfig().delf_image_scales, rtol=1e-5).any(axis=1).all()
    assert scores.dtype == np.float32 and np.all(scores > 100.0) and np.all(np.diff(scores) <= 0)


def test_delf_parameters_reach_the_model(model_path: str) -> None:
    pixels = _scene(5, WIDTH, HEIGHT)

    def run(**kwargs: object) -> tuple[np.ndarray, ...]:
        return DelfExtractor(FeatureConfig(extractor="delf", delf_model=model_path, **kwargs))(pixels)

    assert len(run(max_features=7)[0]) == 7
    assert np.all(run(delf_image_scales=(0.5,))[2] == 2.0)
    assert run(delf_score_threshold=1e9)[0].shape == (0, 2)
    assert run(descriptor_dtype="float32")[1].dtype == np.float32


def test_deterministic(delf: DelfExtractor) -> None:
    pixels = _scene(6, WIDTH, HEIGHT)
    first, again = delf(pixels), delf(pixels)
    for a, b in zip(first, again, strict=True):
        assert a.tobytes() == b.tobytes()


def test_two_views_verify_with_the_known_offset(delf: DelfExtractor) -> None:
    scene, other = _scene(7), _scene(8)
    a = _features("a", scene[40:360, 30:510], delf)
    b = _features("b", scene[150:470, 210:690], delf)  # the same scene moved by (-180, -110)
    unrelated = _features("c", other[100:420, 100:580], delf)
    config = VerifyConfig()
    _, inliers, _ = verify_pair(a, b, config)
    assert inliers >= 60
    assert verify_pair(a, unrelated, config)[1] < 30
    model, mask = cv2.estimateAffine2D(*_matched_points(a, b), method=cv2.RANSAC, ransacReprojThreshold=4.0)
    assert model is not None and mask.sum() >= 30
    np.testing.assert_allclose(model[:, :2], np.eye(2), atol=0.02)
    np.testing.assert_allclose(model[:, 2], [-180, -110], atol=3.0)


def _matched_points(a: LocalFeatures, b: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
    from transforms.matching.verify import putative_matches

    idx_a, idx_b = putative_matches(a.descriptors, b.descriptors, VerifyConfig())
    return a.keypoints[idx_a], b.keypoints[idx_b]


def test_blank_image_is_a_valid_record_without_features(delf: DelfExtractor) -> None:
    features = _features("blank", np.full((HEIGHT, WIDTH, 3), 77, np.uint8), delf)
    assert features.count == 0
    assert features.descriptors.shape == (0, 40) and features.descriptors.dtype == np.float16
    assert (features.width, features.height) == (WIDTH, HEIGHT)


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((HEIGHT, WIDTH), np.uint8), np.zeros((HEIGHT, WIDTH, 4), np.uint8), np.zeros((0, WIDTH, 3), np.uint8)],
    ids=["grey", "rgba", "empty"],
)
def test_the_extractor_refuses_arrays_that_are_not_rgb_images(delf: DelfExtractor, pixels: np.ndarray) -> None:
    with pytest.raises(delf.errors):
        delf(pixels)


def test_an_undecodable_image_becomes_a_failure(delf: DelfExtractor) -> None:
    failure = extract_features(_undecodable("bad", line=9, landmark_id=2), delf)
    assert isinstance(failure, Failure)
    assert (failure.id, failure.line, failure.landmark_id) == ("bad", 9, 2)
    assert failure.stage == Stage.FEATURES and failure.reason == Reason.EXTRACTION_ERROR and failure.detail


def test_a_missing_model_is_reported_before_the_run(tmp_path, capsys: pytest.CaptureFixture) -> None:
    missing = str(tmp_path / "nothing")
    with pytest.raises(OSError):
        DelfExtractor(FeatureConfig(extractor="delf", delf_model=missing))
    manifest = tmp_path / "train.csv"
    manifest.write_text("id,url,landmark_id\n0123456789abcdef,http://127.0.0.1/x.jpg,1\n")
    argv = ["curate", "--train-csv", str(manifest), "--output", str(tmp_path / "out"), *SIFT, "--extractor", "delf"]
    assert main([*argv, "--delf-model", missing, "--no-progress"]) == 2
    assert f"DELF model {missing!r} does not exist" in capsys.readouterr().err


# --- under Beam ----------------------------------------------------------------------------------


def test_run_inference_routes_features_failures_and_counts_empty_images(model_path: str) -> None:
    images = [
        _decoded("tex", _scene(9, WIDTH, HEIGHT), line=1),
        _decoded("blank", np.full((HEIGHT, WIDTH, 3), 30, np.uint8), line=2),
        _undecodable("corrupt", line=3, landmark_id=7),
    ]
    config = FeatureConfig(extractor="delf", delf_model=model_path, max_features=300)
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"]))
    features, failures = pipeline | beam.Create(images) | "ExtractFeatures" >> ExtractFeatures(config)
    summary = features | beam.Map(lambda f: (f.id, f.line, f.count, f.descriptors.shape[1], str(f.descriptors.dtype)))
    assert_that(summary, equal_to([("tex", 1, 300, 40, "float16"), ("blank", 2, 0, 40, "float16")]))
    failed = failures | beam.Map(lambda f: (f.id, f.line, f.reason))
    assert_that(failed, equal_to([("corrupt", 3, Reason.EXTRACTION_ERROR)]), label="CheckFailures")

    inference = [s for s in applied_transforms(pipeline) if isinstance(s.transform, RunInference)]
    assert [s.full_label for s in inference] == ["ExtractFeatures/Extract"]
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("features"))["counters"]
    }
    assert counters["ok"] == 2 and counters["no_features"] == 1 and counters["extraction_error"] == 1


def test_gpu_hint_is_on_the_feature_step_and_nowhere_else(tmp_path) -> None:
    manifest = tmp_path / "train.csv"
    manifest.write_text("id,url,landmark_id\n0123456789abcdef,http://127.0.0.1/x.jpg,1\n")

    def hinted(accelerator: str | None) -> dict[str, dict]:
        overrides = {"features": {"extractor": "delf", **({"gpu_accelerator": accelerator} if accelerator else {})}}
        pipeline = beam.Pipeline()
        config = build_config(str(manifest), str(tmp_path / "out"), "gldv2-components", overrides)
        build_curation(pipeline, config, preflight(config))
        return {s.full_label: s.resource_hints for s in applied_transforms(pipeline) if s.resource_hints}

    assert hinted(None) == {}
    steps = hinted(ACCELERATOR)
    assert "ExtractFeatures/Extract/BeamML_RunInference" in steps
    assert all(label.startswith("ExtractFeatures/Extract/") or label == "ExtractFeatures/Extract" for label in steps)
    assert {hint for hints in steps.values() for hint in hints.values()} == {ACCELERATOR.encode()}


# --- gld curate --extractor delf ----------------------------------------------------------------


def test_curate_with_delf_keeps_the_views_that_verify(tmp_path, model_path: str) -> None:
    """Two landmarks seen in three shifted views each, one unrelated image filed under each."""
    images_dir, rows, truth = tmp_path / "images", [], {}
    views = [(40, 30), (150, 210), (260, 120)]  # (top, left) of 320 x 480 crops of a 900 x 700 scene
    for landmark, seed in ((501, 11), (502, 12)):
        scene = _scene(seed)
        for n, (top, left) in enumerate(views):
            rows.append((f"{landmark}{n:013d}", scene[top : top + 320, left : left + 480], landmark))
            truth[rows[-1][0]] = True
        rows.append((f"{landmark}{9:013d}", _scene(seed + 100, 480, 320), landmark))
        truth[rows[-1][0]] = False
    with open(tmp_path / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "url", "landmark_id"])
        for image_id, pixels, landmark in rows:
            folder = images_dir / image_id[0] / image_id[1] / image_id[2]
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{image_id}.jpg"), pixels, [cv2.IMWRITE_JPEG_QUALITY, 92])
            writer.writerow([image_id, "", landmark])
    out = str(tmp_path / "out")
    argv = ["curate", "--train-csv", str(tmp_path / "train.csv"), "--output", out, "--images-dir", str(images_dir)]
    argv += [*SIFT, "--extractor", "delf", "--delf-model", model_path, "--no-progress", "--direct_num_workers=2"]
    argv += ["--verification", "exhaustive"]  # every pair of views is matched, none skipped as joined
    assert main(argv) == 0

    decisions = {d["id"]: d for d in pq.read_table(os.path.join(out, "decisions.parquet")).to_pylist()}
    assert {i: d["status"] == "kept" for i, d in decisions.items()} == truth
    pairs = pq.read_table(os.path.join(out, "pairs.parquet")).to_pylist()
    assert sum(p["inliers"] >= 30 for p in pairs) == 6  # every pair of views of each landmark
    stored = [features_from_row(r) for r in pq.read_table(os.path.join(out, "features")).to_pylist()]
    assert len(stored) == 8 and all(f.descriptors.dtype == np.float16 and f.descriptors.shape[1] == 40 for f in stored)
