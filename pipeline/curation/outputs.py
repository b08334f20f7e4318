"""What a run writes under `--output`, by name, and what a new run clears first.

`gld curate` writes `OUTPUT_NAMES` (with `gld ingest`'s `INGEST_OUTPUTS` among them); beside them
lie the report's pictures and `gld overlap`'s results, both made from one run's split. The
stores (`images/`, `features/`, `verified/`, `ingest_failures/`) are not outputs of one run:
they are reused by the next one and never cleared (see `run_folder`).
"""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems

from pipeline.curation.config import CurateConfig
from pipeline.runner import paths_under

#: What ingest writes under `--output` (the failure log folder is `ingest_failures/`).
INGEST_OUTPUTS = {
    "images": "images",
    "duplicates": "duplicates.parquet",
    "tar_shards": "tar_shards.json",
    "ingest_stats": "ingest_stats.json",
}

#: Files and folders a run writes under `--output`, by the key used in `run.json`.
OUTPUT_NAMES = {
    "train_clean": "train_clean.csv",
    "decisions": "decisions.parquet",
    "pairs": "pairs.parquet",
    "members": "members.parquet",
    "failures": "failures.parquet",
    "audit_candidates": "audit_candidates.parquet",
    "run_json": "run.json",
    **INGEST_OUTPUTS,
    "c2x_csv": "c2x_rejected.csv",
    "c2x_scores": "c2x_scores.parquet",
    "audit": "audit.parquet",
    "report": "report.html",
}

#: The report's pictures (`pipeline.report.html.FILES_DIR`) and `gld overlap`'s results
#: (`pipeline.report.overlap.OVERLAP_DIR`, read by the report); a test checks they agree.
REPORT_FILES_DIR = "report_files"
OVERLAP_DIR = "overlap"
#: Keys of `OUTPUT_NAMES` that are stores, not outputs of one run.
STORES = ("images",)
#: The outputs `gld select` makes again (from its selection job on); the rest of a run stays.
SELECTION_OUTPUTS = ("decisions", "train_clean", "c2x_csv", "c2x_scores", "audit", "report")


def output_paths(root: str) -> dict[str, str]:
    return paths_under(root, OUTPUT_NAMES)


def previous_outputs(output: str, names: tuple[str, ...] | None = None) -> list[str]:
    """The paths of the previous run's outputs a new run removes first: `names` (keys of
    `OUTPUT_NAMES`, default all but the stores), the report's pictures and overlap results."""
    out = output_paths(output)
    keys = names if names is not None else tuple(key for key in OUTPUT_NAMES if key not in STORES)
    return [out[key] for key in keys] + [FileSystems.join(output, name) for name in (REPORT_FILES_DIR, OVERLAP_DIR)]


def finish_command(config: CurateConfig) -> str:
    """What finishes a folder whose curation (or ingest) was killed: the same curate again."""
    return f"gld curate --train-csv {config.train_csv} --output {config.output} ... (the same flags)"
