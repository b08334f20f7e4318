"""The one array codec used wherever numpy arrays are stored or shuffled.

Layout (little endian): magic `GLA1`, u8 length of the dtype string, the numpy dtype string,
u8 ndim, ndim x u32 shape, then the raw C-order bytes. Compact (no padding), exact (bit for
bit round trip) and independent of the numpy version.
"""

from __future__ import annotations

import struct

import numpy as np

_MAGIC = b"GLA1"


def encode_array(array: np.ndarray) -> bytes:
    """Serialise any fixed-size numeric array; the dtype is stored little endian."""
    array = np.asarray(array, order="C")  # not ascontiguousarray: it turns a 0-d array into shape (1,)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype.hasobject:
        raise TypeError("object arrays cannot be encoded")
    descr = dtype.str.encode("ascii")
    header = _MAGIC + struct.pack("<B", len(descr)) + descr + struct.pack("<B", array.ndim)
    header += struct.pack(f"<{array.ndim}I", *array.shape)
    return header + array.astype(dtype, copy=False).tobytes(order="C")


def decode_array(data: bytes) -> np.ndarray:
    """Inverse of `encode_array`; raises ValueError on bytes it did not write."""
    if data[:4] != _MAGIC:
        raise ValueError("not an encoded array (bad magic)")
    pos = 4
    try:
        (dlen,) = struct.unpack_from("<B", data, pos)
        pos += 1
        dtype = np.dtype(data[pos : pos + dlen].decode("ascii"))
        pos += dlen
        (ndim,) = struct.unpack_from("<B", data, pos)
        pos += 1
        shape = struct.unpack_from(f"<{ndim}I", data, pos)
        pos += 4 * ndim
    except (struct.error, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"encoded array header is truncated or corrupt: {exc}") from exc
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - pos != expected:
        raise ValueError(f"encoded array has {len(data) - pos} bytes, expected {expected}")
    return np.frombuffer(data, dtype=dtype, offset=pos).reshape(shape).copy()
