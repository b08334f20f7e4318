"""Tests of the synthetic landmark dataset generator (pipeline.demo.data)."""

from __future__ import annotations

import csv
import itertools
import random
import re
import socket
import statistics
import urllib.request
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.demo.data import DemoConfig, DemoDataset, generate_demo, read_truth
from pipeline.demo.serve import serve_folder

BASE_URL = "http://127.0.0.1:8000/"
SMALL = DemoConfig(images=40, seed=7, image_size=320)


def _read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _image_file(root: str, image_id: str) -> Path:
    return Path(root, "images", image_id[0], image_id[1], image_id[2], f"{image_id}.jpg")


def _all_files(root: str) -> dict[str, bytes]:
    base = Path(root)
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoDataset:
    return generate_demo(str(tmp_path_factory.mktemp("demo")), BASE_URL)


@pytest.fixture(scope="module")
def truth_rows(default_demo: DemoDataset) -> list[dict[str, str]]:
    return _read_csv(default_demo.truth_csv)[1]


def test_same_seed_gives_identical_bytes_and_other_seed_other_ids(
    tmp_path: Path,
) -> None:
    first = generate_demo(str(tmp_path / "a"), BASE_URL, SMALL)
    second = generate_demo(str(tmp_path / "b"), BASE_URL, SMALL)
    assert _all_files(first.root) == _all_files(second.root)

    other = generate_demo(str(tmp_path / "c"), BASE_URL, DemoConfig(images=40, seed=8, image_size=320))
    ids = {r["id"] for r in _read_csv(first.train_csv)[1]}
    other_ids = {r["id"] for r in _read_csv(other.train_csv)[1]}
    assert ids.isdisjoint(other_ids)


def test_csv_layout(default_demo: DemoDataset) -> None:
    header, train = _read_csv(default_demo.train_csv)
    truth_header, truth = _read_csv(default_demo.truth_csv)
    assert header == ["id", "url", "landmark_id"]
    assert truth_header == ["id", "landmark_id", "role", "source"]
    assert default_demo.rows == len(train) == len(truth) == DemoConfig().images
    ids = [r["id"] for r in train]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert [r["id"] for r in truth] == ids
    for row, fact in zip(train, truth, strict=True):
        i = row["id"]
        assert row["url"] == f"http://127.0.0.1:8000/images/{i[0]}/{i[1]}/{i[2]}/{i}.jpg"
        assert row["landmark_id"] == fact["landmark_id"]
    assert read_truth(default_demo.truth_csv) == {r["id"]: (int(r["landmark_id"]), r["role"]) for r in truth}


def test_rows_are_shuffled(default_demo: DemoDataset) -> None:
    labels = [r["landmark_id"] for r in _read_csv(default_demo.train_csv)[1]]
    runs = sum(a != b for a, b in itertools.pairwise(labels)) + 1
    assert runs > len(labels) // 2


def test_roles_and_sources(truth_rows: list[dict[str, str]]) -> None:
    landmark_ids = {r["landmark_id"] for r in truth_rows}
    sources = Counter()
    for row in truth_rows:
        role, source = row["role"], row["source"]
        if role == "member":
            assert source == f"landmark:{row['landmark_id']}"
        elif role == "noise":
            kind, _, shown = source.partition(":")
            assert kind in ("other_landmark", "distractor")
            if kind == "other_landmark":
                assert shown in landmark_ids and shown != row["landmark_id"]
            else:
                assert shown == ""
        else:
            assert role == "broken"
            assert source in ("http_404", "truncated", "not_an_image")
        sources[source.partition(":")[0]] += 1
    assert sources["http_404"] == sources["truncated"] == sources["not_an_image"] == 1
    assert sources["other_landmark"] > 0 and sources["distractor"] > 0


def test_file_states(default_demo: DemoDataset, truth_rows: list[dict[str, str]]) -> None:
    for row in truth_rows:
        path = _image_file(default_demo.root, row["id"])
        if row["source"] == "http_404":
            assert not path.exists()
            continue
        data = path.read_bytes()
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if row["source"] == "not_an_image":
            assert not data.startswith(b"\xff\xd8") and decoded is None
        elif row["source"] == "truncated":
            assert data.startswith(b"\xff\xd8") and not data.endswith(b"\xff\xd9")
        else:
            assert data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")
            assert decoded is not None and max(decoded.shape[:2]) == 640
            assert sorted(decoded.shape[:2]) in ([480, 640], [360, 640])


def test_class_sizes_are_long_tailed(truth_rows: list[dict[str, str]]) -> None:
    sizes = Counter(r["landmark_id"] for r in truth_rows if r["role"] == "member")
    counts = sorted(sizes.values())
    assert len(counts) == 20
    assert counts[-1] >= 30 and counts[-1] >= 3 * statistics.median(counts)
    assert counts[0] == 1


def test_noise_share(truth_rows: list[dict[str, str]]) -> None:
    noise = sum(r["role"] == "noise" for r in truth_rows)
    assert abs(noise / len(truth_rows) - DemoConfig().noise_fraction) < 0.02


@pytest.mark.parametrize(
    "config",
    [
        DemoConfig(images=19),
        DemoConfig(noise_fraction=0.5),
        DemoConfig(noise_fraction=-0.1),
        DemoConfig(broken_rows=-1),
        DemoConfig(landmarks=1),
        DemoConfig(images=20, landmarks=10),
        DemoConfig(seed=-1),
    ],
)
def test_rejects_bad_config(tmp_path: Path, config: DemoConfig) -> None:
    with pytest.raises(ValueError):
        generate_demo(str(tmp_path), BASE_URL, config)


class _Verifier:
    """SIFT + ratio test + RANSAC affine, the way the cleaning pipeline verifies."""

    def __init__(self, root: str) -> None:
        self._root = root
        self._sift = cv2.SIFT_create(nfeatures=1000)
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)
        self._features: dict[str, tuple] = {}

    def _describe(self, image_id: str) -> tuple:
        if image_id not in self._features:
            grey = cv2.imread(str(_image_file(self._root, image_id)), cv2.IMREAD_GRAYSCALE)
            self._features[image_id] = self._sift.detectAndCompute(grey, None)
        return self._features[image_id]

    def inliers(self, a: str, b: str) -> int:
        keys_a, desc_a = self._describe(a)
        keys_b, desc_b = self._describe(b)
        if desc_a is None or desc_b is None or len(keys_b) < 2:
            return 0
        good = [
            p[0]
            for p in self._matcher.knnMatch(desc_a, desc_b, k=2)
            if len(p) == 2 and p[0].distance < 0.8 * p[1].distance
        ]
        if len(good) < 3:
            return 0
        src = np.float32([keys_a[m.queryIdx].pt for m in good])
        dst = np.float32([keys_b[m.trainIdx].pt for m in good])
        _, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=8)
        return 0 if mask is None else int(mask.sum())


def test_views_match_within_landmarks_only(default_demo: DemoDataset, truth_rows: list[dict[str, str]]) -> None:
    verifier = _Verifier(default_demo.root)
    rng = random.Random(0)
    members: dict[str, list[str]] = {}
    for row in truth_rows:
        if row["role"] == "member":
            members.setdefault(row["landmark_id"], []).append(row["id"])
    classes = sorted(members)
    multi = [c for c in classes if len(members[c]) >= 2]
    positives = [verifier.inliers(*rng.sample(members[rng.choice(multi)], 2)) for _ in range(20)]

    negatives = []
    for _ in range(20):
        first, second = rng.sample(classes, 2)
        negatives.append(verifier.inliers(rng.choice(members[first]), rng.choice(members[second])))
    distractors = [r for r in truth_rows if r["source"] == "distractor"]
    for row in rng.sample(distractors, min(10, len(distractors))):
        negatives.append(verifier.inliers(row["id"], rng.choice(members[row["landmark_id"]])))

    assert sum(n >= 30 for n in positives) >= 0.8 * len(positives), sorted(positives)
    assert sum(n < 30 for n in negatives) >= 0.95 * len(negatives), sorted(negatives)
    assert statistics.median(positives) >= 60, sorted(positives)
    assert statistics.median(negatives) < 15, sorted(negatives)


def test_serve_folder_on_a_given_port(tmp_path: Path) -> None:
    """`gld demo --port`: the URLs name the port asked for; a port in use is an OSError."""
    (tmp_path / "a.txt").write_bytes(b"landmark")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with serve_folder(str(tmp_path), port=port) as base:
        assert base == f"http://127.0.0.1:{port}"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        with direct.open(f"{base}/a.txt", timeout=10) as response:
            assert response.read() == b"landmark"
        with pytest.raises(OSError), serve_folder(str(tmp_path), port=port):
            pass
