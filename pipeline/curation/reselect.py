"""`gld select`: selection again on a finished curation, from the files its first job wrote.

Reads `run.json` for the run's settings, replaces the selection settings (a preset's selection
part, then explicit flags, over the defaults: exactly what a fresh `gld curate` with those flags
would use), and runs the same `build_selection` job that `gld curate` runs second. Nothing is
fetched, extracted or matched.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline.curation.config import PRESETS, CurateConfig
from pipeline.curation.curate import build_selection, finish_run, merge_counters
from pipeline.curation.outputs import SELECTION_OUTPUTS, output_paths, previous_outputs
from pipeline.curation.run_folder import begin_run, locked, rerun_base
from pipeline.runner import Counters, run_pipeline, worker_cores
from schemas.vocabulary import AUDIT_KINDS, Stage
from transforms.select import SelectConfig

#: What the selection job reads (written by the first job of `gld curate`).
SELECTION_INPUTS = ("members", "failures", "pairs", "audit_candidates")


def _first_job_counters(counters: Counters) -> Counters:
    """The counters of the run without those its selection job made (made again now)."""
    kept = {stage: dict(values) for stage, values in counters.items() if stage != Stage.SELECT.value}
    if Stage.AUDIT.value in kept:
        kept[Stage.AUDIT.value] = {
            name: value for name, value in kept[Stage.AUDIT.value].items() if name not in AUDIT_KINDS
        }
    return kept


def run_reselection(
    output: str,
    preset: str | None,
    select: dict[str, Any],
    beam_args: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Re-select `output` with `preset`'s selection settings (the run's preset when None) and
    the `select` overrides (SelectConfig field -> value); returns the new run summary.

    Holds the folder's lock and marks it in progress like `gld curate`; the run it re-selects
    is kept in the marker, so a killed `gld select` can simply be run again."""
    with locked(output, "gld select", create=False) as holder:
        previous = rerun_base(output, "gld select")
        tables = output_paths(output)
        missing = [name for name in SELECTION_INPUTS if not FileSystems.exists(tables[name])]
        if missing:
            raise FileNotFoundError(
                f"{output} has no {', '.join(missing)}: its curation did not finish, or an older gld wrote it; "
                "run `gld curate` on it again (stored images, features and pairs are reused)"
            )
        config = CurateConfig.from_json(previous["config"])
        chosen = preset or config.preset
        if chosen not in PRESETS:
            raise ValueError(f"unknown preset {chosen!r}; choose from {sorted(PRESETS)}")
        settings = SelectConfig(**{**PRESETS[chosen].get("select", {}), **select})
        # the folder given, not the one recorded: a run folder may have been copied or moved
        config = dataclasses.replace(config, output=output, select=settings, progress=progress)
        finish = f"gld select --output {output} ... (the same flags)"
        begin_run(output, holder, finish, previous_outputs(output, SELECTION_OUTPUTS), base=previous)
        counters, wall = run_pipeline(lambda p: build_selection(p, config), beam_args, progress)
        merged = merge_counters(_first_job_counters(previous["counters"]), counters)
        seconds = {**previous["seconds"], "select_wall": round(wall, 3)}
        return finish_run(config, merged, seconds, worker_cores(beam_args))
