"""A rate-limited progress line on stderr for local runs, and per-stage Beam counters.

On Dataflow the counters show in the job page; locally (in-process runners) the DoFns share this
process, so one throttled line per few seconds tells a user that a long run is alive.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter

from apache_beam.metrics import Metrics

_lock = threading.Lock()
_counts: Counter[str] = Counter()
# Off unless the launching process turns it on (`pipeline.runner.run_pipeline`): a remote worker
# imports this module afresh and must not print a line per few seconds into its logs.
_state = {"last": 0.0, "enabled": False}
_INTERVAL_S = 5.0


def set_enabled(enabled: bool) -> None:
    """Turn the local progress line on or off for this process (counters are always kept)."""
    _state["enabled"] = enabled


def tick(stage: str, outcome: str) -> None:
    """Count one element of `stage` ending in `outcome` (a Beam counter and the local line)."""
    Metrics.counter(stage, outcome).inc()
    with _lock:
        _counts[stage] += 1
        now = time.monotonic()
        if not _state["enabled"] or now - _state["last"] < _INTERVAL_S:
            return
        _state["last"] = now
        line = ", ".join(f"{name} {count}" for name, count in sorted(_counts.items()))
    print(f"[gld] progress: {line}", file=sys.stderr, flush=True)


class StageTimer:
    """Adds the wall time of a block to the `<stage>/busy_ms` counter (summed over workers)."""

    def __init__(self, stage: str) -> None:
        self._counter = Metrics.counter(stage, "busy_ms")
        self._start = 0.0

    def __enter__(self) -> StageTimer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._counter.inc(int((time.perf_counter() - self._start) * 1000))
