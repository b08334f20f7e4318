"""A fix for a race in Beam's in-process runner (FnApiRunner, apache-beam 2.77) that silently
drops elements.

With `--direct_num_workers` > 1 a stage's input is cut into parts processed by parallel
threads, and each thread stores the stage's outputs with `BundleContextManager.get_buffer`,
which creates a missing buffer with an unlocked check-then-set. When two parts write their
first output to the same materialised PCollection (or grouping buffer) at the same time, both
create a buffer, the second replaces the first, and what the first part had appended is gone
(seen as 1-2 of 237 demo images missing from `decisions.parquet`, `accounting_ok: false`).
Serialising buffer creation closes the window; appends to an existing buffer are unchanged.
"""

from __future__ import annotations

import threading

from apache_beam.runners.portability.fn_api_runner import execution

_LOCK = threading.Lock()


def lock_buffer_creation() -> None:
    """Patch `BundleContextManager.get_buffer` to run under one lock (idempotent)."""
    original = execution.BundleContextManager.get_buffer
    if getattr(original, "gld_locked", False):
        return

    def get_buffer(self, buffer_id: bytes, transform_id: str) -> execution.PartitionableBuffer:
        with _LOCK:
            return original(self, buffer_id, transform_id)

    get_buffer.gld_locked = True
    execution.BundleContextManager.get_buffer = get_buffer
