"""Cheap per-image signatures the label-noise audit buckets images by.

- a 64-bit DCT perceptual hash of the pixels (near duplicates: small Hamming distance);
- a global descriptor (the mean local descriptor, centred on the dataset's mean) hashed into
  SimHash bands (images with similar content tend to share a band's code).

Both are pure functions of numpy arrays; bucketing and pairing live in `transforms.selection.audit`.
"""

from __future__ import annotations

import hashlib
import math

import cv2
import numpy as np

HASH_BITS = 64
MAX_SIMHASH_BITS = 24


def perceptual_hash(pixels: np.ndarray) -> int:
    """64-bit pHash of a uint8 image, grey [H, W] or RGB [H, W, 3]: the signs of the 8x8 lowest
    DCT frequencies of a 32x32 grey thumbnail, against their median (the DC term is left out of
    the median)."""
    grey = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def hash_bands(value: int, bands: int) -> list[int]:
    """Cut a 64-bit hash into `bands` equal slices (most significant first). Two hashes within
    Hamming distance < bands share at least one slice exactly (pigeonhole)."""
    width = HASH_BITS // bands
    mask = (1 << width) - 1
    return [(value >> (HASH_BITS - width * (band + 1))) & mask for band in range(bands)]


def descriptor_mean(descriptors: np.ndarray) -> np.ndarray:
    """Mean of an image's local descriptors [N, D] -> float64 [D]; zeros when N is 0."""
    if len(descriptors) == 0:
        return np.zeros(descriptors.shape[1], dtype=np.float64)
    return descriptors.astype(np.float64).mean(axis=0)


def global_signature(mean: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Unit vector [D] of (mean - centre); zeros when the image sits exactly on the centre.

    Centring matters: local descriptors such as RootSIFT are non-negative, so uncentred means
    all point the same way and every image would share every SimHash code."""
    delta = mean - centre
    norm = float(np.linalg.norm(delta))
    return (delta / norm).astype(np.float32) if norm > 0 else np.zeros_like(delta, dtype=np.float32)


def hyperplanes(seed: int, bands: int, dim: int) -> np.ndarray:
    """Seeded random hyperplanes [bands, MAX_SIMHASH_BITS, dim] (float32)."""
    digest = hashlib.sha256(f"audit-simhash:{seed}:{dim}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return rng.standard_normal((bands, MAX_SIMHASH_BITS, dim)).astype(np.float32)


def bits_for(images: int, bucket_target: int) -> int:
    """SimHash bits per band so that a band's average bucket holds about `bucket_target` images
    (0 bits, one bucket per band, while all images fit in one)."""
    return min(MAX_SIMHASH_BITS, max(0, math.ceil(math.log2(max(images, 1) / bucket_target))))


def simhash_codes(signature: np.ndarray, planes: np.ndarray, bits: int) -> list[int]:
    """One `bits`-bit code per band: the signs of the signature [D] against planes [bands, *, D]."""
    signs = planes[:, :bits, :] @ signature > 0  # [bands, bits]
    weights = 1 << np.arange(bits, dtype=np.int64)
    return [int(code) for code in signs.astype(np.int64) @ weights]
