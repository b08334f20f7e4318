"""glibc's allocator told to keep freed blocks for reuse in a worker process.

By default glibc serves a block above a threshold that starts at 128 KiB with its own `mmap`
and returns it to the kernel on free, and gives back the top of a heap above a trim threshold;
both thresholds adapt to what was freed, up to 32 MiB. The learned extractor allocates maps of
10 to 100 MB per image (ALIKED's levels at 480 px), so every image faulted ~124 MB of zeroed
pages back in: 50 ms of system CPU per image against 105 ms of compute. Fixing the mmap
threshold at its 32 MiB maximum and the trim threshold at 128 MiB keeps those blocks in the
heap; the largest (the dense map) the extractor reuses itself. Memory stays bounded: at most
the trim threshold of freed memory is kept per heap, beside the blocks in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 128 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once per worker process is
    enough; repeating it is harmless). False where the C library is not glibc (no `mallopt`),
    which then keeps its own behaviour."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
