"""What every `gld` batch job shares: runner defaults, running a pipeline, reading its counters."""

from __future__ import annotations

import inspect
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker import data_plane

from transforms.plumbing import progress

Counters = dict[str, dict[str, int]]


def paths_under(root: str, names: dict[str, str]) -> dict[str, str]:
    """{key: root/name} for the files a job writes under its output folder."""
    return {key: FileSystems.join(root, name) for key, name in names.items()}


def local_runner_args(beam_args: list[str]) -> list[str]:
    """The in-process runner, named directly: Beam 2.77's `DirectRunner` first tries to download
    and start the Prism runner binary (a network call at every run, and another runner where it
    succeeds) before it falls back to this one. One worker thread per core unless
    `--direct_num_workers` says otherwise (SIFT, the descriptor matmul and RANSAC release the
    GIL, so threads use the cores)."""
    if any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        return beam_args
    workers = (
        [] if any(a.startswith("--direct_num_workers") for a in beam_args) else [f"--direct_num_workers={_cores()}"]
    )
    return ["--runner=FnApiRunner", "--direct_running_mode=multi_threading", *workers, *beam_args]


#: Runners whose DoFns run in this process, where the progress line reaches the user's terminal.
_IN_PROCESS_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


def shows_progress(runner_args: list[str], wanted: bool) -> bool:
    """Whether this process prints the progress line: only when `wanted` (no `--no-progress`)
    and the DoFns run here (an in-process runner, or a portable one with LOOPBACK workers). A
    remote worker never prints it: its process never runs `run_pipeline`, and the module's
    default is off."""
    options = PipelineOptions(runner_args).get_all_options(retain_unknown_options=True)
    runner = str(options.get("runner") or "")
    loopback = str(options.get("environment_type") or "").upper() == "LOOPBACK"
    return wanted and (runner.split(".")[-1] in _IN_PROCESS_RUNNERS or loopback)


def worker_cores(beam_args: list[str] | None) -> int:
    """The cores a job with these Beam options runs on: the in-process runner's worker
    threads (what `local_runner_args` gives), else the workers times the cores their machine
    type names (`n1-standard-8`: 8; 1 where it names none). The cost model prices busy
    seconds and wall seconds with it (`run.json` `cores`)."""
    runner_args = local_runner_args(list(beam_args or []))
    options = PipelineOptions(runner_args).get_all_options(retain_unknown_options=True)
    runner = str(options.get("runner") or "").split(".")[-1]
    if runner in _IN_PROCESS_RUNNERS:
        return int(options.get("direct_num_workers") or _cores())
    workers = int(options.get("max_num_workers") or options.get("num_workers") or 1)
    machine = str(options.get("machine_type") or "")
    size = machine.rsplit("-", 1)[-1]
    return workers * (int(size) if size.isdigit() else 1)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_flush_internals() -> None:
    """Raise RuntimeError, naming the Beam version, when the Beam internals that
    `disable_time_based_flush` relies on are gone: the module global the runner reads, and the
    data plane's choice of a time-flushed stream only for a limit above 0. Without them the fix
    would silently stop working and the flush race would be back."""
    limit = getattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", None)
    problems = []
    if not isinstance(limit, int):
        problems.append("fn_api_runner.worker_handlers.DATA_BUFFER_TIME_LIMIT_MS is gone")
    else:
        source = inspect.getsource(worker_handlers)
        if source.count("DATA_BUFFER_TIME_LIMIT_MS") < 3:
            problems.append("the runner no longer passes DATA_BUFFER_TIME_LIMIT_MS to its data plane")
    if not hasattr(data_plane, "TimeBasedBufferingClosableOutputStream"):
        problems.append("worker.data_plane.TimeBasedBufferingClosableOutputStream is gone")
    elif "data_buffer_time_limit_ms > 0" not in inspect.getsource(data_plane):
        problems.append("the data plane no longer skips time-based flushing for a limit of 0")
    if problems:
        raise RuntimeError(
            f"apache_beam {beam.__version__} changed the internals gld's local-runner fix relies on "
            f"({'; '.join(problems)}); see pipeline/runner.py disable_time_based_flush, written for Beam 2.77"
        )


def disable_time_based_flush() -> None:
    """Turn off the once-a-second flush of the in-process runner's data streams (Beam 2.77).

    The FnApiRunner gives its gRPC data plane a timer thread that flushes each output stream
    (`data_plane.TimeBasedBufferingClosableOutputStream.flush`: send a copy, then clear) while
    the bundle's thread keeps writing to it without a lock. Whatever is written between the
    copy and the clear is lost: whole elements (a feature set missing from its block), or half
    of one, which leaves a stream that decodes as garbage (a None where a tuple was, or a length
    read from payload bytes that allocates gigabytes). Without the timer, streams flush at
    element boundaries (by size) and on close only. `tests/test_local_runner.py` reproduces the
    loss with the timer (GLD_REPRO=1) and checks the pipeline's join shape without it. The value
    is read when a runner starts its data service and its embedded SDK harness;
    `check_flush_internals` fails loudly first if Beam changed them."""
    check_flush_internals()
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def collect_counters(result: beam.runners.runner.PipelineResult) -> Counters:
    """Beam counters as {namespace (stage): {name: value}}, summed over steps."""
    counters: Counters = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        stage = counters.setdefault(counter.key.metric.namespace, {})
        stage[counter.key.metric.name] = stage.get(counter.key.metric.name, 0) + int(value or 0)
    return counters


def run_pipeline(
    build: Callable[[beam.Pipeline], object], beam_args: list[str] | None, show_progress: bool
) -> tuple[Counters, float]:
    """Build with `build(pipeline)`, run to completion; returns (counters, wall seconds)."""
    runner_args = local_runner_args(list(beam_args or []))
    progress.set_enabled(shows_progress(runner_args, show_progress))
    disable_time_based_flush()
    options = PipelineOptions(runner_args, save_main_session=False)
    started = time.time()
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    return collect_counters(result), time.time() - started


def busy_seconds(counters: Counters) -> dict[str, float]:
    """`<stage>/busy_ms` counters in seconds (summed over workers and fetch threads)."""
    return {stage: round(c["busy_ms"] / 1000, 3) for stage, c in sorted(counters.items()) if "busy_ms" in c}


def versions() -> dict[str, str]:
    import cv2
    import numpy
    import pyarrow

    return {
        "python": platform.python_version(),
        "apache_beam": beam.__version__,
        "opencv": cv2.__version__,
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
    }


def write_json(path: str, value: Any) -> None:
    with FileSystems.create(path) as handle:
        handle.write((json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8"))
