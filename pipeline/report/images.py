"""Pictures for `report.html`: thumbnails and pairs drawn with their inlier matches (JPEG bytes).

Pure functions of JPEG bytes and point arrays; which images to draw is decided in
`pipeline.report.page`.
"""

from __future__ import annotations

import cv2
import numpy as np


def _decode(jpeg: bytes) -> np.ndarray:
    """JPEG bytes -> BGR uint8 [H, W, 3]; raises ValueError on bytes OpenCV cannot decode."""
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable image")
    return image


def _encode(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrunk copy with the longest side <= max_side, and the scale applied (<= 1)."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def thumbnail(jpeg: bytes, max_side: int = 160) -> bytes:
    """A JPEG thumbnail with the longest side at most `max_side`."""
    return _encode(_shrink(_decode(jpeg), max_side)[0])


def draw_matches(jpeg_a: bytes, jpeg_b: bytes, points_a: np.ndarray, points_b: np.ndarray, height: int = 260) -> bytes:
    """Images a and b side by side at `height` px, a line per correspondence.

    points_a, points_b: float [K, 2], (x, y) in pixels of the stored (normalised) images, the
    frame keypoints are in. Returns JPEG bytes of a [height, Wa' + Wb', 3] picture.
    """
    a, b = _decode(jpeg_a), _decode(jpeg_b)
    scale_a, scale_b = height / a.shape[0], height / b.shape[0]
    a = cv2.resize(a, (max(1, round(a.shape[1] * scale_a)), height), interpolation=cv2.INTER_AREA)
    b = cv2.resize(b, (max(1, round(b.shape[1] * scale_b)), height), interpolation=cv2.INTER_AREA)
    canvas = np.concatenate([a, b], axis=1)
    offset = np.array([a.shape[1], 0.0])
    for k, (pa, pb) in enumerate(zip(points_a * scale_a, points_b * scale_b + offset, strict=True)):
        colour = ((53 * k) % 200 + 55, (97 * k) % 200 + 55, (151 * k) % 200 + 55)
        start, end = tuple(int(v) for v in np.round(pa)), tuple(int(v) for v in np.round(pb))
        cv2.line(canvas, start, end, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, start, 2, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, end, 2, colour, -1, cv2.LINE_AA)
    return _encode(canvas)
