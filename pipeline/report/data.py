"""The numbers `report.html` shows, computed from a curate output folder.

Reading is bounded: decisions are read column-wise and folded into per-class counts (one small
row per class), pairs are streamed batch by batch into a fixed-size inlier histogram, and only
the few images and feature sets the page draws are read back, one part file at a time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas.vocabulary import Status
from transforms.ingest.image_store import part_files


@dataclass
class ClassCounts:
    """Outcome counts of one class; `reasons` counts removal reasons only."""

    landmark_id: int
    kept: int = 0
    removed: int = 0
    failed: int = 0
    reasons: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.kept + self.removed + self.failed

    @property
    def removal_rate(self) -> float:
        """Removed over verifiable (kept + removed) images; 0 when none was verifiable."""
        verifiable = self.kept + self.removed
        return self.removed / verifiable if verifiable else 0.0


def class_counts(groups: Iterable[tuple[int | None, str, str, int]]) -> dict[int, ClassCounts]:
    """Per-class outcome counts from (landmark_id, status, reason, rows) groups of decisions;
    rows without a class (malformed manifest lines) are skipped."""
    classes: dict[int, ClassCounts] = {}
    for landmark_id, status, reason, rows in groups:
        if landmark_id is None:
            continue
        counts = classes.setdefault(landmark_id, ClassCounts(landmark_id))
        if status == Status.KEPT.value:
            counts.kept += rows
        elif status == Status.REMOVED.value:
            counts.removed += rows
            counts.reasons[reason] += rows
        else:
            counts.failed += rows
    return classes


def decision_groups(decisions: pa.Table) -> list[tuple[int | None, str, str, int]]:
    """(landmark_id, status, reason, rows) for every combination present, aggregated by Arrow."""
    grouped = decisions.group_by(["landmark_id", "status", "reason"]).aggregate([("id", "count")]).to_pydict()
    return list(zip(grouped["landmark_id"], grouped["status"], grouped["reason"], grouped["id_count"], strict=True))


def size_bins(sizes: Iterable[int]) -> tuple[list[str], list[int]]:
    """Log2 bins of class sizes (1, 2, 3-4, 5-8, ...): labels and counts; sizes of 0 are skipped."""
    counts: Counter[int] = Counter(math.ceil(math.log2(size)) for size in sizes if size > 0)
    top = max(counts, default=0)
    labels = [str(2**b) if b < 2 else f"{2 ** (b - 1) + 1}-{2**b}" for b in range(top + 1)]
    return labels, [counts.get(b, 0) for b in range(top + 1)]


def ranked_by_removal(classes: dict[int, ClassCounts], top: int) -> list[ClassCounts]:
    """Classes with a removed image, by removal rate, then removed count, then landmark_id."""
    noisy = [c for c in classes.values() if c.removed]
    return sorted(noisy, key=lambda c: (-c.removal_rate, -c.removed, c.landmark_id))[:top]


@dataclass(frozen=True)
class InlierHistogram:
    """Counts of pairs per inlier bin [i*width, (i+1)*width); the last bin is open-ended."""

    width: int
    counts: tuple[int, ...]

    @property
    def labels(self) -> list[str]:
        last = len(self.counts) - 1
        return [f"{i * self.width}+" if i == last else str(i * self.width) for i in range(len(self.counts))]


def inlier_histogram(batches: Iterable[np.ndarray], width: int, bins: int) -> InlierHistogram:
    """Streams inlier counts (int arrays) into `bins` bins of `width` (the last collects the rest)."""
    counts = np.zeros(bins, dtype=np.int64)
    for inliers in batches:
        counts += np.bincount(np.minimum(np.asarray(inliers) // width, bins - 1), minlength=bins)
    return InlierHistogram(width, tuple(int(c) for c in counts))


@dataclass(frozen=True)
class ExamplePair:
    """A verified candidate pair worth drawing, and why it was chosen."""

    caption: str
    landmark_a: int
    id_a: str
    landmark_b: int
    id_b: str
    inliers: int


_EXAMPLES = ("strongest edge", "weakest edge", "strongest rejected pair")


def example_pairs(batches: Iterable[pa.RecordBatch], min_inliers: int) -> list[ExamplePair]:
    """From pairs batches (landmark_id, id_a, id_b, inliers) sorted by ids: the strongest edge,
    the weakest edge (fewest inliers >= min_inliers) and the strongest rejected pair (most
    inliers below it, at least 1). Ties go to the smallest (id_a, id_b)."""
    best: dict[str, tuple[tuple, ExamplePair]] = {}
    for batch in batches:
        inliers = batch.column("inliers").to_numpy().astype(np.int64)
        eligible = {
            "strongest edge": inliers >= 0,
            "weakest edge": inliers >= min_inliers,
            "strongest rejected pair": (inliers < min_inliers) & (inliers > 0),
        }
        for caption, mask in eligible.items():
            if not mask.any():
                continue
            # the sign makes min() the wanted pair in both directions; argmin takes the first tie
            signed = np.where(mask, inliers if caption == "weakest edge" else -inliers, np.iinfo(np.int64).max)
            i = int(np.argmin(signed))
            id_a, id_b = batch.column("id_a")[i].as_py(), batch.column("id_b")[i].as_py()
            key = (int(signed[i]), id_a, id_b)
            if caption not in best or key < best[caption][0]:
                landmark_id = batch.column("landmark_id")[i].as_py()
                best[caption] = (key, ExamplePair(caption, landmark_id, id_a, landmark_id, id_b, int(inliers[i])))
    return [best[caption][1] for caption in _EXAMPLES if caption in best]


def rows_with_ids(directory: str, ids: set[str], columns: list[str]) -> dict[str, dict]:
    """Rows of `directory/part-*.parquet` whose `id` is in `ids`, one part file read at a time."""
    if not ids:
        return {}
    found: dict[str, dict] = {}
    for path in part_files(directory):
        with FileSystems.open(path) as handle:
            table = pq.read_table(handle, columns=["id", *columns], filters=[("id", "in", sorted(ids))])
        for row in table.to_pylist():
            found[row["id"]] = row
    return found
