"""Stage 3: decode and normalise images to 8-bit RGB at a bounded size.

Pillow decodes (it refuses truncated files instead of padding them with grey, reads the size
before decoding so a decompression bomb fails cheaply, applies EXIF orientation and converts
grey/CMYK/alpha/16-bit); OpenCV resizes and re-encodes.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from schemas.records import DecodedImage, Failure, FetchedImage
from schemas.vocabulary import Reason, Stage
from transforms.plumbing.progress import StageTimer
from transforms.plumbing.routing import route

STAGE = Stage.DECODE.value

# Never decode half an image: a truncated file must fail, not come back grey-padded.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# DecodeConfig.max_pixels is enforced below, from the header and before any decoding; Pillow's
# own global limit (a warning, process-wide) would override the configured one.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class DecodeConfig:
    """`max_side`: longest side after normalisation (never upscaled). 1024 keeps what SIFT
    needs to verify landmark photos (measured: 800 px lost verifiable pairs) while bounding
    memory and feature cost. `max_pixels` refuses decompression bombs before decoding."""

    max_side: int = 1024
    min_side: int = 32
    max_pixels: int = 100_000_000
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if not 0 < self.min_side <= self.max_side:
            raise ValueError("need 0 < min_side <= max_side")
        if self.max_pixels <= 0:
            raise ValueError("max_pixels must be > 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")


def _fail(fetched: FetchedImage, reason: Reason, detail: str) -> Failure:
    row = fetched.row
    return Failure(row.line, row.id, row.landmark_id, Stage.DECODE, reason, detail, row.url)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """uint8 RGB [H, W, 3] from any Pillow mode (alpha composited on white, 16-bit scaled)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(image, dtype=np.uint32)
        scale = 257.0 if grey.max(initial=0) > 255 else 1.0
        grey8 = np.clip(np.round(grey / scale), 0, 255).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    if image.mode == "F":
        grey8 = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


class Normalised(NamedTuple):
    """An image decoded to uint8 RGB [H, W, 3] (longest side <= max_side), before re-encoding."""

    pixels: np.ndarray
    original_width: int
    original_height: int


def normalise(data: bytes, config: DecodeConfig) -> Normalised | tuple[Reason, str]:
    """Decode, orient, convert and shrink one image; (reason, detail) when it cannot.

    Reasons: not_an_image (no known format), too_many_pixels (checked before decoding),
    truncated (the file ends early), decode_error (anything else Pillow refuses), too_small
    (shorter side < `min_side`).
    """
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return Reason.NOT_AN_IMAGE, f"unknown format, starts with {data[:16]!r}"
    except Exception as exc:
        return Reason.DECODE_ERROR, f"{type(exc).__name__}: {exc}"
    width, height = image.size
    if width * height > config.max_pixels:
        return Reason.TOO_MANY_PIXELS, f"{width}x{height} > {config.max_pixels} pixels"
    try:
        # JPEG DCT scaling: decode directly at >= the target size, much faster for big photos.
        image.draft("RGB", (config.max_side, config.max_side))
        image.load()
        image = ImageOps.exif_transpose(image)
        pixels = _to_rgb(image)
    except OSError as exc:
        reason = Reason.TRUNCATED if "truncated" in str(exc).lower() else Reason.DECODE_ERROR
        return reason, f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        return Reason.DECODE_ERROR, f"{type(exc).__name__}: {exc}"
    pixels = shrink(pixels, config.max_side)
    if min(pixels.shape[:2]) < config.min_side:
        return Reason.TOO_SMALL, f"{pixels.shape[1]}x{pixels.shape[0]} < {config.min_side} px"
    return Normalised(pixels, width, height)


def decode_image(fetched: FetchedImage, config: DecodeConfig) -> DecodedImage | Failure:
    """`normalise`, then re-encode as JPEG at `jpeg_quality` (what the store keeps and what
    features are computed from). Failure reasons: those of `normalise`, and decode_error when
    the re-encoding fails."""
    data = fetched.data
    result = normalise(data, config)
    if not isinstance(result, Normalised):
        return _fail(fetched, *result)
    pixels = result.pixels
    ok, encoded = cv2.imencode(".jpg", pixels[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    if not ok:
        return _fail(fetched, Reason.DECODE_ERROR, "JPEG re-encoding failed")
    return DecodedImage(
        row=fetched.row,
        jpeg=encoded.tobytes(),
        width=pixels.shape[1],
        height=pixels.shape[0],
        original_width=result.original_width,
        original_height=result.original_height,
        original_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def stored_pixels(image: DecodedImage) -> np.ndarray:
    """The pixels of a stored image, uint8 RGB [height, width, 3], decoded from its JPEG (what
    every stage that looks at pixels sees); ValueError when the JPEG does not decode."""
    bgr = cv2.imdecode(np.frombuffer(image.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"image {image.row.id}: stored JPEG does not decode")
    # OpenCV's channel swap: the same bytes as numpy's reversed copy, in a tenth of its time
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def shrink(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Resize [H, W, C] so that max(H, W) <= max_side, keeping the aspect ratio; never upscales."""
    height, width = pixels.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return np.ascontiguousarray(pixels)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


class _DecodeFn(beam.DoFn):
    def __init__(self, config: DecodeConfig) -> None:
        self._config = config

    def process(self, fetched: FetchedImage) -> Iterator[DecodedImage | Failure]:
        with StageTimer(STAGE):
            result = decode_image(fetched, self._config)
        yield result


class DecodeImages(beam.PTransform):
    """FetchedImage PCollection -> (DecodedImage PCollection, Failure PCollection)."""

    def __init__(self, config: DecodeConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, fetched: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        decoded = fetched | "Decode" >> beam.ParDo(_DecodeFn(self._config))
        return route("RouteDecoded", decoded, STAGE)
