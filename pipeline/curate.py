"""The curation DAG: manifest -> fetch -> decode -> features -> pairs -> verify -> select -> outputs.

`build_curation` only wires stages (tests assert on the PCollections it returns);
`run_curation` runs it and writes `run.json` with the accounting that proves every input row
ended in exactly one place.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config import CurateConfig
from schemas.records import ImageDecision
from schemas.tables import (
    DECISIONS_SCHEMA,
    FEATURES_SCHEMA,
    IMAGES_SCHEMA,
    PAIRS_SCHEMA,
    decision_to_row,
    features_to_row,
    image_to_row,
    pair_to_row,
)
from transforms import progress
from transforms.decode import DecodeImages
from transforms.features import ExtractFeatures
from transforms.fetch import FetchImages
from transforms.manifest import ManifestConfig, ReadManifest
from transforms.pairs import GeneratePairs, members_by_class
from transforms.select import SelectClean
from transforms.store import ParquetSpec, WriteParquetParts, WriteSortedParquet, WriteTrainClean, prefix_length
from transforms.verify import VerifyPairs

# Bytes per manifest row used to guess the row count from the file size (GLDv2: ~110).
_BYTES_PER_ROW_GUESS = 60


#: Files and folders a run writes under `--output`, by the key used in `run.json`.
OUTPUT_NAMES = {
    "train_clean": "train_clean.csv",
    "decisions": "decisions.parquet",
    "pairs": "pairs.parquet",
    "images": "images",
    "features": "features",
    "run_json": "run.json",
}


def output_paths(root: str) -> dict[str, str]:
    return {key: FileSystems.join(root, name) for key, name in OUTPUT_NAMES.items()}


def estimated_rows(path: str) -> int:
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    return max(1, size // _BYTES_PER_ROW_GUESS)


def build_curation(pipeline: beam.Pipeline, config: CurateConfig) -> dict[str, beam.PCollection]:
    """Wire the whole curation DAG into `pipeline`; returns the named PCollections."""
    out = output_paths(config.output)
    rows, manifest_failures = pipeline | "ReadManifest" >> ReadManifest(ManifestConfig(config.train_csv))
    fetched, fetch_failures = rows | "FetchImages" >> FetchImages(config.fetch)
    decoded, decode_failures = fetched | "DecodeImages" >> DecodeImages(config.decode)
    features, feature_failures = decoded | "ExtractFeatures" >> ExtractFeatures(config.features)
    pairs_by_block, needs = {"features": features, "images": decoded} | "GeneratePairs" >> GeneratePairs(config.pairs)
    pairs = {"features": features, "pairs": pairs_by_block, "needs": needs} | "VerifyPairs" >> VerifyPairs(
        config.verify
    )
    members = features | "Members" >> beam.Map(members_by_class)
    selected = {"members": members, "pairs": pairs} | "SelectClean" >> SelectClean(config.select)
    failures = (manifest_failures, fetch_failures, decode_failures, feature_failures) | "AllFailures" >> beam.Flatten()
    decisions = (
        failures | "FailureDecisions" >> beam.Map(ImageDecision.from_failure),
        selected,
    ) | "AllDecisions" >> beam.Flatten()

    rows_guess = estimated_rows(config.train_csv)
    table_prefix = prefix_length(rows_guess, rows_per_part=50_000)
    store_prefix = prefix_length(rows_guess, rows_per_part=1_000)
    decisions | "WriteDecisions" >> WriteSortedParquet(
        out["decisions"], ParquetSpec(DECISIONS_SCHEMA, decision_to_row, lambda r: (r["id"], r["line"]), table_prefix)
    )
    pairs | "WritePairs" >> WriteSortedParquet(
        out["pairs"], ParquetSpec(PAIRS_SCHEMA, pair_to_row, lambda r: (r["id_a"], r["id_b"]), table_prefix)
    )
    decisions | "WriteTrainClean" >> WriteTrainClean(out["train_clean"])
    decoded | "StoreImages" >> WriteParquetParts(
        out["images"], ParquetSpec(IMAGES_SCHEMA, image_to_row, lambda r: (r["id"],), store_prefix)
    )
    features | "StoreFeatures" >> WriteParquetParts(
        out["features"], ParquetSpec(FEATURES_SCHEMA, features_to_row, lambda r: (r["id"],), store_prefix)
    )
    return {"rows": rows, "features": features, "pairs": pairs, "decisions": decisions, "failures": failures}


def local_runner_args(beam_args: list[str]) -> list[str]:
    """Beam's default local runner first downloads a binary; use the in-process one instead."""
    if any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        return beam_args
    return [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_threading",
        f"--direct_num_workers={os.cpu_count() or 1}",
        *beam_args,
    ]


def _metrics(result: beam.runners.runner.PipelineResult) -> dict[str, dict[str, int]]:
    counters: dict[str, dict[str, int]] = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        stage = counters.setdefault(counter.key.metric.namespace, {})
        stage[counter.key.metric.name] = stage.get(counter.key.metric.name, 0) + int(value or 0)
    return counters


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


def _versions() -> dict[str, str]:
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


def run_curation(config: CurateConfig, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run the DAG, then write and return the run summary (`run.json`)."""
    progress.set_enabled(config.progress)
    options = PipelineOptions(local_runner_args(list(beam_args or [])), save_main_session=False)
    started = time.time()
    pipeline = beam.Pipeline(options=options)
    build_curation(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    wall = time.time() - started
    counters = _metrics(result)
    out = output_paths(config.output)
    summary = summarize(out["decisions"])
    input_rows = counters.get("manifest", {}).get("input_rows", 0)
    summary["input_rows"] = input_rows
    summary["accounting_ok"] = summary["rows"] == input_rows and summary["distinct_ids"] == summary["rows"]
    run = {
        "config": config.to_json(),
        "counts": summary,
        "seconds": {
            "wall": round(wall, 3),
            **{stage: round(c["busy_ms"] / 1000, 3) for stage, c in sorted(counters.items()) if "busy_ms" in c},
        },
        "counters": {stage: dict(sorted(c.items())) for stage, c in sorted(counters.items())},
        "versions": _versions(),
        "outputs": {key: path for key, path in out.items() if key != "run_json"},
    }
    with FileSystems.create(out["run_json"]) as handle:
        handle.write((json.dumps(run, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return run
