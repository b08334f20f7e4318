"""Elements lost by Beam 2.77's in-process gRPC runner (`--direct_running_mode=multi_threading`).

Root cause (apache_beam/runners/worker/data_plane.py, TimeBasedBufferingClosableOutputStream):
the FnApiRunner turns on time-based flushing of every data-plane output stream
(fn_api_runner/worker_handlers.py: DATA_BUFFER_TIME_LIMIT_MS = 1000, used for the embedded SDK
harness and for the runner's own BeamFnDataServicer). A daemon PeriodicThread then calls
`flush()` every second: `self._flush_callback(self.get()); self._clear()`. The writer (the
bundle's thread, DataOutputOperation.process) writes to the same stream without any lock, so
whatever it writes between the flusher's `get()` and `_clear()` is discarded: the flush
callback copies the buffer into a proto and puts it on a byte-limited send queue, which blocks
(releasing the GIL) once 100 MB are queued, so with MB-sized elements whole elements vanish
(a feature set missing from its block: KeyError) and an element cut in half leaves a stream that
decodes as garbage (None where a tuple was; a varint length read from descriptor bytes makes
InputStream.read allocate gigabytes: the OOM).

The deterministic demonstration of the race runs always (it takes milliseconds); the tests marked
GLD_REPRO run it in whole pipelines and are skipped by default (`GLD_REPRO=1 pytest
tests/test_local_runner.py`). Always on: a local `run_pipeline` creates no time-flushed stream,
the fix fails loudly when Beam's internals change, and the pipeline shape keeps every element
with time-based flushing off.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker import data_plane

from pipeline.runner import (
    check_flush_internals,
    disable_time_based_flush,
    local_runner_args,
    run_pipeline,
    shows_progress,
)

REPRO = pytest.mark.skipif(not os.environ.get("GLD_REPRO"), reason="Beam 2.77 bug demonstration (GLD_REPRO=1)")

MULTI_THREADING = ["--runner=DirectRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=1"]


def _array(i: int, size: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(size // 2).astype(np.float16)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def _check(key_grouped: tuple, size: int) -> str:
    """One JSON row per key: did its one array (intact) and its two needs arrive?"""
    key, grouped = key_grouped
    arrays, needs = list(grouped["features"]), list(grouped["needs"])
    i = int(key[2:])
    ok = len(arrays) == 1 and len(needs) == 2 and _digest(arrays[0]) == _digest(_array(i, size))
    return json.dumps([key, ok, len(arrays), len(needs)])


def run_shape(args: list[str], n: int, size: int) -> list[list]:
    """The shape of VerifyPairs/JoinNeeds: n arrays of `size` bytes keyed by id, CoGroupByKey'd
    with two small "needs" per id; returns one [id, ok, arrays, needs] row per key seen."""
    out_dir = tempfile.mkdtemp(prefix="gld-runner-")
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        ids = p | beam.Create(list(range(n)))
        arrays = ids | "Make" >> beam.Map(lambda i: (f"id{i:05d}", _array(i, size)))
        needs = ids | "Needs" >> beam.FlatMap(lambda i: [(f"id{i:05d}", (i % 30, 0)), (f"id{i:05d}", (i % 30, 1))])
        (
            {"features": arrays, "needs": needs}
            | beam.CoGroupByKey()
            | beam.Map(_check, size)
            | beam.io.WriteToText(os.path.join(out_dir, "rows"))
        )
    rows = []
    for path in glob.glob(os.path.join(out_dir, "rows*")):
        with open(path) as handle:
            rows += [json.loads(line) for line in handle]
    return rows


def _run_shape_in_subprocess(args: list[str], n: int, size: int, flush_ms: int, timeout: int = 300) -> str:
    """'ok', 'LOSS ...' or 'ERROR ...' of one run in a child capped at 14 GB of address space
    (a corrupted stream can ask for tens of GB)."""
    code = (
        "from apache_beam.runners.portability.fn_api_runner import worker_handlers\n"
        f"worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = {flush_ms}\n"
        "from tests.test_local_runner import run_shape\n"
        f"rows = run_shape({args!r}, {n}, {size})\n"
        "bad = [r for r in rows if not r[1]]\n"
        f"print('RESULT', 'ok' if len(rows) == {n} and not bad else f'LOSS rows={{len(rows)}} bad={{bad[:3]}}')\n"
    )

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (14 << 30, 14 << 30))

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=root, env=env, preexec_fn=cap
    )
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    if proc.returncode == 0 and result:
        return result[-1][len("RESULT ") :]
    return f"ERROR rc={proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"


def test_time_based_flush_discards_what_is_written_during_a_flush() -> None:
    """Deterministic: the periodic flusher snapshots the buffer, the writer appends while the
    flush callback is blocked (a full send queue), then the flusher clears the buffer."""
    sent: list[bytes] = []
    in_callback, resume = threading.Event(), threading.Event()

    def flush_callback(data: bytes) -> None:
        if data and threading.current_thread() is not threading.main_thread():
            in_callback.set()
            resume.wait(5)  # ByteLimitedQueue.put waiting for room
        sent.append(data)

    stream = data_plane.TimeBasedBufferingClosableOutputStream(
        flush_callback, flush_callback=flush_callback, time_flush_threshold_ms=10
    )
    stream.write(b"first element;")
    assert in_callback.wait(5)
    stream.write(b"second element;")  # DataOutputOperation.process: no lock
    resume.set()
    time.sleep(0.1)
    stream.close()
    assert b"".join(sent) == b"first element;"  # the second element is gone


@REPRO
@pytest.mark.parametrize(
    ("flush_ms", "n", "size", "runs"),
    [
        (10, 150, 1_000_000, 3),  # Beam's flusher every 10 ms: measured 4 bad runs in 4
        (10, 3000, 8_000, 3),  # small elements too: 3 MemoryErrors in 3
        (1000, 400, 1_000_000, 8),  # Beam's default 1 s: measured 2 bad runs in 6 (and 0 in 8)
    ],
)
def test_multi_threading_loses_elements(flush_ms: int, n: int, size: int, runs: int) -> None:
    """Arrays through a CoGroupByKey on the default multi_threading runner; stop at the first
    bad run (a lost or corrupted element, or MemoryError from a misaligned stream)."""
    outcomes = []
    for _ in range(runs):
        outcomes.append(_run_shape_in_subprocess(MULTI_THREADING, n=n, size=size, flush_ms=flush_ms))
        if outcomes[-1] != "ok":
            break
    assert any(o != "ok" for o in outcomes), outcomes


@pytest.fixture
def no_time_based_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)
    disable_time_based_flush()  # what every `gld` job does before it runs
    assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0


@pytest.mark.usefixtures("no_time_based_flush")
def test_pipeline_shape_keeps_every_element_without_time_based_flush() -> None:
    """The local default (multi_threading, one worker per core) keeps every element."""
    size, n = 400_000, 40
    for _ in range(12):
        rows = run_shape(local_runner_args([]), n, size)
        assert len(rows) == n and all(ok for _, ok, _, _ in rows), [r for r in rows if not r[1]]


def _small_job(pipeline: beam.Pipeline) -> None:
    _ = (
        pipeline
        | beam.Create([(i % 3, i) for i in range(30)])
        | beam.GroupByKey()
        | beam.MapTuple(lambda key, values: (key, sum(values)))
    )


@pytest.fixture
def time_flushed_streams(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the time-flushed data-plane streams created while a test runs (in this process:
    the in-process runner's data service and its embedded SDK harness both live here)."""
    created: list[int] = []
    cls = data_plane.TimeBasedBufferingClosableOutputStream
    original = cls.__init__

    def counting(self: object, *args: object, **kwargs: object) -> None:
        created.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", counting)
    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1000)  # Beam's default
    return created


def test_a_local_run_pipeline_has_the_time_based_flush_off(time_flushed_streams: list[int]) -> None:
    with beam.Pipeline(options=PipelineOptions(local_runner_args([]))) as pipeline:
        _small_job(pipeline)
    assert time_flushed_streams, "the control run (Beam's default) should use time-flushed streams"
    time_flushed_streams.clear()
    run_pipeline(_small_job, [], show_progress=False)
    assert time_flushed_streams == []


def test_the_fix_fails_loudly_when_beam_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    check_flush_internals()  # Beam as installed: nothing to say
    monkeypatch.delattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS")
    with pytest.raises(RuntimeError, match=f"apache_beam {beam.__version__} changed") as raised:
        run_pipeline(_small_job, [], show_progress=False)
    assert "DATA_BUFFER_TIME_LIMIT_MS is gone" in str(raised.value)


@pytest.mark.parametrize(
    ("args", "wanted", "shown"),
    [
        ([], True, True),
        ([], False, False),
        (["--runner=DataflowRunner", "--project=p", "--region=r"], True, False),
        (["--runner", "SparkRunner", "--environment_type", "LOOPBACK"], True, True),
        (["--runner=FlinkRunner", "--environment_type=DOCKER"], True, False),
    ],
)
def test_progress_line_only_where_the_dofns_run_here(args: list[str], wanted: bool, shown: bool) -> None:
    assert shows_progress(local_runner_args(args), wanted) is shown


def test_a_worker_process_prints_no_progress_line() -> None:
    # a remote worker imports the module afresh and never runs `run_pipeline`
    code = "from transforms.plumbing.progress import tick; tick('features', 'ok'); tick('features', 'ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "[gld] progress" not in done.stderr
