"""SIFT / RootSIFT through OpenCV: the default extractor (CPU)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from transforms.features.extractors.base import FeatureArrays, compact_descriptors, no_features, shrink_for_working_side

if TYPE_CHECKING:  # annotations only
    from transforms.features.extractors.config import FeatureConfig


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """SIFT [N, 128] -> RootSIFT float32 [N, 128] (Arandjelovic & Zisserman 2012): the square
    root of the L1-normalised vector, so components lie in [0, 1] and rows have unit L2 norm
    (all-zero rows stay zero)."""
    d = descriptors.astype(np.float32)
    return np.sqrt(d / np.maximum(d.sum(axis=1, keepdims=True), 1e-12))


class SiftExtractor:
    """OpenCV SIFT, RootSIFT by default. One instance may serve several threads: OpenCV's
    detectAndCompute keeps no state between calls and releases the GIL."""

    errors = (cv2.error,)

    def __init__(self, config: FeatureConfig) -> None:
        self._config = config
        # OpenCV can return a few more than nfeatures (one location, two orientations); the
        # caller truncates by response with a fixed tie order so the result is deterministic.
        self._sift = cv2.SIFT_create(
            nfeatures=config.max_features,
            contrastThreshold=config.contrast_threshold,
            edgeThreshold=config.edge_threshold,
        )

    def __call__(self, pixels: np.ndarray) -> FeatureArrays:
        grey, factor = shrink_for_working_side(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), self._config.working_side)
        keypoints, descriptors = self._sift.detectAndCompute(grey, None)
        if not keypoints or descriptors is None:
            return no_features(128, self._config.descriptor_dtype)
        xy = np.array([k.pt for k in keypoints], dtype=np.float32)
        scales = np.array([k.size for k in keypoints], dtype=np.float32)
        scores = np.array([k.response for k in keypoints], dtype=np.float32)
        order = np.lexsort((xy[:, 1], xy[:, 0], -scores))[: self._config.max_features]
        xy, scales, scores, descriptors = xy[order], scales[order], scores[order], descriptors[order]
        if factor[0] != 1.0 or factor[1] != 1.0:
            # back to pixel centres of the normalised image (per axis: the sizes were rounded)
            xy = ((xy + 0.5) / factor - 0.5).astype(np.float32)
            scales = (scales / factor.mean()).astype(np.float32)
        if self._config.root_sift:
            return xy, compact_descriptors(root_sift(descriptors), self._config.descriptor_dtype), scales, scores
        return xy, compact_descriptors(descriptors, self._config.descriptor_dtype, byte_scale=1.0), scales, scores
