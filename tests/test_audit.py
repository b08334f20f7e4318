"""The label-noise audit: signatures, duplicate and split-class rules, cross-class verification."""

from __future__ import annotations

import hashlib

import apache_beam as beam
import cv2
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.demo.data import _texture
from schemas.records import AuditFinding, DecodedImage, ImageDecision, ManifestRow
from schemas.vocabulary import Status
from tests.stores import store_images
from transforms.features.extractors.config import FeatureConfig
from transforms.features.stage import ExtractFeatures
from transforms.ingest.decode import stored_pixels
from transforms.matching.verify import VerifyConfig
from transforms.selection.audit import (
    AuditConfig,
    AuditLabels,
    FindAuditCandidates,
    cross_class_candidates,
    exact_duplicates,
    near_duplicates,
    split_class,
)
from transforms.selection.audit_signatures import bits_for, hamming, hash_bands, perceptual_hash, simhash_codes


def _scene(seed: int) -> np.ndarray:
    return np.ascontiguousarray(_texture(np.random.default_rng(seed), (400, 300), False)[:, :, ::-1])


def _jpeg(pixels: np.ndarray, quality: int = 92) -> bytes:
    return cv2.imencode(".jpg", pixels[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _decoded(image_id: str, landmark_id: int, jpeg: bytes, line: int) -> DecodedImage:
    height, width = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    return DecodedImage(
        row=ManifestRow(line=line, id=image_id, url="", landmark_id=landmark_id),
        jpeg=jpeg,
        width=width,
        height=height,
        original_width=width,
        original_height=height,
        original_bytes=len(jpeg),
        sha256=hashlib.sha256(jpeg).hexdigest(),
    )


def _rotated(pixels: np.ndarray, degrees: float, zoom: float) -> np.ndarray:
    height, width = pixels.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, zoom)
    return cv2.warpAffine(pixels, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def test_perceptual_hash_survives_recompression_not_other_content() -> None:
    scene = _scene(1)
    same = perceptual_hash(scene)
    recompressed = stored_pixels(_decoded("x", 1, _jpeg(scene, quality=40), 1))
    assert hamming(same, perceptual_hash(recompressed)) <= 4
    assert hamming(same, perceptual_hash(_scene(2))) > 12
    assert 0 <= same < 2**64


def test_hash_bands_share_a_band_within_the_pigeonhole_distance() -> None:
    value = 0x0123456789ABCDEF
    assert hash_bands(value, 4) == [0x0123, 0x4567, 0x89AB, 0xCDEF]
    flipped = value ^ (1 << 3) ^ (1 << 20) ^ (1 << 40)  # 3 bits in 3 different 16-bit bands
    shared = [a == b for a, b in zip(hash_bands(value, 4), hash_bands(flipped, 4), strict=True)]
    assert shared == [True, False, False, False]


def test_simhash_bits_follow_the_dataset_size() -> None:
    assert bits_for(5, 8) == 0 and bits_for(64, 8) == 3 and bits_for(10**9, 8) == 24
    planes = np.zeros((2, 24, 3), np.float32)
    planes[:, 0, 0] = 1.0
    planes[:, 1, 1] = -1.0
    assert simhash_codes(np.array([1.0, 1.0, 0.0], np.float32), planes, 2) == [1, 1]
    assert simhash_codes(np.array([1.0, 1.0, 0.0], np.float32), planes, 0) == [0, 0]


def test_exact_duplicates_pair_each_copy_with_the_first_across_classes() -> None:
    members = [("d", 2), ("a", 1), ("c", 1), ("b", 3)]
    found = list(exact_duplicates("f" * 64, members))
    assert [(f.id_a, f.landmark_a, f.id_b, f.landmark_b, f.score) for f in found] == [
        ("a", 1, "b", 3, 4),
        ("a", 1, "d", 2, 4),
    ]
    assert found[0].detail == f"sha256 {'f' * 16}: 4 copies in 3 classes"
    assert list(exact_duplicates("0" * 64, [("a", 1), ("b", 1)])) == []


def test_near_duplicates_across_classes_within_the_distance() -> None:
    members = [(0b0000, "s1", "a", 1), (0b0011, "s2", "b", 2), (0b0001, "s3", "c", 1), (0b1111, "s4", "d", 2)]
    members.append((0b0000, "s1", "e", 2))  # same bytes as a: left to exact_duplicates
    found = sorted(near_duplicates(members, max_bits=2, window=10))
    assert found == [(("a", 1, "b", 2), 2), (("b", 2, "c", 1), 1), (("c", 1, "e", 2), 1)]
    # a window of 1 only compares neighbours in hash order: (0,a) (0,e) (1,c) (3,b) (15,d)
    assert sorted(near_duplicates(members, max_bits=2, window=1)) == [(("b", 2, "c", 1), 1), (("c", 1, "e", 2), 1)]


def test_cross_class_candidates_pick_the_most_similar_other_class() -> None:
    unit = np.eye(3, dtype=np.float32)
    chunk = [
        ("a", 1, unit[0]),
        ("b", 1, unit[0]),  # same class as a: never a candidate for a
        ("c", 2, (unit[0] + 0.1 * unit[1]) / np.linalg.norm(unit[0] + 0.1 * unit[1])),
        ("d", 3, unit[2]),
    ]
    assert sorted(set(cross_class_candidates(chunk, partners_per_image=1))) == [
        ("a", 1, "c", 2),
        ("a", 1, "d", 3),  # d's best other-class partner: a and b tie at 0, the smaller id wins
        ("b", 1, "c", 2),
    ]
    assert list(cross_class_candidates([c for c in chunk if c[1] == 1], 1)) == []


def test_split_class_needs_two_large_components() -> None:
    (finding,) = split_class(8, [(0, 3), (1, 3), (0, 3), (2, 1)], min_size=3)
    assert finding == AuditFinding("split_class", 8, "", -1, "", 2, "component sizes 3, 3")
    assert list(split_class(9, [(0, 5), (1, 2)], min_size=3)) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"bands": 0}, {"max_bucket": 1}, {"phash_bands": 3}, {"near_duplicate_bits": 64}, {"split_component_size": 1}],
)
def test_audit_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AuditConfig(**kwargs)


def _select_decision(image_id: str, landmark_id: int, component_id: int, size: int) -> ImageDecision:
    return ImageDecision(
        line=0,
        id=image_id,
        landmark_id=landmark_id,
        status=Status.KEPT,
        reason="verified_component",
        stage="select",
        component_id=component_id,
        component_size=size,
    )


def test_audit_transform_finds_every_kind(tmp_path) -> None:
    one, two, three = _scene(11), _scene(12), _scene(13)
    copy = _jpeg(three)
    images = [
        _decoded("a1", 1, _jpeg(one), 1),
        _decoded("a2", 2, _jpeg(_rotated(one, 15, 0.8)), 2),  # same scene, other view, other class
        _decoded("b1", 3, _jpeg(two), 3),
        _decoded("b2", 4, _jpeg(two, quality=40), 4),  # recompressed copy under another class
        _decoded("c1", 5, copy, 5),
        _decoded("c2", 6, copy, 6),  # the very same bytes under another class
        _decoded("d1", 7, _jpeg(_scene(14)), 7),
    ]
    refs = store_images(str(tmp_path / "images"), images)
    decisions = [_select_decision(f"s{i}", 8, c, 3) for i, c in enumerate((0, 0, 0, 1, 1, 1))]
    with BeamTestPipeline(
        options=PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    ) as pipeline:
        features, _ = (
            pipeline
            | "Images" >> beam.Create(refs)
            | ExtractFeatures(FeatureConfig(max_features=600), store=str(tmp_path / "features"))
        )
        candidates = features | FindAuditCandidates(AuditConfig(), VerifyConfig())
        findings = {
            "candidates": candidates,
            "decisions": pipeline | "Decisions" >> beam.Create(decisions),
        } | AuditLabels(AuditConfig(), min_inliers=30)
        kinds = findings | beam.Map(lambda f: (f.kind, f.id_a, f.landmark_a, f.id_b, f.landmark_b))
        assert_that(
            kinds,
            equal_to(
                [
                    ("cross_class_match", "a1", 1, "a2", 2),
                    ("cross_class_match", "b1", 3, "b2", 4),
                    ("cross_class_match", "c1", 5, "c2", 6),
                    ("near_duplicate", "b1", 3, "b2", 4),
                    ("exact_duplicate", "c1", 5, "c2", 6),
                    ("split_class", "", 8, "", -1),
                ]
            ),
        )
