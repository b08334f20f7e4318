"""Tests of transforms.plumbing.threads: numpy's OpenBLAS limited to one thread at run time."""

from __future__ import annotations

import ctypes

import numpy as np

from transforms.plumbing.threads import _SETTERS, _loaded_openblas, one_blas_thread


def _threads(path: str) -> int:
    library = ctypes.CDLL(path)
    getter = next(getattr(library, n.replace("set_", "get_")) for n in _SETTERS if hasattr(library, n))
    return getter()


def test_numpy_openblas_runs_on_one_thread_with_the_same_products() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((600, 128), dtype=np.float32), rng.random((128, 700), dtype=np.float32)
    before = a @ b
    libraries = _loaded_openblas()
    assert libraries, "numpy's wheel ships OpenBLAS; it is loaded once numpy is imported"
    assert one_blas_thread() == len(libraries)
    assert all(_threads(path) == 1 for path in libraries)
    assert np.array_equal(a @ b, before)
