"""Every check that reads files or models, run before a curation graph is built.

`preflight(config)` reads the manifest's header, checks the image store's fingerprint, lists the
store's parts, earlier failure logs and the tar shards, and checks that the feature model and
the matcher's weights are installed; the transforms then take what it found as arguments and
read nothing while the graph is built. `Preflight.offline` (the dry run) reads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from pipeline.curation.config import CurateConfig
from schemas.gldv2_csv import TRAIN_COLUMNS
from transforms.extractors.registry import learned_module
from transforms.features import check_model
from transforms.ingest import IngestConfig, StoreListing, list_store
from transforms.manifest import read_header


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


def check_models(config: CurateConfig) -> None:
    """Raise ValueError when the feature model or the matcher's weights are not installed."""
    check_model(config.features)
    if config.verify.matcher == "lightglue":
        learned_module().check_weights(matcher=config.verify.matcher)


def check_reviews(config: CurateConfig) -> None:
    """Raise FileNotFoundError when `--reviews` names a file that is not there: selection reads
    it on a worker, at the end of the run."""
    path = config.select.reviews
    if path and not FileSystems.exists(path):
        raise FileNotFoundError(f"--reviews {path}: no such file (gld review writes <output>/reviews.csv)")


def preflight(config: CurateConfig, models: bool = True) -> Preflight:
    """Check the inputs, list the stores and (with `models`) check the models, in the order a
    run meets them; raises ValueError on the first problem."""
    columns = read_header(config.train_csv)
    listing = list_store(ingest_config(config))
    if models:
        check_models(config)
    check_reviews(config)
    return Preflight(columns, listing)
