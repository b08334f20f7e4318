"""The numbers, charts and pictures of report.html (pure parts; the page itself is rendered in
headless Chromium by tests/test_end_to_end.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pyarrow as pa

from pipeline.report.charts import grouped_bars, horizontal_bars
from pipeline.report.data import (
    ExamplePair,
    class_counts,
    example_pairs,
    inlier_histogram,
    ranked_by_removal,
    size_bins,
)
from pipeline.report.images import draw_matches, thumbnail


def test_size_bins_are_powers_of_two() -> None:
    labels, counts = size_bins([1, 1, 2, 3, 4, 5, 9, 0])
    assert labels == ["1", "2", "3-4", "5-8", "9-16"]
    assert counts == [2, 1, 2, 1, 1]
    assert size_bins([]) == (["1"], [0])


def test_inlier_histogram_streams_batches_into_fixed_bins() -> None:
    histogram = inlier_histogram([np.array([0, 4, 5, 29], np.int32), np.array([30, 31, 1000])], width=5, bins=8)
    assert histogram.counts == (2, 1, 0, 0, 0, 1, 2, 1)
    assert histogram.labels == ["0", "5", "10", "15", "20", "25", "30", "35+"]


def _pairs_batch(rows: list[tuple[str, str, int]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "landmark_id": pa.array([7] * len(rows), pa.int64()),
            "id_a": [r[0] for r in rows],
            "id_b": [r[1] for r in rows],
            "inliers": pa.array([r[2] for r in rows], pa.int32()),  # int32, as in pairs.parquet
        }
    )


def test_example_pairs_pick_strongest_weakest_and_rejected() -> None:
    batches = [
        _pairs_batch([("a", "b", 0), ("a", "c", 31), ("a", "d", 29)]),
        _pairs_batch([("b", "c", 90), ("b", "d", 30), ("c", "d", 90), ("c", "e", 29)]),
    ]
    assert example_pairs(batches, min_inliers=30) == [
        ExamplePair("strongest edge", 7, "b", 7, "c", 90),
        ExamplePair("weakest edge", 7, "b", 7, "d", 30),
        ExamplePair("strongest rejected pair", 7, "a", 7, "d", 29),
    ]
    assert [p.caption for p in example_pairs([_pairs_batch([("a", "b", 0)])], 30)] == ["strongest edge"]


def test_class_counts_and_removal_ranking() -> None:
    groups = [
        (1, "kept", "verified_component", 3),
        (1, "removed", "no_verified_pair", 1),
        (2, "removed", "no_verified_pair", 2),
        (2, "removed", "small_component", 2),
        (3, "kept", "verified_component", 5),
        (3, "failed", "http_404", 4),
        (None, "failed", "malformed_row", 1),
    ]
    classes = class_counts(groups)
    assert sorted(classes) == [1, 2, 3]
    assert (classes[3].total, classes[3].removal_rate, classes[3].failed) == (9, 0.0, 4)
    assert classes[2].reasons == {"no_verified_pair": 2, "small_component": 2}
    assert [c.landmark_id for c in ranked_by_removal(classes, top=5)] == [2, 1]
    assert classes[1].removal_rate == 0.25


def test_charts_are_well_formed_svg_with_the_threshold_marked() -> None:
    svg = grouped_bars(
        "pairs", ["0", "5", "10+"], {"pairs": [3, 0, 1000]}, log_y=True, marker_at=2.0, marker_label=">= 10 & edge"
    )
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert ">= 10 & edge" in texts and "1000" in texts
    assert len(list(root.iter("{http://www.w3.org/2000/svg}rect"))) == 3
    bars = ET.fromstring(horizontal_bars("status", [("kept", 5, "#0a0"), ("failed", 0, "#a00")]))
    assert [r.get("width") for r in bars.iter("{http://www.w3.org/2000/svg}rect")] == ["400.0", "0.0"]


def test_thumbnail_and_drawn_matches_are_jpegs_of_the_promised_size() -> None:
    image = np.full((300, 400, 3), 120, np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    thumb = cv2.imdecode(np.frombuffer(thumbnail(jpeg, max_side=100), np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (75, 100, 3)
    points = np.array([[10.0, 10.0], [390.0, 290.0]], np.float32)
    drawn = draw_matches(jpeg, jpeg, points, points, height=150)
    picture = cv2.imdecode(np.frombuffer(drawn, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (150, 400, 3)
    assert picture[5:15, 5:15].std() > 0  # a match was drawn at (10, 10) scaled by 0.5
