"""One BLAS thread per Beam worker thread.

Beam's in-process runner (`--direct_running_mode=multi_threading`) and Dataflow's SDK harness
run one bundle per core, each in its own thread. numpy's OpenBLAS starts its own pool of one
thread per core for every matrix product, so N worker threads put N x cores threads on N cores,
and on the small products of this pipeline (the offline global descriptor's [N, 128] x [128, 12],
the descriptor similarities of nearest-neighbour matching) the pool's threads spin longer than
they compute: on 2 busy cores a [4000, 128] x [128, 12] product took 6.9 ms of CPU with the pool
and 0.27 ms on one thread, a [1024, 128] x [128, 4000] block 24.5 ms against 9.0 ms. OpenBLAS
splits a product's rows and columns among its threads, never the sums, so the results are the
same bits on one thread.

`OPENBLAS_NUM_THREADS=1` does the same, but only when set before numpy is first imported, which
a worker process does long before any stage code runs; `one_blas_thread` sets it at run time,
through OpenBLAS's own `openblas_set_num_threads`, as threadpoolctl does. PyTorch's pool is set
by `transforms.features.extractors.learned.device`.
"""

from __future__ import annotations

import ctypes
import os

# OpenBLAS builds rename their symbols: numpy's wheels ship `scipy_openblas64_`, whose setter is
# `scipy_openblas_set_num_threads64_`; a system OpenBLAS keeps the plain name.
_SETTERS = tuple(
    f"{prefix}openblas_set_num_threads{suffix}" for prefix in ("", "scipy_") for suffix in ("", "64_", "_64")
)


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries loaded into this process (Linux: /proc/self/maps; none
    where that file does not exist)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "openblas" in line.lower()}
    except OSError:
        return []
    return sorted(path for path in paths if os.path.isfile(path))


def one_blas_thread() -> int:
    """Limit every OpenBLAS loaded so far to one thread; returns how many libraries were limited.
    The setting is process-wide, so once per worker process is enough (the feature step's model
    load, the verification DoFn's setup), after numpy is imported."""
    limited = 0
    for path in _loaded_openblas():
        library = ctypes.CDLL(path)
        setter = next((getattr(library, name) for name in _SETTERS if hasattr(library, name)), None)
        if setter is not None:
            setter(1)
            limited += 1
    return limited
