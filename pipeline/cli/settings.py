"""The stage settings that `gld curate`, `gld ingest` and `gld select` take as flags, defined once.

A `Setting` names its flag, the `CurateConfig` stage field it sets and what it does. Everything
else is made from the config: the value type (the field's annotation), on-switches (bool
fields), and the "(default X)" of the help, read from the default preset's resolved config, so
the help cannot state a default a run does not get. The flags that act on the whole run
(`CURATE_RUN_FLAGS`) are here too, so `curate_flags()` and the Dataflow template's metadata
(`pipeline.cli.template`) read one place, and so does the CLI reference of the docs
(`pipeline.cli.reference`); `tests/test_flag_drift.py` checks them against the configs.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

from pipeline.curation.config import (
    DEFAULT_MATCHING,
    DEFAULT_PRESET,
    MATCHING_PRESETS,
    PRESETS,
    STAGE_CONFIGS,
    CurateConfig,
    build_config,
)
from transforms.features.extractors.config import DEFAULT_MAX_FEATURES, DEFAULT_WORKING_SIDE, DESCRIPTOR_DTYPE_NAMES
from transforms.features.extractors.registry import EXTRACTORS
from transforms.matching.pairs import MODES, VERIFICATIONS
from transforms.matching.verify import MATCHERS, MIN_MATCHES
from transforms.selection.select import POLICIES

INGEST, FEATURES, PAIRS, SELECTION = "ingest", "features", "pairs and verification", "selection"


def _plain(value: Any) -> str:
    """A default as the help states it; "" (states none) for an empty value."""
    return "" if value in ("", None) else str(value)


@dataclass(frozen=True)
class Setting:
    """One flag that sets one field of one stage config.

    `describe` turns the default preset's value into the default the help states ("" states
    none): by default the value itself. `negatable` gives a bool field `--x` and `--no-x`
    (for a rule a preset turns on); other bool fields get an on-switch."""

    flag: str
    stage: str
    field: str
    help: str
    group: str
    choices: tuple[str, ...] = ()
    describe: Callable[[Any], str] = _plain
    negatable: bool = False

    def __post_init__(self) -> None:
        if not self.flag.startswith("--") or self.stage not in STAGE_CONFIGS:
            raise ValueError(f"bad setting {self.flag!r} -> {self.stage}.{self.field}")
        if self.field not in _field_types(self.stage):
            raise ValueError(f"{self.flag}: {self.stage} has no field {self.field!r}")

    @property
    def dest(self) -> str:
        """The argparse attribute (`--max-side` -> `max_side`), also the template parameter name."""
        return self.flag[2:].replace("-", "_")

    @property
    def value_type(self) -> type:
        """int, float, str or bool: the field's annotation without its `| None`."""
        hint = _field_types(self.stage)[self.field]
        if get_origin(hint) in (Union, types.UnionType):
            hint = next(arg for arg in get_args(hint) if arg is not type(None))
        return hint


@cache
def _field_types(stage: str) -> dict[str, Any]:
    return get_type_hints(STAGE_CONFIGS[stage])


def _per_extractor(table: dict[str, int], skip: Collection[str] = ()) -> Callable[[Any], str]:
    """The default of a field that each extractor sets for itself where the preset sets none:
    the default preset's resolved value, then the value of each extractor."""
    by_extractor = ", ".join(f"{name} {value}" for name, value in table.items() if name not in skip)
    return lambda value: f"{value}; where the preset sets none, by extractor: {by_extractor}"


def _mib(value: int) -> str:
    return f"{value // 2**20} MiB"


def _switch(value: bool) -> str:
    return "on" if value else "off"


def _silent(_: Any) -> str:
    return ""


SETTINGS: tuple[Setting, ...] = (
    Setting("--images-dir", "fetch", "images_dir", "read <dir>/a/b/c/<id>.jpg instead of downloading the urls", INGEST),
    Setting("--tar-dir", "fetch", "tar_dir", "read the official images_NNN.tar shards (and md5 files) here", INGEST),
    Setting("--retry-failed", "fetch", "retry_failed", "fetch again the rows an earlier run failed on", INGEST),
    Setting(
        "--allow-private-hosts", "fetch", "allow_private_hosts", "allow loopback/private hosts (tests, demo)", INGEST
    ),
    Setting("--max-image-bytes", "fetch", "max_bytes", "cap on one image's bytes", INGEST, describe=_mib),
    Setting("--max-side", "decode", "max_side", "longest side after normalisation", INGEST),
    Setting("--jpeg-quality", "decode", "jpeg_quality", "quality of the stored JPEG", INGEST),
    Setting("--fetch-threads", "fetch", "threads", "concurrent downloads per worker", INGEST),
    Setting("--max-per-host", "fetch", "max_per_host", "concurrent requests to one host per worker", INGEST),
    Setting(
        "--per-host-rps", "fetch", "per_host_rps", "request starts per second per host and worker, 0 for no cap", INGEST
    ),
    Setting(
        "--user-agent", "fetch", "user_agent", "User-Agent header sent with every request", INGEST, describe=_silent
    ),
    Setting("--timeout", "fetch", "total_timeout_s", "total seconds for one image, retries included", INGEST),
    Setting("--retries", "fetch", "retries", "retries on connection errors, 429 and 5xx", INGEST),
    Setting(
        "--store-part-rows",
        "store",
        "part_rows",
        "images per store part; smaller parts lose less when a run is killed",
        INGEST,
    ),
    Setting(
        "--extractor",
        "features",
        "extractor",
        "local feature extractor (aliked needs the learned extra)",
        FEATURES,
        choices=tuple(sorted(EXTRACTORS)),
    ),
    Setting(
        "--max-features",
        "features",
        "max_features",
        "strongest features kept per image",
        FEATURES,
        describe=_per_extractor(DEFAULT_MAX_FEATURES),
    ),
    Setting(
        "--working-side",
        "features",
        "working_side",
        "longest side SIFT or ALIKED sees",
        FEATURES,
        describe=_per_extractor(DEFAULT_WORKING_SIDE, skip=("delf",)),
    ),
    Setting(
        "--descriptor-dtype",
        "features",
        "descriptor_dtype",
        "stored descriptors",
        FEATURES,
        choices=DESCRIPTOR_DTYPE_NAMES,
    ),
    Setting("--delf-model", "features", "delf_model", "DELF TF-Hub handle or SavedModel path", FEATURES),
    Setting(
        "--gpu-accelerator",
        "features",
        "gpu_accelerator",
        "Beam accelerator hint for the feature step only, e.g. 'type:nvidia-tesla-t4;count:1;install-nvidia-driver'",
        FEATURES,
    ),
    Setting("--pairs", "pairs", "mode", "candidate pairs per class (knn above the cap)", PAIRS, choices=MODES),
    Setting("--pairs-k", "pairs", "k", "partners per image for knn/random", PAIRS),
    Setting("--max-class-for-all", "pairs", "max_class_for_all", "largest class that gets all pairs", PAIRS),
    Setting("--seed", "pairs", "seed", "seed of pair sampling", PAIRS),
    Setting(
        "--verification",
        "pairs",
        "verification",
        "adaptive: verify best partners first, skip pairs that can change no decision; exhaustive: every pair",
        PAIRS,
        choices=VERIFICATIONS,
    ),
    Setting(
        "--embedding-model",
        "pairs",
        "embedding_model",
        "SavedModel (any Beam path) giving knn's global descriptor",
        PAIRS,
    ),
    Setting("--embedding-signature", "pairs", "embedding_signature", "its embedding signature", PAIRS),
    Setting("--ransac-model", "verify", "model", "geometric model of RANSAC", PAIRS, choices=tuple(MIN_MATCHES)),
    Setting(
        "--matcher",
        "verify",
        "matcher",
        "nn: nearest neighbours + ratio/mutual tests; lightglue: LightGlue on ALIKED features; "
        "cascade: nn first, LightGlue for the pairs it leaves under --cascade-accept inliers",
        PAIRS,
        choices=tuple(MATCHERS),
    ),
    Setting(
        "--cascade-accept",
        "verify",
        "cascade_accept",
        "cascade matcher: nearest-neighbour inliers that settle a pair as verified without LightGlue",
        PAIRS,
    ),
    Setting(
        "--cascade-reject",
        "verify",
        "cascade_reject",
        "cascade matcher: nearest-neighbour inliers at or under which a pair is settled as unrelated (-1: none)",
        PAIRS,
    ),
    Setting("--ratio", "verify", "ratio", "Lowe ratio", PAIRS),
    Setting("--ransac-threshold", "verify", "ransac_threshold", "RANSAC reprojection threshold in px", PAIRS),
    Setting("--min-inliers", "select", "min_inliers", "inliers that make a verified edge", SELECTION),
    Setting("--min-component-size", "select", "min_component_size", "smallest component kept", SELECTION),
    Setting("--policy", "select", "policy", "selection rule", SELECTION, choices=POLICIES),
    Setting(
        "--keep-largest-component",
        "select",
        "largest_component_only",
        "components policy: keep only a class's largest",
        SELECTION,
    ),
    Setting("--min-degree", "select", "min_degree", "degree policy: verified pairs an image needs", SELECTION),
    Setting("--min-class-size", "select", "min_class_size", "survivors a class needs to be kept", SELECTION),
    Setting(
        "--drop-isolated-components",
        "select",
        "drop_isolated_components",
        "components policy: remove a small component beside a larger one of its class that no pair links to the "
        "rest of the class",
        SELECTION,
        describe=_switch,
        negatable=True,
    ),
    Setting(
        "--isolated-max-size",
        "select",
        "isolated_max_size",
        "largest component the isolated rule may remove",
        SELECTION,
    ),
    Setting(
        "--isolation-inliers",
        "select",
        "isolation_inliers",
        "a pair with this many inliers to the rest of the class keeps a component",
        SELECTION,
    ),
    Setting(
        "--reviews",
        "select",
        "reviews",
        "reviews.csv of gld review: its verdicts (keep, remove, relabel) apply after the rules",
        SELECTION,
    ),
)

_NO_PROGRESS = ("--no-progress", {"action": "store_true", "help": "no progress line on stderr"})
#: `gld curate` and `gld select` print a readable summary, then one JSON object on the last line.
_JSON = ("--json", {"action": "store_true", "help": "print only the JSON line, not the readable summary before it"})

#: The flags of `gld ingest` (and `gld curate`) that act on the whole run, not on one stage.
INGEST_RUN_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--train-csv", {"required": True, "help": "manifest with columns id,url,landmark_id (any Beam path)"}),
    ("--output", {"required": True, "help": "output folder (any Beam path); re-runs reuse its images"}),
    _NO_PROGRESS,
)
#: `gld curate`'s flags that act on the whole run.
CURATE_RUN_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    *INGEST_RUN_FLAGS,
    (
        "--preset",
        {
            "default": DEFAULT_PRESET,
            "choices": sorted(PRESETS),
            "help": f"settings bundle that fills every setting not given (default {DEFAULT_PRESET})",
        },
    ),
    (
        "--matching",
        {
            "default": DEFAULT_MATCHING,
            "choices": sorted(MATCHING_PRESETS),
            "help": "verification recipe; delf-reference is DELF's official matcher",
        },
    ),
    (
        "--dry-run",
        {"action": "store_true", "help": "build the job offline and print its steps and resource hints (JSON)"},
    ),
    ("--no-audit", {"action": "store_true", "help": "skip the label-noise audit (audit.parquet stays empty)"}),
    _JSON,
)
#: `gld select`'s flags that act on the whole re-selection (its settings are the selection group).
SELECT_RUN_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--output", {"required": True, "help": "the --output folder of a finished gld curate run"}),
    (
        "--preset",
        {"choices": sorted(PRESETS), "help": "take the selection part of this preset (default: the run's preset)"},
    ),
    _NO_PROGRESS,
    _JSON,
)


#: The settings by argparse attribute.
BY_DEST = {setting.dest: setting for setting in SETTINGS}


@cache
def _preset_defaults() -> CurateConfig:
    """The resolved default preset: what a run gets for a flag left out."""
    return build_config("train.csv", "output")


def default_value(setting: Setting) -> Any:
    """What a run with the default preset gets when `setting`'s flag is left out."""
    return getattr(getattr(_preset_defaults(), setting.stage), setting.field)


def help_text(setting: Setting) -> str:
    """The flag's help: what it does and, where there is one, "(default X)" from the config."""
    if setting.value_type is bool and not setting.negatable:
        return setting.help  # an on-switch: off unless given
    stated = setting.describe(default_value(setting))
    return f"{setting.help} (default {stated})" if stated else setting.help


def add_settings(parser: argparse.ArgumentParser, groups: Collection[str]) -> None:
    """Add the flags of the settings in `groups` to `parser`, one argument group each. A flag
    left out parses as None (on-switches too), so it leaves the preset's value."""
    for group in groups:
        arguments = parser.add_argument_group(group)
        for setting in SETTINGS:
            if setting.group != group:
                continue
            options: dict[str, Any] = {"help": help_text(setting)}
            if setting.value_type is bool:
                options["action"] = argparse.BooleanOptionalAction if setting.negatable else "store_true"
                options["default"] = None
            else:
                options["type"] = setting.value_type
            if setting.choices:
                options["choices"] = setting.choices
            arguments.add_argument(setting.flag, **options)


class StatedDefaults(argparse.HelpFormatter):
    """Help that ends in "(default X)" where a flag has a default worth stating: the value the
    parser was given from its config dataclass (not None, "", or an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text, default = action.help or "", action.default
        if default is None or default is False or default in ("", argparse.SUPPRESS) or "%(default)" in text:
            return text
        return f"{text} (default %(default)s)"


def curate_flags() -> frozenset[str]:
    """The long options of `gld curate` (e.g. `--train-csv`)."""
    return frozenset(flag for flag, _ in CURATE_RUN_FLAGS) | {setting.flag for setting in SETTINGS}


def flags_of(config: CurateConfig) -> list[str]:
    """The `gld curate` flags (after `--train-csv`) that give `config`: `--output`, its preset
    and matching preset when not the defaults, then every setting whose value differs from what
    that preset gives, in the order of `SETTINGS`."""
    flags = ["--output", config.output]
    if config.preset != DEFAULT_PRESET:
        flags += ["--preset", config.preset]
    if config.matching != DEFAULT_MATCHING:
        flags += ["--matching", config.matching]
    preset = build_config(config.train_csv, config.output, config.preset, matching=config.matching)
    for setting in SETTINGS:
        value = getattr(getattr(config, setting.stage), setting.field)
        if value == getattr(getattr(preset, setting.stage), setting.field):
            continue
        if setting.value_type is bool:
            flags.append(setting.flag if value else f"--no-{setting.flag[2:]}")
        else:
            flags += [setting.flag, str(value)]
    return flags if config.audit.enabled else [*flags, "--no-audit"]


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The stage settings the flags given set (stage -> field -> value). A flag left out is
    None and leaves the preset's value; `--no-...` gives False."""
    overrides: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        value = getattr(args, setting.dest, None)
        if value is not None:
            overrides.setdefault(setting.stage, {})[setting.field] = value
    return overrides
