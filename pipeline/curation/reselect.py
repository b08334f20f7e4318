"""`gld select`: selection again on a finished curation, from the files its first job wrote.

Reads `run.json` for the run's settings, replaces the selection settings (a preset's selection
part, then explicit flags, over the defaults: exactly what a fresh `gld curate` with those flags
would use), and runs the same `build_selection` job that `gld curate` runs second. Nothing is
fetched, extracted or matched.

After adaptive verification a selection is exact when the run's skip rule covers the new one (a
lower or equal threshold, no stricter degree or isolated-component rule). Otherwise the skipped
pairs are checked against the new rule on the verified graph first, and when some could change
the selection it stops (`SkippedPairsNeeded`) rather than guess: `gld curate` with the new
settings matches exactly those pairs, reusing everything stored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.curation.config import PRESETS, CurateConfig
from pipeline.curation.curate import build_selection, finish_run, merge_counters, skip_rule
from pipeline.curation.outputs import SELECTION_OUTPUTS, output_paths, previous_outputs
from pipeline.curation.preflight import check_reviews
from pipeline.curation.run_folder import begin_run, locked, rerun_base
from pipeline.runner import Counters, run_pipeline, worker_cores
from schemas.tables import pair_from_row
from schemas.vocabulary import AUDIT_KINDS, Stage
from transforms.matching.rounds import UNSAFE_SKIPS, FindUnsafeSkips, SkipRule
from transforms.plumbing.store import ReadTable
from transforms.selection.select import SelectConfig

#: What the selection job reads (written by the first job of `gld curate`).
SELECTION_INPUTS = ("members", "failures", "pairs", "audit_candidates")


class SkippedPairsNeeded(ValueError):
    """A selection that pairs skipped by the run's adaptive verification could change: `count`
    of them must be matched first, by `gld curate` with `config` (which reuses every stored
    image, feature set and verified pair, and matches only the pairs it needs)."""

    def __init__(self, count: int, config: CurateConfig) -> None:
        super().__init__(f"{count} pairs that adaptive verification skipped could change this selection")
        self.count = count
        self.config = config


def _unsafe_skips(config: CurateConfig, beam_args: list[str] | None, progress: bool) -> int:
    """How many of the run's skipped pairs `config`'s selection would not skip (a Beam job over
    pairs.parquet: no feature is read)."""
    rule = SkipRule.of(config.select)
    path = output_paths(config.output)["pairs"]
    counters, _ = run_pipeline(
        lambda p: p | "ReadPairs" >> ReadTable(path) | "ToPairs" >> beam.Map(pair_from_row) | FindUnsafeSkips(rule),
        beam_args,
        progress,
    )
    return counters.get(Stage.SELECT.value, {}).get(UNSAFE_SKIPS, 0)


def _first_job_counters(counters: Counters) -> Counters:
    """The counters of the run without those its selection job made (made again now): the
    selection's, the applied reviews' and the audit's findings."""
    again = (Stage.SELECT.value, Stage.REVIEW.value)
    kept = {stage: dict(values) for stage, values in counters.items() if stage not in again}
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
        run_rule = skip_rule(config)
        config = dataclasses.replace(config, output=output, select=settings, progress=progress)
        check_reviews(config)
        # exact without a look when the run skipped nothing this selection could need (a lower
        # threshold, the same rule); else count the skipped pairs it would not skip
        if run_rule is not None and not run_rule.covers(SkipRule.of(settings)):
            unsafe = _unsafe_skips(config, beam_args, progress)
            if unsafe:
                raise SkippedPairsNeeded(unsafe, config)
        finish = f"gld select --output {output} ... (the same flags)"
        begin_run(output, holder, finish, previous_outputs(output, SELECTION_OUTPUTS), base=previous)
        counters, wall = run_pipeline(lambda p: build_selection(p, config), beam_args, progress)
        merged = merge_counters(_first_job_counters(previous["counters"]), counters)
        seconds = {**previous["seconds"], "select_wall": round(wall, 3)}
        return finish_run(config, merged, seconds, worker_cores(beam_args))
