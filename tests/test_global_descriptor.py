"""Tests of the global descriptors that rank knn partners (transforms.features.global_descriptor)."""

from __future__ import annotations

import os

import apache_beam as beam
import cv2
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.demo.data import _landmark_facade, _render_view
from schemas.records import DecodedImage, LocalFeatures, ManifestRow
from tests.stores import plan_items, store_features, store_images
from transforms.features.extractors.config import FeatureConfig
from transforms.features.extractors.sift import SiftExtractor
from transforms.features.global_descriptor import (
    LOCAL_BITS,
    SavedModelEmbedder,
    aggregate_local,
    copy_to_local,
    nearest_neighbours,
)
from transforms.ingest.decode import stored_pixels
from transforms.matching.pairs import GeneratePairs, PairConfig, candidate_pairs, plan_class

# --- aggregate_local ----------------------------------------------------------------------


def test_aggregate_local_shape_norm_and_order_invariance() -> None:
    rng = np.random.default_rng(0)
    descriptors = rng.integers(0, 256, (300, 128), dtype=np.uint8)
    vector = aggregate_local(descriptors)
    assert vector.shape == (1 << LOCAL_BITS,) and vector.dtype == np.float16
    assert np.linalg.norm(vector.astype(np.float32)) == pytest.approx(1.0, abs=1e-2)
    np.testing.assert_array_equal(aggregate_local(descriptors[::-1]), vector)
    np.testing.assert_array_equal(aggregate_local(descriptors.astype(np.float32) / 255), vector)


def test_aggregate_local_without_features_is_zero() -> None:
    vector = aggregate_local(np.zeros((0, 40), np.float32))
    assert vector.shape == (1 << LOCAL_BITS,) and not vector.any()


def test_aggregate_local_is_closer_for_shared_descriptors() -> None:
    rng = np.random.default_rng(1)
    scene = rng.integers(0, 256, (400, 128), dtype=np.uint8)
    other = rng.integers(0, 256, (400, 128), dtype=np.uint8)
    view = np.concatenate([scene[:250], other[:150]])  # shares 250 descriptors with `scene`
    a, b, c = (aggregate_local(d).astype(np.float32) for d in (scene, view, other[150:]))
    assert a @ b > a @ c + 0.2


# --- nearest_neighbours -------------------------------------------------------------------


def _brute_force(vectors: np.ndarray, k: int) -> np.ndarray:
    centred = vectors - vectors.mean(axis=0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    similarity = centred @ centred.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def test_nearest_neighbours_in_chunks_equal_brute_force() -> None:
    vectors = np.random.default_rng(2).standard_normal((600, 24)).astype(np.float32)
    np.testing.assert_array_equal(nearest_neighbours(vectors, 7), _brute_force(vectors, 7))


def test_nearest_neighbours_ties_go_to_the_lower_index_and_never_self() -> None:
    vectors = np.zeros((5, 3), np.float32)  # all identical: every similarity ties
    assert nearest_neighbours(vectors, 2).tolist() == [[1, 2], [0, 2], [0, 1], [0, 1], [0, 1]]


@pytest.mark.parametrize(("n", "k", "width"), [(0, 3, 0), (1, 3, 0), (3, 5, 2), (4, 3, 3)])
def test_nearest_neighbours_clamps_k(n: int, k: int, width: int) -> None:
    assert nearest_neighbours(np.ones((n, 4), np.float32), k).shape == (n, width)


# --- knn against random on generated landmark views ---------------------------------------


def _partner_precision(pairs: list[tuple[str, str]], subject: dict[str, int]) -> float:
    return float(np.mean([subject[a] == subject[b] for a, b in pairs]))


def test_knn_finds_true_partners_far_better_than_random() -> None:
    """One class filed with 5 views each of 5 landmarks: a true partner shows the same one."""
    extractor = SiftExtractor(FeatureConfig(max_features=600))
    descriptors, subject = {}, {}
    for landmark in range(5):
        facade = _landmark_facade(11, landmark)
        for view in range(5):
            pixels = _render_view(np.random.default_rng([11, landmark, view]), facade, 400)
            image_id = f"{landmark}{view:015x}"
            descriptors[image_id] = aggregate_local(extractor(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB))[1])
            subject[image_id] = landmark
    ids = sorted(descriptors)
    knn = _partner_precision(candidate_pairs(1, ids, PairConfig(mode="knn", k=2), descriptors), subject)
    random = _partner_precision(candidate_pairs(1, ids, PairConfig(mode="random", k=2)), subject)
    # by chance 4 of the 24 others are partners (0.17)
    assert random < 0.3
    assert knn >= 0.6 and knn >= 3 * random


# --- SavedModel embeddings ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SavedModel whose `serving_default` embeds an image as its mean colour (float32 [3]),
    with a float [1, 8, 8, 3] signature and a two-output one beside it."""
    tf = pytest.importorskip("tensorflow")

    class Colour(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        def embed(self, image: tf.Tensor) -> dict:
            return {"embedding": tf.reduce_mean(tf.cast(image, tf.float32), axis=[0, 1])}

        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
        def embed_small(self, image: tf.Tensor) -> dict:
            return {"vector": tf.reduce_mean(image, axis=[0, 1, 2]) * 255.0}

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        def two(self, image: tf.Tensor) -> dict:
            return {"a": tf.zeros([2]), "b": tf.ones([2])}

    module = Colour()
    path = str(tmp_path_factory.mktemp("model") / "colour")
    signatures = {"serving_default": module.embed, "small": module.embed_small, "two": module.two}
    tf.saved_model.save(module, path, signatures=signatures)
    return path


def _image(image_id: str, colour: tuple[int, int, int], landmark_id: int = 4) -> DecodedImage:
    """A 24x16 image of one RGB colour, stored losslessly (PNG) so its pixels are exact."""
    bgr = np.empty((16, 24, 3), np.uint8)
    bgr[:] = colour[::-1]
    encoded = cv2.imencode(".png", bgr)[1].tobytes()
    return DecodedImage(ManifestRow(0, image_id, "", landmark_id), encoded, 24, 16, 24, 16, len(encoded), "")


def test_copy_to_local_keeps_the_layout(tiny_model: str, tmp_path) -> None:
    copied = copy_to_local(tiny_model, str(tmp_path / "copy"))
    assert os.path.isfile(os.path.join(copied, "saved_model.pb"))
    assert os.listdir(os.path.join(copied, "variables"))
    with pytest.raises(FileNotFoundError):
        copy_to_local(str(tmp_path / "absent"), str(tmp_path / "nowhere"))


def test_saved_model_embedder(tiny_model: str) -> None:
    embedder = SavedModelEmbedder(tiny_model, "serving_default")
    np.testing.assert_allclose(embedder(stored_pixels(_image("a", (10, 20, 30)))), [10, 20, 30])
    # float input of a fixed size: resized, scaled to [0, 1], batched
    small = SavedModelEmbedder(tiny_model, "small")
    np.testing.assert_allclose(small(stored_pixels(_image("a", (10, 20, 30)))), [10, 20, 30], rtol=1e-5)
    embedder.close()
    small.close()


@pytest.mark.parametrize(("signature", "message"), [("absent", "no signature"), ("two", "one tensor")])
def test_saved_model_embedder_rejects_bad_signatures(tiny_model: str, signature: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SavedModelEmbedder(tiny_model, signature)


def test_generate_pairs_with_an_embedding_model(tmp_path, tiny_model: str) -> None:
    """knn by the model's embedding: two colour groups of three pair only inside their group;
    an image that failed feature extraction (no LocalFeatures) gets no pair."""
    colours = {"a0": (200, 0, 0), "a1": (190, 5, 0), "a2": (210, 0, 9), "b0": (0, 0, 200), "b1": (0, 9, 190)}
    colours["b2"] = (5, 0, 210)
    images = [_image(image_id, colour) for image_id, colour in colours.items()] + [_image("c0", (90, 90, 90))]
    features = [
        LocalFeatures(
            i, 4, 0, np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), *[np.zeros(0, np.float32)] * 2, 24, 16
        )
        for i in colours
    ]
    config = PairConfig(mode="knn", k=2, embedding_model=tiny_model)
    members = [(image_id, np.float32(colour)) for image_id, colour in colours.items()]
    expected = [
        (c.block, (c.a, c.b)) for c in plan_class(4, members, config) if not isinstance(c, beam.pvalue.TaggedOutput)
    ]
    assert {pair for _, pair in expected} == {
        ("a0", "a1"),
        ("a0", "a2"),
        ("a1", "a2"),
        ("b0", "b1"),
        ("b0", "b2"),
        ("b1", "b2"),
    }
    options = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    refs = store_features(str(tmp_path / "features"), features)
    with BeamTestPipeline(options=options) as pipeline:
        inputs = {"features": pipeline | "Features" >> beam.Create(refs)}
        inputs["images"] = pipeline | "Images" >> beam.Create(store_images(str(tmp_path / "images"), images))
        plans = inputs | GeneratePairs(config) | beam.Flatten()
        pairs = plans | beam.FlatMap(plan_items) | beam.Filter(lambda i: i[0] == "pair") | beam.Values()
        assert_that(pairs, equal_to(expected))
