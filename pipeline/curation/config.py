"""The resolved configuration of one curation run, and its named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from transforms.features.extractors.config import FeatureConfig
from transforms.features.extractors.registry import check_extractor
from transforms.ingest.decode import DecodeConfig
from transforms.ingest.fetch import FetchConfig
from transforms.ingest.image_store import StoreConfig
from transforms.matching.pairs import PairConfig
from transforms.matching.verify import VerifyConfig
from transforms.selection.audit import AuditConfig
from transforms.selection.select import SelectConfig

#: The preset and the matching preset a run gets when it names none.
DEFAULT_PRESET, DEFAULT_MATCHING = "balanced", "default"
#: The rule of the default and SIFT presets: connected components of the >= 30-inlier graph,
#: without the isolated components (a small component beside a larger one that nothing links to
#: the rest of its class: on landmarks-dev, the near-duplicate noise pairs).
_COMPONENTS = {"min_inliers": 30, "min_component_size": 2, "drop_isolated_components": True}
#: Presets fill stage settings; explicit flags override them.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The default: learned quality at SIFT's price. ALIKED on a 480 px working image (cheaper than
    # SIFT's 1024 px and its 4000 features), the cascade matcher (nearest neighbours settle the
    # pairs they verify or find at chance level, LightGlue decides the rest) and adaptive
    # verification (the default), then the components rule (docs/presets.md).
    # Chance level is <= 3 inliers: on landmarks-dev a wide-baseline member pair (MegaDepth's
    # Sagrada Familia) gets 4 from nearest neighbours and 78 from LightGlue, and no non-member
    # pair that LightGlue sees at 4-5 reaches 30 (`bench_quality.py`: recall 0.951, not 0.935).
    "balanced": {
        "features": {"extractor": "aliked", "working_side": 480},
        "verify": {"matcher": "cascade", "cascade_accept": 30, "cascade_reject": 3},
        "select": _COMPONENTS,
    },
    # SIFT (4000 RootSIFT, the OpenCV extractor that runs anywhere) + nearest neighbours, and the
    # same rule: the default before the learned one, and the preset without PyTorch.
    "gldv2-components": {"select": _COMPONENTS},
    # Team smlyaka's rule that made GLDv2-train-clean: >= 3 pairs of >= 30 inliers per image, then
    # classes of >= 2 survivors; up to 100 candidates per image; affine RANSAC, 20 px, 1000 trials.
    "gldv2-official": {
        "pairs": {"k": 100},
        "verify": {"model": "affine", "ransac_threshold": 20.0, "ransac_iterations": 1000},
        "select": {"policy": "degree", "min_inliers": 30, "min_degree": 3, "min_class_size": 2},
    },
    # Learned features (the `learned` extra): ALIKED + LightGlue, then the same RANSAC and
    # components without isolated ones. On landmarks-dev the >= 30 graph keeps the most true
    # members; >= 50 drops the noise image that reached 45 inliers with a member, and since
    # LightGlue gives unrelated images of a class up to ~22 inliers, an isolated component needs
    # 25 to be linked (docs/presets.md).
    "recall-first": {
        "features": {"extractor": "aliked"},
        "verify": {"matcher": "lightglue"},
        "select": {"min_inliers": 30, "min_component_size": 2, "drop_isolated_components": True},
    },
    "precision-first": {
        "features": {"extractor": "aliked"},
        "verify": {"matcher": "lightglue"},
        "select": {
            "min_inliers": 50,
            "min_component_size": 2,
            "drop_isolated_components": True,
            "isolation_inliers": 25,
        },
    },
}

#: `--matching` presets fill verification settings over the preset; explicit flags override them.
MATCHING_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    # DELF's official recipe (research/delf match_images.py): 1-NN under descriptor distance
    # 0.8, no ratio or mutual test, affine RANSAC with a 20 px residual and 1000 trials.
    "delf-reference": {
        "verify": {
            "ratio": 1.0,
            "mutual": False,
            "max_distance": 0.8,
            "model": "affine",
            "ransac_threshold": 20.0,
            "ransac_iterations": 1000,
            "local_optimisation": False,
        }
    },
}


@dataclass(frozen=True)
class CurateConfig:
    """Everything a `gld curate` run depends on; written to `run.json` as resolved."""

    train_csv: str
    output: str
    preset: str = DEFAULT_PRESET
    matching: str = DEFAULT_MATCHING
    fetch: FetchConfig = field(default_factory=FetchConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.train_csv or not self.output:
            raise ValueError("train_csv and output are required")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        if self.matching not in MATCHING_PRESETS:
            raise ValueError(f"unknown matching {self.matching!r}; choose from {sorted(MATCHING_PRESETS)}")
        check_extractor(self.features.extractor)
        if self.verify.learned_matching and (
            self.features.extractor != "aliked" or self.features.aliked_model == "aliked-t16"
        ):
            raise ValueError(
                f"the {self.verify.matcher} matcher's LightGlue weights need 128-wide ALIKED features "
                "(--extractor aliked)"
            )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> CurateConfig:
        """Inverse of `to_json` (e.g. the `config` of a run.json); ValueError when invalid."""
        stages = {}
        for stage in STAGE_CONFIGS:
            fields = dict(value.get(stage, {}))
            for name, item in fields.items():
                if isinstance(item, list):
                    fields[name] = tuple(item)  # JSON has no tuples
            stages[stage] = _stage_config(stage, fields)
        # `plan_only`: written by versions before `preflight`, never true in a run.json
        top = {k: v for k, v in value.items() if k not in STAGE_CONFIGS and k != "plan_only"}
        return cls(**top, **stages)


STAGE_CONFIGS = {
    "fetch": FetchConfig,
    "decode": DecodeConfig,
    "store": StoreConfig,
    "features": FeatureConfig,
    "pairs": PairConfig,
    "verify": VerifyConfig,
    "select": SelectConfig,
    "audit": AuditConfig,
}


def _stage_config(stage: str, fields: dict[str, Any]) -> Any:
    """The config of one stage (a key of `STAGE_CONFIGS`) from its resolved fields. The feature
    stage's extractor is checked against the registry first (`FeatureConfig` does not import
    it), so an unknown name is refused with the registry's choices, whatever else is set."""
    if stage == "features":
        check_extractor(fields.get("extractor", FeatureConfig.extractor))
    return STAGE_CONFIGS[stage](**fields)


def build_config(
    train_csv: str,
    output: str,
    preset: str = DEFAULT_PRESET,
    overrides: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    matching: str = DEFAULT_MATCHING,
) -> CurateConfig:
    """Resolve preset + matching preset + explicit overrides (stage -> field -> value) into a
    validated config."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    if matching not in MATCHING_PRESETS:
        raise ValueError(f"unknown matching {matching!r}; choose from {sorted(MATCHING_PRESETS)}")
    stages: dict[str, Any] = {}
    for stage in STAGE_CONFIGS:
        values = {
            **PRESETS[preset].get(stage, {}),
            **MATCHING_PRESETS[matching].get(stage, {}),
            **(overrides or {}).get(stage, {}),
        }
        stages[stage] = _stage_config(stage, values)
    return CurateConfig(
        train_csv=train_csv, output=output, preset=preset, matching=matching, progress=progress, **stages
    )
