"""A parameter is defined once, in the config dataclasses: the `gld curate` flags and their help
are made from them (`pipeline.cli.settings`), and the Dataflow template's parameters
(`deploy/dataflow/metadata.json`) and the CLI reference of the docs (`docs/reference/cli.md`, made
from the parsers; `tests/test_docs_reference.py` checks that it is regenerated) must agree with
them. Each test here fails when one of those drifts."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from pipeline.cli.main import _curate_parser, curate_flags, overrides_from
from pipeline.cli.settings import BY_DEST, SETTINGS, help_text
from pipeline.cli.template import template_metadata_text
from pipeline.curation.config import build_config
from transforms.features.extractors.config import FeatureConfig

REPO = Path(__file__).resolve().parent.parent

#: `gld curate` flags that set no stage field: they are CurateConfig's own fields, or act on the run.
_RUN_FLAGS = {"train_csv", "output", "preset", "matching", "dry_run", "no_progress", "no_audit", "json"}

#: A value for each setting's flag that differs from the default preset's.
_GIVEN = {bool: None, int: "7", float: "0.5", str: "x"}


def _curate_dests() -> set[str]:
    return {flag[2:].replace("-", "_") for flag in curate_flags()}


def _effective(dest: str) -> Any:
    """What a run gets for flag `dest` when the flag is left out."""
    config = build_config("train.csv", "out")
    if dest in ("preset", "matching"):
        return getattr(config, dest)
    setting = BY_DEST[dest]
    return getattr(getattr(config, setting.stage), setting.field)


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
        field = BY_DEST[dest].field
        pairs = [item.split() for item in stated.split(", ")]
        return all(getattr(FeatureConfig(extractor=name), field) == int(n) for name, n in pairs)
    if stated in ("on", "off"):
        return _effective(dest) is (stated == "on")
    value = _effective(dest)
    if m := re.fullmatch(r"(\d+) MiB", stated):
        return value == int(m.group(1)) * 2**20
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(stated) == float(value)
    return str(value) == stated or str(value).split("://")[-1] == stated


def test_every_curate_flag_sets_a_config_field_or_the_run():
    assert _curate_dests() - set(BY_DEST) == _RUN_FLAGS
    assert len(BY_DEST) == len(SETTINGS)  # no flag defined twice


def test_every_setting_flag_parses_into_its_field():
    """Give every setting's flag at once: each lands in its own stage field, with its type."""
    argv = ["--train-csv", "t.csv", "--output", "o"]
    for setting in SETTINGS:
        argv.append(setting.flag)
        if setting.value_type is not bool:
            argv.append(setting.choices[-1] if setting.choices else _GIVEN[setting.value_type])
    args, rest = _curate_parser().parse_known_args(argv)
    assert rest == []
    overrides = overrides_from(args)
    for setting in SETTINGS:
        value = overrides[setting.stage][setting.field]
        assert type(value) is setting.value_type, setting.flag


def test_help_states_the_real_defaults():
    stated = {}
    for setting in SETTINGS:
        if (value := stated_default(help_text(setting))) is not None:
            stated[setting.dest] = value
            assert default_holds(value, setting.dest), f"{setting.flag}: help says {value!r}"
    assert len(stated) >= 20  # the parser above still finds the defaults the help states


def test_template_metadata_is_made_from_the_flags():
    """deploy/dataflow/metadata.json is `gld template-metadata`'s output: regenerate it after a
    flag changes (`gld template-metadata > deploy/dataflow/metadata.json`)."""
    committed = (REPO / "deploy" / "dataflow" / "metadata.json").read_text(encoding="utf-8")
    assert committed == template_metadata_text()
    choices = {p["name"]: p["regexes"][0] for p in json.loads(committed)["parameters"]}
    assert choices["extractor"] == "^(aliked|delf|sift)$"  # from the registry, not a copy
    assert choices["pairs_k"] == "^[0-9]+$" and choices["retry_failed"] == "^(true|false)$"


def test_template_parameters_state_the_real_defaults():
    metadata = json.loads((REPO / "deploy" / "dataflow" / "metadata.json").read_text())
    checked = 0
    for parameter in metadata["parameters"]:
        value = stated_default(parameter["helpText"])
        if value is not None:
            assert default_holds(value, parameter["name"]), f"{parameter['name']}: metadata says {value!r}"
            checked += 1
    assert checked >= 8


def _reference_rows(command: str) -> list[list[str]]:
    """The flag rows (flags, value, default, what it does) of `gld COMMAND` in the committed CLI
    reference, docs/reference/cli.md."""
    page = (REPO / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    section = page.split(f"\n## gld {command}\n", 1)[1].split("\n## ", 1)[0].split("\n### Presets", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| `-")]
    return [[cell.strip() for cell in row] for row in rows]


def test_the_cli_reference_lists_every_curate_flag_and_nothing_else():
    listed = {flag for row in _reference_rows("curate") for flag in re.findall(r"`(--[a-z][a-z-]*)`", row[0])}
    assert listed == curate_flags() | {"--no-drop-isolated-components"}
    selection = {setting.flag for setting in SETTINGS if setting.group == "selection"}
    listed_select = {re.findall(r"`(--[a-z-]+)`", row[0])[0] for row in _reference_rows("select")}
    assert selection <= listed_select


def test_the_cli_reference_states_the_real_defaults():
    checked = 0
    for row in _reference_rows("curate"):
        flag, stated = re.findall(r"`(--[a-z-]+)`", row[0])[0], row[2].split(";")[0]
        if stated:
            assert default_holds(stated, flag[2:].replace("-", "_")), f"docs/reference/cli.md: {flag} ({stated})"
            checked += 1
    assert checked >= 30


def test_baseline_flags_are_their_configs_fields_with_their_defaults():
    """`gld export-tfrecords|train|evaluate` flags are named as their config's fields, and a run
    that gives only the required ones gets the config's defaults."""
    from pipeline.baselines.evaluate import EvaluateConfig
    from pipeline.baselines.tfrecords import ExportConfig
    from pipeline.baselines.train import TrainConfig
    from pipeline.cli.baselines import config_from, evaluate_parser, export_parser, train_parser

    cases = [
        (
            export_parser(),
            ["--train-clean", "t", "--images", "i", "--output", "o"],
            ExportConfig("t", "i", "o"),
            {"no_progress"},
        ),
        (train_parser(), ["--tfrecords", "t", "--output", "o"], TrainConfig("t", "o"), set()),
        (
            evaluate_parser(),
            ["--model", "m", "--index-images", "i", "--query-images", "q", "--output", "o"],
            EvaluateConfig("m", "i", "q", "o"),
            {"no_progress", "solution"},
        ),
    ]
    for parser, argv, expected, not_fields in cases:
        args = parser.parse_args(argv)
        assert set(vars(args)) - {f.name for f in dataclasses.fields(expected)} == not_fields
        assert config_from(type(expected), args) == expected
