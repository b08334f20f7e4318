"""What every extractor shares: the `Extractor` interface, the arrays it returns, descriptor
storage and the working-side shrink."""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

FeatureArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class Extractor(Protocol):
    """Turns uint8 RGB [H, W, 3] into (keypoints float32 [N, 2] (x, y) in pixels of that image,
    descriptors [N, D] in the configured dtype, scales float32 [N], scores float32 [N]),
    strongest first. `errors` lists the exceptions that mean "this image cannot be processed"."""

    errors: tuple[type[Exception], ...]

    def __call__(self, pixels: np.ndarray) -> FeatureArrays: ...


def compact_descriptors(descriptors: np.ndarray, dtype: str, byte_scale: float = 255.0) -> np.ndarray:
    """Float descriptors [N, D] -> stored dtype [N, D]. uint8 multiplies by `byte_scale` (255
    for components in [0, 1]; 1 for OpenCV's plain SIFT, already in 0..255), rounds and clips."""
    if dtype == "uint8":
        return np.clip(np.round(descriptors.astype(np.float32) * byte_scale), 0, 255).astype(np.uint8)
    return descriptors.astype(dtype)


def no_features(dim: int, dtype: str) -> FeatureArrays:
    return (
        np.zeros((0, 2), np.float32),
        np.zeros((0, dim), dtype),
        np.zeros((0,), np.float32),
        np.zeros((0,), np.float32),
    )


def shrink_for_working_side(pixels: np.ndarray, working_side: int) -> tuple[np.ndarray, np.ndarray]:
    """An image [H, W, ...] shrunk (INTER_AREA) so its longest side is at most `working_side`,
    and the per-axis factor float32 [2] (x, y) from the given image's pixels to the shrunk
    one's (each side is rounded, so the two may differ slightly); (1, 1) when not shrunk."""
    height, width = pixels.shape[:2]
    shrink = min(1.0, working_side / max(height, width))
    if shrink >= 1.0:
        return pixels, np.ones(2, np.float32)
    size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
    small = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return small, np.array([small.shape[1] / width, small.shape[0] / height], np.float32)
