"""The curation DAG: manifest -> fetch -> decode -> features -> pairs -> verify -> select -> outputs.

Two pipelines that hand off through files: `build_curation` (the heavy half: ingest, features,
pairs, verification) writes `pairs`, `members`, `failures` and `audit_candidates`;
`build_selection` reads them and writes the decisions and every output made from them. `gld
curate` runs both, `gld select` the second alone, so a re-selection is byte-identical to a fresh
run with the same settings by construction. `run_curation` then writes `run.json` with the
accounting that proves every input row ended in exactly one place.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.curation.config import CurateConfig
from pipeline.curation.ingest import build_ingest, ingest_stats
from pipeline.curation.outputs import finish_command, output_paths, previous_outputs
from pipeline.curation.preflight import Preflight, check_paths, preflight
from pipeline.curation.run_folder import begin_run, commit_run, locked
from pipeline.report.page import build_report
from pipeline.runner import (
    Counters,
    busy_seconds,
    run_pipeline,
    versions,
    worker_cores,
    write_json,
)
from schemas.records import ImageDecision
from schemas.tables import (
    AUDIT_SCHEMA,
    DECISIONS_SCHEMA,
    MEMBERS_SCHEMA,
    PAIRS_SCHEMA,
    VERIFIED_SCHEMA,
    decision_from_row,
    finding_from_row,
    member_to_row,
    pair_from_row,
    record_to_row,
)
from schemas.vocabulary import Status
from transforms.features.feature_store import ReuseStoredFeatures, features_folder
from transforms.features.stage import ExtractFeatures
from transforms.ingest.image_store import ReadStore, settings_key
from transforms.ingest.manifest import ManifestConfig, ReadManifest
from transforms.matching.pairs import GeneratePairs
from transforms.matching.rounds import SkipRule
from transforms.matching.verify import VerifyPairs
from transforms.plumbing.store import ParquetSpec, ReadTable, WriteSortedParquet, WriteTrainClean, read_table
from transforms.selection.apply_reviews import ApplyReviews
from transforms.selection.audit import AuditLabels, FindAuditCandidates
from transforms.selection.c2x import ExportRejectedSameClass
from transforms.selection.select import SelectClean

VERIFIED_COLUMNS = VERIFIED_SCHEMA.names


def store_folders(config: CurateConfig) -> dict[str, str]:
    """The features store and the verified-pair store of these settings (see `feature_store`)."""
    features = features_folder(config.output, config.decode, config.features)
    settings = {"features": features.rsplit("/", 1)[-1], "verify": dataclasses.asdict(config.verify)}
    return {"features": features, "verified": FileSystems.join(config.output, "verified", settings_key(settings))}


def _sorted_writer(path: str, spec_of: tuple) -> WriteSortedParquet:
    schema, to_row, key = spec_of
    return WriteSortedParquet(path, ParquetSpec(schema, to_row, key))


_DECISIONS = (DECISIONS_SCHEMA, record_to_row, lambda r: (r["id"], r["line"]))
_PAIRS = (PAIRS_SCHEMA, record_to_row, lambda r: (r["id_a"], r["id_b"]))
_AUDIT = (AUDIT_SCHEMA, record_to_row, lambda r: (r["id_a"], r["id_b"], r["kind"], r["landmark_a"]))
_MEMBERS = (MEMBERS_SCHEMA, member_to_row, lambda r: (r["id"], r["line"]))


def skip_rule(config: CurateConfig) -> SkipRule | None:
    """What adaptive verification must preserve (the run's selection rule); None: exhaustive."""
    return SkipRule.of(config.select) if config.pairs.verification == "adaptive" else None


def build_curation(pipeline: beam.Pipeline, config: CurateConfig, checked: Preflight) -> dict[str, beam.PCollection]:
    """Wire the heavy half of the curation into `pipeline`: ingest, features, candidate pairs and
    their verification. It writes what selection reads (`pairs`, `members`, `failures`,
    `audit_candidates`); `build_selection` does the rest, in curate and in `gld select` alike.
    `checked`: what `preflight` found (nothing is read while the graph is built).

    Image bytes and local features go to their stores and travel as references only."""
    out = output_paths(config.output)
    stores = store_folders(config)
    manifest = ManifestConfig(config.train_csv, checked.columns)
    rows, manifest_failures = pipeline | "ReadManifest" >> ReadManifest(manifest)
    images, ingest_failures = build_ingest(rows, config, checked.listing)
    reused, to_extract = images | "ReuseFeatures" >> ReuseStoredFeatures(stores["features"])
    # a feature set (4000 SIFT: ~1 MB) is ~8 images' JPEGs; verified pairs: a block's worth a part
    extract = ExtractFeatures(config.features, store=stores["features"], parts=config.store.scaled(1 / 8))
    extracted, feature_failures = to_extract | "ExtractFeatures" >> extract
    features = (reused, extracted) | "AllFeatures" >> beam.Flatten()
    stored_pairs = pipeline | "ReadVerified" >> ReadStore(stores["verified"], VERIFIED_COLUMNS, "verify")
    plans = {
        "features": features,
        "images": images,
        "stored": stored_pairs,
    } | "GeneratePairs" >> GeneratePairs(config.pairs)
    pairs = plans | "VerifyPairs" >> VerifyPairs(
        config.verify,
        rule=skip_rule(config),
        store=stores["verified"],
        parts=config.store.for_results(2),
        accelerator=config.features.gpu_accelerator,
    )
    failures = (manifest_failures, ingest_failures, feature_failures) | "AllFailures" >> beam.Flatten()

    pairs | "WritePairs" >> _sorted_writer(out["pairs"], _PAIRS)
    features | "WriteMembers" >> _sorted_writer(out["members"], _MEMBERS)
    (
        failures
        | "FailureDecisions" >> beam.Map(ImageDecision.from_failure)
        | "WriteFailures" >> _sorted_writer(out["failures"], _DECISIONS)
    )
    if config.audit.enabled:
        candidates = features | "FindAuditCandidates" >> FindAuditCandidates(config.audit, config.verify)
    else:
        candidates = pipeline | "NoAudit" >> beam.Create([])
    candidates | "WriteAuditCandidates" >> _sorted_writer(out["audit_candidates"], _AUDIT)
    return {"rows": rows, "features": features, "pairs": pairs, "failures": failures}


def _read(pipeline: beam.Pipeline, label: str, path: str, from_row: Callable) -> beam.PCollection:
    return pipeline | f"Read{label}" >> ReadTable(path) | f"To{label}" >> beam.Map(from_row)


def build_selection(pipeline: beam.Pipeline, config: CurateConfig) -> dict[str, beam.PCollection]:
    """Wire selection and every output made from it, reading what `build_curation` wrote:
    decisions, train_clean.csv, the c2x export and the audit. No feature is read and no pair
    is matched, so a new threshold or policy costs seconds (`gld select`)."""
    out = output_paths(config.output)
    members = _read(pipeline, "Members", out["members"], lambda r: (r["landmark_id"], (r["id"], r["line"])))
    pairs = _read(pipeline, "Pairs", out["pairs"], pair_from_row)
    failed = _read(pipeline, "Failures", out["failures"], decision_from_row)
    selected = {"members": members, "pairs": pairs} | "SelectClean" >> SelectClean(config.select)
    decisions = (failed, selected) | "AllDecisions" >> beam.Flatten()
    if config.select.reviews:
        decisions = decisions | "ApplyReviews" >> ApplyReviews(config.select.reviews)

    decisions | "WriteDecisions" >> _sorted_writer(out["decisions"], _DECISIONS)
    decisions | "WriteTrainClean" >> WriteTrainClean(out["train_clean"])
    decisions | "ExportC2x" >> ExportRejectedSameClass(out["c2x_csv"], out["c2x_scores"])
    candidates = _read(pipeline, "AuditCandidates", out["audit_candidates"], finding_from_row)
    findings = {"candidates": candidates, "decisions": decisions} | "AuditLabels" >> AuditLabels(
        config.audit, config.select.min_inliers
    )
    findings | "WriteAudit" >> _sorted_writer(out["audit"], _AUDIT)
    return {"decisions": decisions}


def summarize(decisions_path: str) -> dict[str, Any]:
    """Counts per status and per reason, and the accounting checks, from decisions.parquet."""
    table = read_table(decisions_path, columns=["id", "status", "reason", "stage"])
    ids = table.column("id").to_pylist()
    statuses = table.column("status").to_pylist()
    reasons = table.column("reason").to_pylist()
    stages = table.column("stage").to_pylist()
    by_reason: Counter[str] = Counter()
    for status, reason, stage in zip(statuses, reasons, stages, strict=True):
        by_reason[f"{status}/{stage}/{reason}" if status == Status.FAILED.value else f"{status}/{reason}"] += 1
    return {
        "rows": len(ids),
        "distinct_ids": len(set(ids)),
        "by_status": dict(sorted(Counter(statuses).items())),
        "by_reason": dict(sorted(by_reason.items())),
    }


def _shuffle(counters: Counters, images: int) -> dict[str, Any]:
    shuffled = counters.get("shuffle", {})
    total = shuffled.get("bytes", 0)
    return {
        "bytes": total,
        "elements": shuffled.get("elements", 0),
        "bytes_per_image": round(total / images, 1) if images else 0.0,
    }


def merge_counters(first: Counters, second: Counters) -> Counters:
    """Counters of two jobs added up, name by name."""
    merged = {stage: dict(values) for stage, values in first.items()}
    for stage, values in second.items():
        for name, value in values.items():
            merged.setdefault(stage, {})[name] = merged.get(stage, {}).get(name, 0) + value
    return merged


def finish_run(config: CurateConfig, counters: Counters, seconds: dict[str, float], cores: int) -> dict[str, Any]:
    """Write `ingest_stats.json`, `report.html`, then `run.json` last, the commit marker (the
    accounting that proves every input row ended in exactly one place, counters, seconds, the
    `cores` the jobs ran on, shuffle volume); returns the run summary."""
    out = output_paths(config.output)
    summary = summarize(out["decisions"])
    input_rows = counters.get("manifest", {}).get("input_rows", 0)
    summary["input_rows"] = input_rows
    summary["accounting_ok"] = summary["rows"] == input_rows and summary["distinct_ids"] == summary["rows"]
    stats = ingest_stats(counters, seconds["wall"], out["duplicates"])
    write_json(out["ingest_stats"], stats)
    run = {
        "config": config.to_json(),
        "counts": summary,
        "ingest": stats,
        "seconds": {**seconds, **busy_seconds(counters)},
        "cores": cores,
        "shuffle": _shuffle(counters, input_rows),
        "counters": {stage: dict(sorted(c.items())) for stage, c in sorted(counters.items())},
        "versions": versions(),
        "outputs": {key: path for key, path in out.items() if key != "run_json"} | store_folders(config),
    }
    build_report(config.output, run)
    commit_run(config.output, run)
    return run


def run_curation(config: CurateConfig, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run the heavy half, then selection, then write `ingest_stats.json` and `run.json`, under
    the folder's lock and in-progress marker (`run_folder`): a killed run leaves a folder that
    readers refuse, and running it again gives what an uninterrupted run gives."""
    check_paths(config)
    with locked(config.output, "gld curate") as holder:
        begin_run(config.output, holder, finish_command(config), previous_outputs(config.output))
        checked = preflight(config)
        counters, heavy = run_pipeline(lambda p: build_curation(p, config, checked), beam_args, config.progress)
        selection, select_wall = run_pipeline(lambda p: build_selection(p, config), beam_args, config.progress)
        seconds = {"wall": round(heavy + select_wall, 3), "select_wall": round(select_wall, 3)}
        return finish_run(config, merge_counters(counters, selection), seconds, worker_cores(beam_args))
