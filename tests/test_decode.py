"""Tests of stage 3 (transforms/ingest/decode.py): decoding and normalising images built in memory."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib

import apache_beam as beam
import cv2
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image, ImageFile, features

from schemas.records import DecodedImage, Failure, FetchedImage, ManifestRow
from schemas.vocabulary import Reason, Stage
from transforms.ingest.decode import (
    DecodeConfig,
    DecodeImages,
    Normalised,
    decode_image,
    normalise,
    shrink,
    stored_pixels,
)

ROW = ManifestRow(line=3, id="0123456789abcdef", url="http://x.test/a.jpg", landmark_id=5)
RUNNER_ARGS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]


def _gradient(width: int, height: int) -> np.ndarray:
    """A smooth RGB test card (JPEG keeps it close)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], axis=2).astype(
        np.uint8
    )


def _noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _decode(data: bytes, config: DecodeConfig | None = None) -> DecodedImage | Failure:
    return decode_image(FetchedImage(row=ROW, data=data), config or DecodeConfig())


def _ok(data: bytes, config: DecodeConfig | None = None) -> Normalised:
    """The normalised pixels (before re-encoding), after checking that the stored record is
    exactly those pixels re-encoded at the configured quality."""
    config = config or DecodeConfig()
    result = normalise(data, config)
    assert isinstance(result, Normalised), result
    pixels = result.pixels
    assert pixels.dtype == np.uint8
    assert pixels.ndim == 3
    assert pixels.shape[2] == 3
    assert pixels.flags.c_contiguous
    stored = _decode(data, config)
    assert isinstance(stored, DecodedImage), stored
    assert (stored.height, stored.width) == pixels.shape[:2]
    assert (stored.original_width, stored.original_height) == (result.original_width, result.original_height)
    assert stored.original_bytes == len(data)
    reencoded = cv2.imencode(".jpg", pixels[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])[1]
    assert stored.jpeg == reencoded.tobytes()
    assert stored_pixels(stored).shape == pixels.shape
    return result


def _stored(data: bytes, config: DecodeConfig | None = None) -> DecodedImage:
    result = _decode(data, config)
    assert isinstance(result, DecodedImage), result
    return result


def _fails(data: bytes, config: DecodeConfig | None = None) -> Failure:
    result = _decode(data, config)
    assert isinstance(result, Failure), result
    assert result.stage is Stage.DECODE
    assert (result.line, result.id, result.landmark_id, result.url) == (ROW.line, ROW.id, ROW.landmark_id, ROW.url)
    return result


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR claims `width` x `height` (CRC fixed up): only the header is big."""
    data = bytearray(_encode(Image.new("RGB", (8, 8), (1, 2, 3)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# ---------------------------------------------------------------------------------------------
# formats and modes


def test_png_rgb_is_exact() -> None:
    pixels = _noise(120, 80)
    data = _encode(Image.fromarray(pixels), "PNG")
    decoded = _ok(data)
    np.testing.assert_array_equal(decoded.pixels, pixels)
    assert (decoded.original_width, decoded.original_height) == (120, 80)


def test_jpeg_rgb_is_close() -> None:
    pixels = _gradient(160, 90)
    decoded = _ok(_encode(Image.fromarray(pixels), "JPEG", quality=95))
    assert decoded.pixels.shape == (90, 160, 3)
    assert np.abs(decoded.pixels.astype(int) - pixels).mean() < 3


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_grey_becomes_three_equal_channels(fmt: str) -> None:
    grey = _gradient(64, 48)[:, :, 0]
    decoded = _ok(_encode(Image.fromarray(grey, mode="L"), fmt))
    assert decoded.pixels.shape == (48, 64, 3)
    np.testing.assert_array_equal(decoded.pixels[:, :, 0], decoded.pixels[:, :, 1])
    np.testing.assert_array_equal(decoded.pixels[:, :, 0], decoded.pixels[:, :, 2])
    tolerance = 0 if fmt == "PNG" else 8
    assert np.abs(decoded.pixels[:, :, 0].astype(int) - grey).max() <= tolerance


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    image = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # pure red in CMYK
    assert Image.open(io.BytesIO(_encode(image, "JPEG"))).mode == "CMYK"
    decoded = _ok(_encode(image, "JPEG", quality=95))
    assert decoded.pixels.shape == (48, 64, 3)
    np.testing.assert_allclose(decoded.pixels.reshape(-1, 3).mean(axis=0), [255, 0, 0], atol=6)


def test_rgba_png_is_composited_on_white() -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :10] = (255, 0, 0, 0)  # fully transparent red -> white
    rgba[:, 10:20] = (0, 0, 255, 255)  # opaque blue
    rgba[:, 20:30] = (0, 0, 0, 128)  # half transparent black -> mid grey
    rgba[:, 30:] = (0, 255, 0, 255)  # opaque green
    decoded = _ok(_encode(Image.fromarray(rgba, mode="RGBA"), "PNG"))
    assert decoded.pixels[0, 0].tolist() == [255, 255, 255]
    assert decoded.pixels[0, 15].tolist() == [0, 0, 255]
    assert all(abs(int(v) - 127) <= 1 for v in decoded.pixels[0, 25])
    assert decoded.pixels[0, 35].tolist() == [0, 255, 0]


def test_grey_alpha_and_palette_transparency_are_composited_on_white() -> None:
    la = Image.new("LA", (40, 40), (0, 0))  # transparent black
    assert _ok(_encode(la, "PNG")).pixels[0, 0].tolist() == [255, 255, 255]
    palette = Image.new("P", (40, 40), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    decoded = _ok(_encode(palette, "PNG", transparency=1))
    assert decoded.pixels[5, 5].tolist() == [255, 255, 255]
    assert _ok(_encode(palette, "PNG")).pixels[5, 5].tolist() == [255, 0, 0]  # no transparency: the colour


def test_16_bit_grey_png_is_scaled_to_8_bits() -> None:
    values = np.array([0, 257, 257 * 100, 257 * 200, 65535, 65535], dtype=np.uint16)
    grey16 = np.tile(values, (40, 6))  # 40 x 36
    image = Image.fromarray(grey16)
    assert image.mode == "I;16"
    reopened = Image.open(io.BytesIO(_encode(image, "PNG")))
    assert reopened.mode in ("I;16", "I")
    decoded = _ok(_encode(image, "PNG"))
    assert decoded.pixels.shape == (40, 36, 3)
    assert decoded.pixels[0, :6, 0].tolist() == [0, 1, 100, 200, 255, 255]
    np.testing.assert_array_equal(decoded.pixels[:, :, 0], decoded.pixels[:, :, 2])


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_lossless_webp_is_exact() -> None:
    pixels = _noise(50, 40, seed=3)
    decoded = _ok(_encode(Image.fromarray(pixels), "WEBP", lossless=True))
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_gif_and_bmp_decode() -> None:
    pixels = _gradient(48, 36)
    np.testing.assert_array_equal(_ok(_encode(Image.fromarray(pixels), "BMP")).pixels, pixels)
    assert _ok(_encode(Image.fromarray(pixels).convert("P"), "GIF")).pixels.shape == (36, 48, 3)


def test_exif_orientation_6_is_applied() -> None:
    pixels = np.zeros((40, 60, 3), np.uint8)  # stored 60 wide, 40 high
    pixels[:, :30] = (255, 0, 0)  # left half red
    pixels[:, 30:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = _ok(_encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif))
    assert decoded.pixels.shape == (60, 40, 3)  # displayed 40 wide, 60 high
    assert (decoded.original_width, decoded.original_height) == (60, 40)  # as stored
    # clockwise: what was on the left is now on top
    np.testing.assert_allclose(decoded.pixels[5, 20], [255, 0, 0], atol=8)
    np.testing.assert_allclose(decoded.pixels[55, 20], [0, 0, 255], atol=8)


def test_without_exif_orientation_nothing_rotates() -> None:
    exif = Image.Exif()
    exif[0x0112] = 1
    assert _ok(_encode(Image.fromarray(_gradient(60, 40)), "JPEG", exif=exif)).pixels.shape == (40, 60, 3)


# ---------------------------------------------------------------------------------------------
# size normalisation


@pytest.mark.parametrize(
    ("fmt", "size", "max_side", "expected"),
    [
        ("JPEG", (2100, 1050), 512, (256, 512)),  # JPEG draft (DCT scaling to 1/2) then resize
        ("JPEG", (750, 1500), 512, (512, 256)),
        ("PNG", (800, 400), 256, (128, 256)),
        ("PNG", (1000, 333), 256, (85, 256)),  # 333 * 0.256 = 85.2
        ("PNG", (300, 300), 256, (256, 256)),
    ],
)
def test_large_images_shrink_to_max_side_keeping_aspect(
    fmt: str, size: tuple[int, int], max_side: int, expected: tuple[int, int]
) -> None:
    data = _encode(Image.fromarray(_gradient(*size)), fmt)
    decoded = _ok(data, DecodeConfig(max_side=max_side))
    assert decoded.pixels.shape == (*expected, 3)
    assert (decoded.original_width, decoded.original_height) == size


def test_shrunk_image_still_looks_like_the_original() -> None:
    pixels = _gradient(800, 400)
    decoded = _ok(_encode(Image.fromarray(pixels), "PNG"), DecodeConfig(max_side=200))
    expected = cv2.resize(pixels, (200, 100), interpolation=cv2.INTER_AREA)
    assert np.abs(decoded.pixels.astype(int) - expected).max() <= 1


@pytest.mark.parametrize(("width", "height"), [(100, 60), (1024, 700), (700, 1024)])
def test_small_images_are_never_upscaled(width: int, height: int) -> None:
    pixels = _noise(width, height)
    decoded = _ok(_encode(Image.fromarray(pixels), "PNG"), DecodeConfig(max_side=1024))
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_shrink_function() -> None:
    pixels = _noise(30, 20)
    same = shrink(pixels, 30)
    np.testing.assert_array_equal(same, pixels)
    assert shrink(pixels, 15).shape == (10, 15, 3)
    assert shrink(np.zeros((5, 1000, 3), np.uint8), 100).shape == (1, 100, 3)  # never a zero side
    assert shrink(pixels[:, ::2], 100).flags.c_contiguous


# ---------------------------------------------------------------------------------------------
# failures


def test_truncated_jpeg() -> None:
    data = _encode(Image.fromarray(_noise(200, 150)), "JPEG")
    for cut in (len(data) // 2, len(data) - 50):
        failure = _fails(data[:cut])
        assert failure.reason is Reason.TRUNCATED, failure


def test_truncated_png() -> None:
    data = _encode(Image.fromarray(_noise(200, 150)), "PNG")
    assert _fails(data[: len(data) // 2]).reason is Reason.TRUNCATED


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE html><html><body>Not Found</body></html>",
        b"",
        b"\x00" * 100,
        b'{"error": "rate limited"}',
    ],
)
def test_non_images(data: bytes) -> None:
    failure = _fails(data)
    assert failure.reason is Reason.NOT_AN_IMAGE
    assert "unknown format" in failure.detail


def test_jpeg_header_alone_is_not_a_decodable_image() -> None:
    failure = _fails(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    assert failure.reason in (Reason.NOT_AN_IMAGE, Reason.DECODE_ERROR, Reason.TRUNCATED)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corrupt_middle_bytes_fail(seed: int) -> None:
    data = bytearray(_encode(Image.fromarray(_noise(200, 150)), "PNG"))
    rng = random.Random(seed)
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] = rng.randrange(256)
    assert _fails(bytes(data)).reason in (Reason.DECODE_ERROR, Reason.TRUNCATED)


def test_too_many_pixels_fails_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[object] = []
    real_load = ImageFile.ImageFile.load

    def recording_load(self: ImageFile.ImageFile) -> object:
        loads.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    data = _png_claiming(5000, 4000)  # 20 Mpx claimed by a ~70 byte file
    assert len(data) < 200
    failure = _fails(data, DecodeConfig(max_pixels=1_000_000))
    assert failure.reason is Reason.TOO_MANY_PIXELS
    assert "5000x4000" in failure.detail
    assert loads == []
    # the same file under a larger limit gets as far as decoding, and fails there
    assert _fails(data, DecodeConfig(max_pixels=50_000_000)).reason in (Reason.TRUNCATED, Reason.DECODE_ERROR)
    assert loads


def test_decompression_bomb_is_refused_by_pillow_check_too() -> None:
    failure = _fails(_png_claiming(100_000, 100_000))  # 10 Gpx, default config
    assert failure.reason is Reason.TOO_MANY_PIXELS


def test_max_pixels_boundary() -> None:
    data = _encode(Image.fromarray(_noise(50, 40)), "PNG")
    assert isinstance(_decode(data, DecodeConfig(max_pixels=2000)), DecodedImage)
    assert _fails(data, DecodeConfig(max_pixels=1999)).reason is Reason.TOO_MANY_PIXELS


@pytest.mark.parametrize(("width", "height"), [(20, 20), (100, 31), (31, 100)])
def test_too_small(width: int, height: int) -> None:
    failure = _fails(_encode(Image.fromarray(_noise(width, height)), "PNG"), DecodeConfig(min_side=32))
    assert failure.reason is Reason.TOO_SMALL


def test_min_side_applies_after_shrinking() -> None:
    data = _encode(Image.fromarray(_gradient(2000, 40)), "PNG")
    assert isinstance(_decode(data, DecodeConfig(max_side=2000, min_side=32)), DecodedImage)
    assert _fails(data, DecodeConfig(max_side=1000, min_side=32)).reason is Reason.TOO_SMALL  # 1000 x 20


def test_exactly_min_side_is_kept() -> None:
    assert _ok(_encode(Image.fromarray(_noise(32, 32)), "PNG"), DecodeConfig(min_side=32)).pixels.shape == (32, 32, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_side": 0},
        {"min_side": 2000, "max_side": 1000},
        {"max_pixels": 0},
        {"jpeg_quality": 0},
        {"jpeg_quality": 101},
    ],
)
def test_decode_config_validation(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DecodeConfig(**kwargs)


# ---------------------------------------------------------------------------------------------
# what is recorded


def test_hash_sizes_and_row_are_recorded() -> None:
    data = _encode(Image.fromarray(_gradient(640, 480)), "JPEG")
    decoded = _stored(data, DecodeConfig(max_side=320))
    assert decoded.row == ROW
    assert decoded.sha256 == hashlib.sha256(data).hexdigest()
    assert decoded.original_bytes == len(data)
    assert (decoded.original_width, decoded.original_height) == (640, 480)
    assert (decoded.width, decoded.height) == (320, 240)
    assert stored_pixels(decoded).shape == (240, 320, 3)


def test_jpeg_output_decodes_to_the_pixels() -> None:
    pixels = _gradient(300, 200)
    decoded = _stored(_encode(Image.fromarray(pixels), "PNG"), DecodeConfig(jpeg_quality=95))
    assert decoded.jpeg[:3] == b"\xff\xd8\xff"
    bgr = cv2.imdecode(np.frombuffer(decoded.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert bgr.shape == (200, 300, 3)
    assert np.abs(bgr[:, :, ::-1].astype(int) - stored_pixels(decoded)).mean() < 2  # RGB order, not BGR
    with Image.open(io.BytesIO(decoded.jpeg)) as reread:
        assert (reread.format, reread.size, reread.mode) == ("JPEG", (300, 200), "RGB")


def test_jpeg_quality_changes_the_output_size() -> None:
    data = _encode(Image.fromarray(_noise(200, 200)), "PNG")
    low = _stored(data, DecodeConfig(jpeg_quality=20)).jpeg
    high = _stored(data, DecodeConfig(jpeg_quality=95)).jpeg
    assert len(low) < len(high)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decoding_is_deterministic(fmt: str) -> None:
    data = _encode(Image.fromarray(_gradient(1500, 1000)), fmt)
    first = _stored(data, DecodeConfig(max_side=512))
    second = _stored(data, DecodeConfig(max_side=512))
    assert first.jpeg == second.jpeg
    np.testing.assert_array_equal(stored_pixels(first), stored_pixels(second))
    assert first.sha256 == second.sha256


# ---------------------------------------------------------------------------------------------
# the DecodeImages PTransform


def _outcome(item: DecodedImage | Failure) -> tuple[int, str, object]:
    if isinstance(item, Failure):
        return item.line, item.id, item.reason.value
    return item.row.line, item.row.id, stored_pixels(item).shape


def test_decode_images_pipeline() -> None:
    good = _encode(Image.fromarray(_gradient(400, 200)), "JPEG")
    inputs = [
        FetchedImage(ManifestRow(2, "good", "", 1), good),
        FetchedImage(ManifestRow(3, "html", "", 1), b"<html>oops</html>"),
        FetchedImage(ManifestRow(4, "cut", "", 2), good[: len(good) // 2]),
        FetchedImage(ManifestRow(5, "tiny", "", 2), _encode(Image.new("RGB", (8, 8)), "PNG")),
    ]
    with BeamTestPipeline(options=PipelineOptions(RUNNER_ARGS)) as pipeline:
        decoded, failures = pipeline | beam.Create(inputs) | DecodeImages(DecodeConfig(max_side=100))
        assert_that(decoded | "Ok" >> beam.Map(_outcome), equal_to([(2, "good", (50, 100, 3))]), label="Decoded")
        assert_that(
            failures | "Bad" >> beam.Map(_outcome),
            equal_to([(3, "html", "not_an_image"), (4, "cut", "truncated"), (5, "tiny", "too_small")]),
            label="Failures",
        )
