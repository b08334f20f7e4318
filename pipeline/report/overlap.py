"""The `report.html` section of `gld overlap`: per evaluation set, its counts, the classes that
overlap and the strongest verified pairs drawn with their inlier matches.

Reads only `overlap/<name>/overlap.json`, `overlap_classes.csv`, the (small) `overlap.parquet`
and the few images and feature sets drawn.
"""

from __future__ import annotations

import csv
import io
import json
from html import escape
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline.report.data import ExamplePair, rows_with_ids
from pipeline.report.html import pair_figure, table
from schemas.tables import features_from_row
from transforms.matching.verify import VerifyConfig
from transforms.plumbing.store import read_table

#: The folder under a run's output that `gld overlap` writes its results to, one folder per set.
OVERLAP_DIR = "overlap"
_DRAWN = 3
_TABLE_ROWS = 20
_FEATURE_COLUMNS = ["landmark_id", "line", "width", "height", "keypoints", "descriptors", "scales", "scores"]
_COUNTS = ("eval_images", "eval_failed", "candidate_pairs", "verified_pairs", "overlap_classes")
_COUNTS += ("overlap_train_images", "overlap_eval_images", "excluded_classes", "excluded_images")


def _summaries(output: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, folder, overlap.json) of every finished `gld overlap` run of `output`."""
    pattern = FileSystems.join(output, OVERLAP_DIR, "*", "overlap.json")
    found = []
    for path in sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list):
        folder = path.rsplit("/", 1)[0]
        with FileSystems.open(path) as handle:
            found.append((folder.rsplit("/", 1)[-1], folder, json.loads(handle.read().decode("utf-8"))))
    return found


def strongest_pairs(overlap: dict[str, list], name: str, top: int) -> list[ExamplePair]:
    """The `top` pairs with the most inliers (ties by ids) as pairs to draw: training image
    first (class `landmark_id`), evaluation image second (class -1)."""
    rows = zip(overlap["train_id"], overlap["landmark_id"], overlap["eval_id"], overlap["inliers"], strict=True)
    ranked = sorted(rows, key=lambda r: (-r[3], r[0], r[2]))[:top]
    return [ExamplePair(f"overlap with {name}", lid, train, -1, ev, inliers) for train, lid, ev, inliers in ranked]


def _classes_table(folder: str, table: Any) -> str:
    path = FileSystems.join(folder, "overlap_classes.csv")
    if not FileSystems.exists(path):
        return ""
    with FileSystems.open(path) as handle:
        rows = list(csv.reader(io.TextIOWrapper(handle, encoding="utf-8")))
    ranked = sorted(rows[1:], key=lambda r: (-int(r[5]), int(r[0])))[:_TABLE_ROWS]
    return "<h3>Classes with verified overlap</h3>" + table(rows[0], ranked, left=0)


def overlap_section(output: str, run: dict[str, Any], files: Any, verify: VerifyConfig) -> str:
    """HTML of every evaluation set checked on `output` ("" when none was)."""
    html = []
    for name, folder, summary in _summaries(output):
        counts = summary["counts"]
        overlap = read_table(FileSystems.join(folder, "overlap.parquet")).to_pydict()
        pairs = strongest_pairs(overlap, name, _DRAWN)
        train_ids, eval_ids = {p.id_a for p in pairs}, {p.id_b for p in pairs}
        jpegs = {
            i: r["jpeg"]
            for store, ids in ((run["outputs"]["images"], train_ids), (summary["eval_image_store"], eval_ids))
            for i, r in rows_with_ids(store, ids, ["jpeg"]).items()
        }
        stored = rows_with_ids(run["outputs"]["features"], train_ids | eval_ids, _FEATURE_COLUMNS)
        stores = {"jpegs": jpegs, "features": {i: features_from_row(r) for i, r in stored.items()}}
        figures = "".join(pair_figure(files, pair, stores, verify) for pair in pairs)
        html.append(
            f"<h3>{escape(name)} ({escape(summary['config']['eval_images'])})</h3>"
            + table(["count", "value"], [[key, counts.get(key, 0)] for key in _COUNTS])
            + _classes_table(folder, table)
            + (figures or '<p class="note">no verified overlap</p>')
        )
    if not html:
        return ""
    return (
        "<h2>Evaluation overlap (gld overlap)</h2>"
        '<p class="note">Training images of the written splits that verify against images of an evaluation '
        "set: a model trained on them is tested on landmarks it has seen.</p>" + "".join(html)
    )
