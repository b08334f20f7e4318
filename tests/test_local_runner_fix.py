"""The lock around buffer creation in Beam's in-process runner (pipeline.local_runner_fix)."""

from __future__ import annotations

import threading
import time

import pytest
from apache_beam.runners.portability.fn_api_runner import execution

from pipeline.local_runner_fix import lock_buffer_creation


class _Context:
    def __init__(self) -> None:
        self.buffers: dict[bytes, list] = {}


def _racy_get_buffer(self: _Context, buffer_id: bytes, transform_id: str) -> list:
    # the shape of Beam's code: check, (be preempted), then set
    if buffer_id not in self.buffers:
        time.sleep(0.01)
        self.buffers[buffer_id] = []
    return self.buffers[buffer_id]


def _append_from_threads(context: _Context, get_buffer) -> int:
    barrier = threading.Barrier(8)

    def write(n: int) -> None:
        barrier.wait()
        get_buffer(context, b"materialize:x", "t").append(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(context.buffers[b"materialize:x"])


def test_locked_buffer_creation_keeps_every_element(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _append_from_threads(_Context(), _racy_get_buffer) < 8  # the race loses elements
    monkeypatch.setattr(execution.BundleContextManager, "get_buffer", _racy_get_buffer)
    lock_buffer_creation()
    patched = execution.BundleContextManager.get_buffer
    assert _append_from_threads(_Context(), patched) == 8
    lock_buffer_creation()  # idempotent: no second wrapper
    assert execution.BundleContextManager.get_buffer is patched
