"""A parameter is defined once, in the config dataclasses: the `gld curate` flags, their help,
the Dataflow template's parameters (`deploy/dataflow/metadata.json`) and the README's flag list
must agree with them. Each test here fails when one of those drifts."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from pipeline.cli.main import _OVERRIDES, _curate_parser
from pipeline.curation.config import CurateConfig, build_config
from transforms.extractors.config import FeatureConfig

REPO = Path(__file__).resolve().parent.parent

#: `gld curate` flags that set no stage field: they are CurateConfig's own fields, or act on the run.
_RUN_FLAGS = {"help", "train_csv", "output", "preset", "matching", "dry_run", "no_progress", "no_audit"}


def _curate_actions() -> dict[str, Any]:
    return {action.dest: action for action in _curate_parser()._actions}


def _effective(dest: str, preset: str = "gldv2-components") -> Any:
    """What a run gets for flag `dest` when the flag is left out."""
    config = build_config("train.csv", "out", preset)
    if dest in ("preset", "matching"):
        return getattr(config, dest)
    stage, name = _OVERRIDES[dest]
    return getattr(getattr(config, stage), name)


def stated_default(text: str) -> str | None:
    """The default a help text states, in any of the forms the help and the template use:
    "(default 30)", "(default: sift 4000, delf 1000)", "default affine", "nn: ... (default)",
    "sift (CPU, default)", "SIFT default 4000, DELF 1000"; None when it states none."""
    for pattern in (r"\(default:? ([^);]+)", r"^default:? ([^);]+)", r"^([\w-]+): [^;]*\(default\)"):
        if m := re.search(pattern, text):
            return m.group(1).strip()
    if m := re.search(r"\b([\w-]+) \((?:[^()]*, )?default\)", text):
        return m.group(1)
    if m := re.search(r"\b([A-Za-z]+ default \d+(?:, [A-Za-z]+ \d+)*)", text):
        return m.group(1).replace(" default ", " ").lower()
    return None


def default_holds(stated: str, dest: str) -> bool:
    """Whether `stated` (a stated default of flag `dest`) is what a run gets without the flag."""
    if re.fullmatch(r"[a-z]+ \d+(, [a-z]+ \d+)*", stated):  # per extractor
        field = _OVERRIDES[dest][1]
        pairs = [item.split() for item in stated.split(", ")]
        return all(getattr(FeatureConfig(extractor=name), field) == int(n) for name, n in pairs)
    if m := re.fullmatch(r"on in ([\w-]+)", stated):
        return _effective(dest, m.group(1)) is True
    value = _effective(dest)
    if m := re.fullmatch(r"(\d+) MiB", stated):
        return value == int(m.group(1)) * 2**20
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(stated) == float(value)
    return str(value) == stated or str(value).split("://")[-1] == stated


def test_every_override_names_a_config_field():
    stages = {f.name: f for f in dataclasses.fields(CurateConfig)}
    config = build_config("train.csv", "out")
    for flag, (stage, name) in _OVERRIDES.items():
        assert stage in stages, flag
        assert name in {f.name for f in dataclasses.fields(getattr(config, stage))}, flag


def test_every_curate_flag_sets_a_config_field_or_the_run():
    dests = set(_curate_actions())
    assert dests - set(_OVERRIDES) == _RUN_FLAGS
    assert set(_OVERRIDES) <= dests


def test_help_states_the_real_defaults():
    stated = {}
    for dest, action in _curate_actions().items():
        if dest in _OVERRIDES and action.help and (value := stated_default(action.help)) is not None:
            stated[dest] = value
            assert default_holds(value, dest), f"--{dest.replace('_', '-')}: help says {value!r}"
    assert len(stated) >= 20  # the parser above still finds the defaults the help states


def test_template_parameters_state_the_real_defaults():
    metadata = json.loads((REPO / "deploy" / "dataflow" / "metadata.json").read_text())
    checked = 0
    for parameter in metadata["parameters"]:
        value = stated_default(parameter["helpText"])
        if value is not None:
            assert default_holds(value, parameter["name"]), f"{parameter['name']}: metadata says {value!r}"
            checked += 1
    assert checked >= 8


def _readme_flag_list() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme[readme.index("Project flags (`gld curate --help`)") : readme.index("Every other flag is a Beam")]


def test_readme_lists_every_curate_setting_flag():
    listed = set(re.findall(r"`(--[a-z][a-z-]*)", _readme_flag_list()))
    flags = {"--" + dest.replace("_", "-") for dest in _curate_actions() if dest not in ("help", "dry_run")}
    flags -= {"--train-csv", "--output"}  # required, shown in every example above the list
    assert flags - listed == set()
    known = flags | {"--no-drop-isolated-components"}
    assert listed - known == set()


def test_readme_states_the_real_defaults():
    text = _readme_flag_list()
    checked = 0
    for flag, stated in re.findall(r"`(--[a-z-]+)` \((?:default )?(\d+)\b", text):
        assert default_holds(stated, flag[2:].replace("-", "_")), f"README: {flag} ({stated})"
        checked += 1
    assert checked >= 8
