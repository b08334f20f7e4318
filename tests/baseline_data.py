"""Small synthetic image stores for the baseline tests: each class a seeded texture, each
image a shifted, rescaled view of it, so that classes are separable after a few steps."""

from __future__ import annotations

import os

import cv2
import numpy as np

from schemas.tables import IMAGES_SCHEMA
from transforms.ingest.image_store import write_part


def class_view(landmark_id: int, view: int, size: int = 64) -> np.ndarray:
    """uint8 [size, size, 3] view `view` of class `landmark_id`."""
    # coarse colour blocks make the classes easy for a tiny network; fine blobs give SIFT corners
    rng_class = np.random.default_rng(landmark_id)
    blocks = cv2.resize(
        rng_class.integers(0, 256, (8, 8, 3), dtype=np.uint8), (4 * size, 4 * size), interpolation=cv2.INTER_NEAREST
    )
    blobs = cv2.resize(
        rng_class.integers(0, 256, (6 * size // 8, 6 * size // 8, 1), dtype=np.uint8),
        (4 * size, 4 * size),
        interpolation=cv2.INTER_CUBIC,
    )
    big = cv2.addWeighted(blocks, 0.5, cv2.merge([blobs] * 3), 0.5, 0)
    rng = np.random.default_rng(1000 * landmark_id + view)
    side = int(rng.integers(2 * size, 3 * size))
    x, y = (int(v) for v in rng.integers(0, 4 * size - side, 2))
    return cv2.resize(big[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)


def write_store(root: str, classes: dict[int, list[str]], size: int = 64) -> str:
    """Write `classes` (landmark_id -> ids) as an image store under `root/images`; returns it."""
    directory = os.path.join(root, "images")
    os.makedirs(directory, exist_ok=True)
    rows = []
    for landmark_id, ids in sorted(classes.items()):
        for view, image_id in enumerate(ids):
            jpeg = cv2.imencode(".jpg", class_view(landmark_id, view, size)[:, :, ::-1])[1].tobytes()
            rows.append(
                {
                    "id": image_id,
                    "landmark_id": landmark_id,
                    "url": f"http://127.0.0.1/{image_id}.jpg",
                    "jpeg": jpeg,
                    "width": size,
                    "height": size,
                    "original_width": size,
                    "original_height": size,
                    "original_bytes": len(jpeg),
                    "sha256": "",
                    "line": len(rows) + 2,
                }
            )
    for start in range(0, len(rows), 7):
        write_part(directory, rows[start : start + 7], IMAGES_SCHEMA)
    return directory


def write_train_clean(path: str, classes: dict[int, list[str]]) -> str:
    lines = ["landmark_id,images"] + [f"{lid},{' '.join(sorted(ids))}" for lid, ids in sorted(classes.items())]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
