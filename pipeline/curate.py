"""The curation DAG: manifest -> fetch -> decode -> features -> pairs -> verify -> select -> outputs.

`build_curation` only wires stages (tests assert on the PCollections it returns);
`run_curation` runs it and writes `run.json` with the accounting that proves every input row
ended in exactly one place.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.config import CurateConfig
from pipeline.ingest import INGEST_OUTPUTS, build_ingest, ingest_stats
from pipeline.report import build_report
from pipeline.runner import busy_seconds, estimated_rows, paths_under, run_pipeline, versions, write_json
from schemas.gldv2_csv import TRAIN_COLUMNS
from schemas.records import ImageDecision
from schemas.tables import (
    AUDIT_SCHEMA,
    DECISIONS_SCHEMA,
    FEATURES_SCHEMA,
    PAIRS_SCHEMA,
    decision_to_row,
    features_to_row,
    finding_to_row,
    pair_to_row,
)
from transforms.audit import AuditLabels
from transforms.c2x import ExportRejectedSameClass
from transforms.features import ExtractFeatures
from transforms.manifest import ManifestConfig, ReadManifest
from transforms.pairs import GeneratePairs, members_by_class
from transforms.select import SelectClean
from transforms.store import ParquetSpec, WriteParquetParts, WriteSortedParquet, WriteTrainClean, prefix_length
from transforms.verify import VerifyPairs

#: Files and folders a run writes under `--output`, by the key used in `run.json`.
OUTPUT_NAMES = {
    "train_clean": "train_clean.csv",
    "decisions": "decisions.parquet",
    "pairs": "pairs.parquet",
    "features": "features",
    "run_json": "run.json",
    **INGEST_OUTPUTS,
    "c2x_csv": "c2x_rejected.csv",
    "c2x_scores": "c2x_scores.parquet",
    "audit": "audit.parquet",
    "report": "report.html",
}


def output_paths(root: str) -> dict[str, str]:
    return paths_under(root, OUTPUT_NAMES)


def build_curation(pipeline: beam.Pipeline, config: CurateConfig) -> dict[str, beam.PCollection]:
    """Wire the whole curation DAG into `pipeline`; returns the named PCollections."""
    out = output_paths(config.output)
    columns = TRAIN_COLUMNS if config.plan_only else None
    rows, manifest_failures = pipeline | "ReadManifest" >> ReadManifest(ManifestConfig(config.train_csv, columns))
    decoded, ingest_failures = build_ingest(pipeline, rows, config)
    extract = ExtractFeatures(config.features, check_model=not config.plan_only)
    features, feature_failures = decoded | "ExtractFeatures" >> extract
    pairs_by_block, needs = {"features": features, "images": decoded} | "GeneratePairs" >> GeneratePairs(config.pairs)
    pairs = {"features": features, "pairs": pairs_by_block, "needs": needs} | "VerifyPairs" >> VerifyPairs(
        config.verify
    )
    members = features | "Members" >> beam.Map(members_by_class)
    selected = {"members": members, "pairs": pairs} | "SelectClean" >> SelectClean(config.select)
    failures = (manifest_failures, ingest_failures, feature_failures) | "AllFailures" >> beam.Flatten()
    decisions = (
        failures | "FailureDecisions" >> beam.Map(ImageDecision.from_failure),
        selected,
    ) | "AllDecisions" >> beam.Flatten()

    rows_guess = estimated_rows(config.train_csv, config.plan_only)
    table_prefix = prefix_length(rows_guess, rows_per_part=50_000)
    store_prefix = prefix_length(rows_guess, rows_per_part=1_000)
    decisions | "WriteDecisions" >> WriteSortedParquet(
        out["decisions"], ParquetSpec(DECISIONS_SCHEMA, decision_to_row, lambda r: (r["id"], r["line"]), table_prefix)
    )
    pairs | "WritePairs" >> WriteSortedParquet(
        out["pairs"], ParquetSpec(PAIRS_SCHEMA, pair_to_row, lambda r: (r["id_a"], r["id_b"]), table_prefix)
    )
    decisions | "WriteTrainClean" >> WriteTrainClean(out["train_clean"])
    decisions | "ExportC2x" >> ExportRejectedSameClass(out["c2x_csv"], out["c2x_scores"], table_prefix)
    if config.audit.enabled:
        findings = {"decoded": decoded, "features": features, "decisions": decisions} | "AuditLabels" >> AuditLabels(
            config.audit, config.verify, config.select.min_inliers
        )
    else:
        findings = pipeline | "NoAudit" >> beam.Create([])
    findings | "WriteAudit" >> WriteSortedParquet(
        out["audit"],
        ParquetSpec(AUDIT_SCHEMA, finding_to_row, lambda r: (r["id_a"], r["id_b"], r["kind"], r["landmark_a"]), 0),
    )
    features | "StoreFeatures" >> WriteParquetParts(
        out["features"], ParquetSpec(FEATURES_SCHEMA, features_to_row, lambda r: (r["id"],), store_prefix)
    )
    return {"rows": rows, "features": features, "pairs": pairs, "decisions": decisions, "failures": failures}


def summarize(decisions_path: str) -> dict[str, Any]:
    """Counts per status and per reason, and the accounting checks, from decisions.parquet."""
    with FileSystems.open(decisions_path) as handle:
        table = pq.read_table(handle, columns=["id", "status", "reason", "stage"])
    ids = table.column("id").to_pylist()
    statuses = table.column("status").to_pylist()
    reasons = table.column("reason").to_pylist()
    stages = table.column("stage").to_pylist()
    by_reason: Counter[str] = Counter()
    for status, reason, stage in zip(statuses, reasons, stages, strict=True):
        by_reason[f"{status}/{stage}/{reason}" if status == "failed" else f"{status}/{reason}"] += 1
    return {
        "rows": len(ids),
        "distinct_ids": len(set(ids)),
        "by_status": dict(sorted(Counter(statuses).items())),
        "by_reason": dict(sorted(by_reason.items())),
    }


def run_curation(config: CurateConfig, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run the DAG, then write and return the run summary (`run.json`) and `ingest_stats.json`."""
    counters, wall = run_pipeline(lambda p: build_curation(p, config), beam_args, config.progress)
    out = output_paths(config.output)
    summary = summarize(out["decisions"])
    input_rows = counters.get("manifest", {}).get("input_rows", 0)
    summary["input_rows"] = input_rows
    summary["accounting_ok"] = summary["rows"] == input_rows and summary["distinct_ids"] == summary["rows"]
    stats = ingest_stats(counters, wall, out["duplicates"])
    write_json(out["ingest_stats"], stats)
    run = {
        "config": config.to_json(),
        "counts": summary,
        "ingest": stats,
        "seconds": {"wall": round(wall, 3), **busy_seconds(counters)},
        "counters": {stage: dict(sorted(c.items())) for stage, c in sorted(counters.items())},
        "versions": versions(),
        "outputs": {key: path for key, path in out.items() if key != "run_json"},
    }
    write_json(out["run_json"], run)
    build_report(config.output)
    return run
