"""Every check that reads files or models, run before a curation graph is built.

`check_paths(config)` refuses whole-run mistakes with one line each (a missing manifest, a
missing or empty `--images-dir` or `--tar-dir`, an `--output` that is a file) before the run
folder is touched. `preflight(config)` reads the manifest's header, checks the image store's fingerprint, lists the
store's parts, earlier failure logs and the tar shards, and checks that the feature model and
the matcher's weights are installed; the transforms then take what it found as arguments and
read nothing while the graph is built. `Preflight.offline` (the dry run) reads nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from pipeline.curation.config import CurateConfig
from schemas.gldv2_csv import TRAIN_COLUMNS
from transforms.features.extractors.registry import learned_module
from transforms.features.stage import check_model
from transforms.ingest.manifest import read_header
from transforms.ingest.stage import IngestConfig, StoreListing, list_store


@dataclass(frozen=True)
class Preflight:
    """What building the curation graph needs from files: the manifest's `columns` and the
    image store's `listing`."""

    columns: tuple[str, ...]
    listing: StoreListing

    @classmethod
    def offline(cls, config: CurateConfig) -> Preflight:
        """Read nothing (`gld curate --dry-run`): the standard columns, a fresh store, shards
        listed when the job runs."""
        return cls(TRAIN_COLUMNS, StoreListing.offline(config.output))


def ingest_config(config: CurateConfig) -> IngestConfig:
    return IngestConfig(config.output, config.fetch, config.decode, config.store)


def _holds_files(folder: str) -> bool:
    """Whether any file lies under `folder` (at any depth); lists one at most, so a GCS folder
    of millions of images costs one request."""
    return bool(FileSystems.match([FileSystems.join(folder, "**")], limits=[1])[0].metadata_list)


def _input_folder_problem(flag: str, folder: str) -> str:
    if _holds_files(folder):
        return ""
    # GCS has no folders: one that holds nothing does not exist either
    return f"{flag} {folder} is empty" if FileSystems.exists(folder) else f"{flag} {folder} does not exist"


def is_file(path: str) -> bool:
    """Whether `path` is a file (a GCS object of that exact name; folders there are only prefixes)."""
    if FileSystems.get_scheme(path) in (None, "file"):
        return os.path.isfile(path.removeprefix("file://"))
    return FileSystems.exists(path)


def check_paths(config: CurateConfig) -> None:
    """Raise ValueError (one line) for a mistake that would spoil the whole run: a missing
    manifest, a missing or empty `--images-dir` or `--tar-dir` (every row would fail as
    missing_file), or an `--output` that is a file."""
    if is_file(config.output):
        raise ValueError(f"--output {config.output} is a file; give a folder (it is made when missing)")
    if not FileSystems.exists(config.train_csv):
        raise ValueError(f"--train-csv {config.train_csv} does not exist")
    for flag, folder in (("--images-dir", config.fetch.images_dir), ("--tar-dir", config.fetch.tar_dir)):
        problem = _input_folder_problem(flag, folder) if folder else ""
        if problem:
            raise ValueError(problem)


def check_models(config: CurateConfig) -> None:
    """Raise ValueError when the feature model or the matcher's weights are not installed."""
    check_model(config.features)
    if config.verify.learned_matching:
        learned_module().check_weights(matcher="lightglue")


def check_reviews(config: CurateConfig) -> None:
    """Raise FileNotFoundError when `--reviews` names a file that is not there: selection reads
    it on a worker, at the end of the run."""
    path = config.select.reviews
    if path and not FileSystems.exists(path):
        raise FileNotFoundError(f"--reviews {path}: no such file (gld review writes <output>/reviews.csv)")


def preflight(config: CurateConfig, models: bool = True) -> Preflight:
    """Check the inputs, list the stores and (with `models`) check the models, in the order a
    run meets them; raises ValueError on the first problem. `check_paths` comes first, before
    the run folder is locked and cleared."""
    columns = read_header(config.train_csv)
    listing = list_store(ingest_config(config))
    if models:
        check_models(config)
    check_reviews(config)
    return Preflight(columns, listing)
