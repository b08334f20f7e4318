"""`gld ingest` and the ingest part of `gld curate`: manifest rows -> the image store, the
exact-duplicate table, per-shard reports and an img2dataset-like stats summary."""

from __future__ import annotations

import dataclasses
from typing import Any

import apache_beam as beam

from pipeline.curation.config import CurateConfig
from pipeline.curation.outputs import INGEST_OUTPUTS, finish_command, previous_outputs
from pipeline.curation.preflight import check_paths, ingest_config, preflight
from pipeline.curation.run_folder import begin_run, locked
from pipeline.runner import (
    Counters,
    busy_seconds,
    paths_under,
    run_pipeline,
    versions,
    write_json,
)
from schemas.tables import DUPLICATES_SCHEMA
from transforms.ingest.manifest import ManifestConfig, ReadManifest
from transforms.ingest.stage import Ingest, StoreListing
from transforms.plumbing.metering import meter
from transforms.plumbing.store import ParquetSpec, WriteSortedParquet, read_table


def ingest_paths(root: str) -> dict[str, str]:
    return paths_under(root, INGEST_OUTPUTS)


def _write_shard_reports(reports: list, path: str) -> None:
    write_json(path, [dataclasses.asdict(report) for report in sorted(reports, key=lambda r: r.shard)])


def build_ingest(
    rows: beam.PCollection, config: CurateConfig, listing: StoreListing
) -> tuple[beam.PCollection, beam.PCollection]:
    """Wire ingest for `rows` (`listing`: what `preflight` found in the store); returns
    (ImageRef, Failure) PCollections and writes the duplicates table (and `tar_shards.json`
    when reading tars) as side outputs."""
    out = ingest_paths(config.output)
    ingested = rows | "Ingest" >> Ingest(ingest_config(config), listing)
    ingested["duplicates"] | "WriteDuplicates" >> WriteSortedParquet(
        out["duplicates"], ParquetSpec(DUPLICATES_SCHEMA, dict, lambda r: (r["sha256"], r["id"]))
    )
    if "shard_reports" in ingested:
        (
            ingested["shard_reports"]
            | meter("MeterReports")
            | "CollectReports" >> beam.combiners.ToList()
            | "WriteReports" >> beam.Map(_write_shard_reports, out["tar_shards"])
        )
    return ingested["images"], ingested["failures"]


def _sum(counters: Counters, stage: str, skip: tuple[str, ...] = ()) -> dict[str, int]:
    return {f"{stage}/{k}": v for k, v in counters.get(stage, {}).items() if k not in skip and v}


def ingest_stats(counters: Counters, wall: float, duplicates_path: str) -> dict[str, Any]:
    """Outcome counts of the ingest stages (like img2dataset's per-run stats) and the check that
    every manifest row is accounted for: stored now + reused + failed (now or logged) = rows."""
    manifest = counters.get("manifest", {})
    dedupe = counters.get("dedupe", {})
    ingest = counters.get("ingest", {})
    fetch = counters.get("fetch", {})
    decode = counters.get("decode", {})
    failed = {
        **_sum(counters, "fetch", ("ok", "busy_ms", "bytes", "tar_unlisted")),
        **_sum(counters, "decode", ("ok", "busy_ms")),
    }
    for key, value in ingest.items():
        if key.startswith("logged/") and value:
            name = key[len("logged/") :]
            failed[name] = failed.get(name, 0) + value
    # copies of an id in several tar shards were fetched and decoded each; one outcome per row counts
    extra = {key[len("extra_copy/") :]: value for key, value in ingest.items() if key.startswith("extra_copy/")}
    for name, value in extra.items():
        if name in failed:
            failed[name] -= value
    failed = {name: value for name, value in failed.items() if value}
    manifest_failed = sum(v for k, v in manifest.items() if k not in ("input_rows", "parsed")) + dedupe.get(
        "duplicate_id", 0
    )
    stored, reused = decode.get("ok", 0) - extra.get("stored", 0), ingest.get("reused", 0)
    unique = dedupe.get("unique", 0)
    failed_total = sum(failed.values())
    duplicates = read_table(duplicates_path, columns=["sha256"]).column("sha256").to_pylist()
    return {
        "rows": manifest.get("input_rows", 0),
        "manifest_failed": manifest_failed,
        "stored": stored,
        "reused": reused,
        "failed": dict(sorted(failed.items())),
        "failed_total": failed_total,
        "success_rate": round((stored + reused) / unique, 4) if unique else 0.0,
        "bytes_fetched": fetch.get("bytes", 0),
        "tar_unlisted_entries": fetch.get("tar_unlisted", 0),
        "exact_duplicates": {"images": len(duplicates), "groups": len(set(duplicates))},
        "seconds": {"wall": round(wall, 3), **busy_seconds(counters)},
        "images_per_s": round(stored / wall, 3) if wall else 0.0,
        "accounting_ok": manifest.get("input_rows", 0) == manifest_failed + stored + reused + failed_total,
    }


def run_ingest(config: CurateConfig, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Ingest only (no features, no selection): fill the store under `config.output` and write
    `ingest_stats.json`; a later `gld curate` with the same `--output` reuses the store.

    Holds the folder's lock and starts a run there like `gld curate` (the previous run's
    outputs go), which `gld curate` finishes: the folder holds no finished run until then."""
    check_paths(config)
    out = ingest_paths(config.output)
    with locked(config.output, "gld ingest") as holder:
        begin_run(config.output, holder, finish_command(config), previous_outputs(config.output))
        checked = preflight(config, models=False)

        def build(pipeline: beam.Pipeline) -> None:
            rows, _ = pipeline | "ReadManifest" >> ReadManifest(ManifestConfig(config.train_csv, checked.columns))
            build_ingest(rows, config, checked.listing)

        counters, wall = run_pipeline(build, beam_args, config.progress)
        stats = {**ingest_stats(counters, wall, out["duplicates"]), "config": config.to_json(), "versions": versions()}
        write_json(out["ingest_stats"], stats)
    return stats
