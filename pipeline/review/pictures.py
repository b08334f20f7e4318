"""The pictures `gld review` serves: stored images (full size), thumbnails, pairs drawn with their
inlier matches. Images and feature sets are read from the run's stores by id, one row group each.

The stores are indexed once, for the ids the queues show only (each part's `id` column is read,
never its images), so a request reads one row group; drawn pictures are cached in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.report.images import draw_matches, thumbnail
from schemas.tables import features_from_row
from transforms.ingest.image_store import part_files, read_at
from transforms.matching.verify import VerifyConfig, inlier_matches

THUMB_SIDE = 480
_FEATURE_COLUMNS = ["id", "landmark_id", "line", "width", "height", "keypoints", "descriptors", "scales", "scores"]
_CACHED = 256


def store_index(directory: str, ids: Iterable[str]) -> dict[str, tuple[str, int]]:
    """id -> (part path, row index) in the part store at `directory`, for `ids` only; the first
    part (by name) that holds an id wins. Reads only the `id` column of each part."""
    wanted = set(ids)
    found: dict[str, tuple[str, int]] = {}
    if not FileSystems.exists(directory):
        return found
    for path in part_files(directory):
        with FileSystems.open(path) as handle:
            column = pq.read_table(handle, columns=["id"]).column("id").to_pylist()
        for index, image_id in enumerate(column):
            if image_id in wanted and image_id not in found:
                found[image_id] = (path, index)
    return found


class Pictures:
    """JPEG bytes for the review page: `image(id)`, `thumb(id)`, `pair(id_a, id_b)`; None when
    the stores do not hold what is asked (the page shows a placeholder)."""

    def __init__(self, images_dir: str, features_dir: str, ids: Iterable[str], verify: VerifyConfig) -> None:
        ids = set(ids)
        self._images = store_index(images_dir, ids)
        self._features = store_index(features_dir, ids)
        self._verify = verify
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, image_id: str) -> bool:
        return image_id in self._images

    def _cached(self, key: tuple, make) -> bytes | None:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = make()
        if data is not None:
            with self._lock:
                self._cache[key] = data
                while len(self._cache) > _CACHED:
                    self._cache.popitem(last=False)
        return data

    def image(self, image_id: str) -> bytes | None:
        """The stored (normalised) JPEG."""
        if image_id not in self._images:
            return None
        path, index = self._images[image_id]
        return self._cached(("image", image_id), lambda: read_at(path, [index], ["jpeg"])[index]["jpeg"])

    def thumb(self, image_id: str) -> bytes | None:
        if image_id not in self._images:
            return None
        return self._cached(("thumb", image_id), lambda: thumbnail(self.image(image_id), THUMB_SIDE))

    def _feature_set(self, image_id: str):
        path, index = self._features[image_id]
        return features_from_row(read_at(path, [index], _FEATURE_COLUMNS)[index])

    def pair(self, id_a: str, id_b: str) -> bytes | None:
        """Both images side by side, a line per inlier match (re-matched with the run's settings)."""
        if not all(i in self._images and i in self._features for i in (id_a, id_b)):
            return None

        def draw() -> bytes:
            points_a, points_b = inlier_matches(self._feature_set(id_a), self._feature_set(id_b), self._verify)
            return draw_matches(self.image(id_a), self.image(id_b), points_a, points_b, height=360)

        return self._cached(("pair", id_a, id_b), draw)
