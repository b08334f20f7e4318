"""`gld curate --dry-run`: build the job with the given options and describe it, offline.

The graph is built exactly as a real run builds it (any runner, DataflowRunner included) but
from `Preflight.offline` instead of `preflight`, so no input is opened, no output is written
and no cloud service is called (Beam's own `--dry_run` skips its bucket checks), then
summarised per stage with the resource hints each stage carries, so that a user sees where a
GPU would be attached before paying.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions
from apache_beam.transforms.resources import AcceleratorHint, CpuCountHint, MinRamHint

from pipeline.curation.config import CurateConfig
from pipeline.curation.curate import build_curation, build_selection, output_paths
from pipeline.curation.preflight import Preflight
from pipeline.runner import local_runner_args

_LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "PrismRunner")
_HINT_NAMES = {AcceleratorHint.urn: "accelerator", MinRamHint.urn: "min_ram", CpuCountHint.urn: "cpu_count"}


def _readable(hints: dict[str, bytes]) -> dict[str, str]:
    return {_HINT_NAMES.get(urn, urn): value.decode("ascii", errors="replace") for urn, value in sorted(hints.items())}


def _subtree_hints(applied: beam.pipeline.AppliedPTransform) -> dict[str, bytes]:
    """Hints of a step and of everything inside it (a hint may sit on one inner transform)."""
    hints = dict(applied.resource_hints)
    for part in applied.parts:
        hints.update(_subtree_hints(part))
    return hints


def job_wide_accelerator(beam_args: list[str]) -> str:
    """The first Beam option that would put an accelerator on every worker, or ""."""
    for arg in beam_args:
        if "worker_accelerator" in arg or ("resource_hint" in arg and "accelerator" in arg):
            return arg
    return ""


def job_paths(config: CurateConfig) -> dict[str, str]:
    """Every path the job reads or writes, by role."""
    paths = {"train_csv": config.train_csv, **output_paths(config.output)}
    for name in ("images_dir", "tar_dir"):
        if getattr(config.fetch, name):
            paths[name] = getattr(config.fetch, name)
    if config.select.reviews:  # read by the selection job's workers
        paths["reviews"] = config.select.reviews
    return paths


def local_paths(paths: dict[str, str]) -> list[str]:
    """Roles whose path is on this machine's disk (a remote worker could not reach it)."""
    return sorted(role for role, path in paths.items() if "://" not in path)


def planned_pipeline(config: CurateConfig, beam_args: list[str]) -> beam.Pipeline:
    """The job's pipeline, built offline (ValueError on invalid options)."""
    options = PipelineOptions([*local_runner_args(list(beam_args)), "--dry_run=True"], save_main_session=False)
    pipeline = beam.Pipeline(options=options)
    planned = dataclasses.replace(config, progress=False)
    # a run launches these as two jobs, one after the other; a plan shows both
    build_curation(pipeline, planned, Preflight.offline(planned))
    build_selection(pipeline, planned)
    return pipeline


def plan_curation(config: CurateConfig, beam_args: list[str]) -> dict[str, Any]:
    """The job `gld curate` would launch with these options: {"runner", "steps": [{"name",
    "resource_hints"}], "job_wide_accelerator", "paths", "local_paths", "project", "region"}.
    `local_paths` lists local paths only when the runner runs elsewhere (not DirectRunner)."""
    pipeline = planned_pipeline(config, beam_args)
    root = pipeline.transforms_stack[0]
    steps = [{"name": part.full_label, "resource_hints": _readable(_subtree_hints(part))} for part in root.parts]
    cloud = pipeline.options.view_as(GoogleCloudOptions)
    runner = pipeline.options.view_as(StandardOptions).runner or type(pipeline.runner).__name__
    paths = job_paths(config)
    return {
        "runner": runner,
        "steps": steps,
        "job_wide_accelerator": job_wide_accelerator(beam_args),
        "paths": paths,
        "local_paths": [] if runner in _LOCAL_RUNNERS else local_paths(paths),
        "project": cloud.project,
        "region": cloud.region,
    }
