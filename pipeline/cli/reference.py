"""The generated pages of the docs site, made from the code so that nothing is stated twice.

- `reference/cli.md`: every `gld` command from its parser (`pipeline.cli.main.PARSERS`). The stage
  settings of `gld curate`, `gld ingest` and `gld select` come from the one table the parsers are
  built from (`pipeline.cli.settings.SETTINGS`): flag, value, the default a run really gets, what
  it does. What each preset sets comes from the presets themselves.
- `reference/outputs.md`: the files a run writes (`pipeline.curation.outputs`), each table's
  columns and types from its schema (`schemas/`), their meaning from `schemas/columns.py`, and
  the status, reason and kind vocabulary (`schemas/vocabulary.py`).

`python -m pipeline.cli.reference docs` rewrites both pages; `tests/test_docs_reference.py` fails
when the committed pages differ from what this module makes (as `gld template-metadata` does for
`deploy/dataflow/metadata.json`). Committed pages read on GitHub and in review diffs, and the
strict docs build (`make docs`) needs only mkdocs, not the project.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.cli.main import PARSERS
from pipeline.cli.settings import (
    BY_DEST,
    FEATURES,
    INGEST,
    PAIRS,
    SELECTION,
    SETTINGS,
    default_value,
)
from pipeline.curation.config import (
    DEFAULT_MATCHING,
    DEFAULT_PRESET,
    MATCHING_PRESETS,
    PRESETS,
    STAGE_CONFIGS,
    build_config,
)
from pipeline.curation.outputs import OVERLAP_DIR, REPORT_FILES_DIR
from pipeline.curation.overlap import CLASSES_HEADER
from pipeline.curation.run_folder import IN_PROGRESS, LOCK
from schemas.columns import (
    AUDIT_KINDS,
    COLUMNS,
    EVAL_STATUSES,
    PAIR_REASONS,
    REASONS,
    REVIEW_ISSUES,
    SCHEMAS,
    reason_outcome,
    word_table,
)
from schemas.reviews import HEADER_LINE, REVIEWS_NAME

CLI_PAGE, OUTPUTS_PAGE = "reference/cli.md", "reference/outputs.md"
_SETTING_GROUPS = (INGEST, FEATURES, PAIRS, SELECTION)
_BEAM = "Unknown flags go to Beam"


def _banner(source: str) -> str:
    return (
        f"<!-- Made by `python -m pipeline.cli.reference docs` from {source}; do not edit: "
        "tests/test_docs_reference.py fails when this page and the code differ. -->\n"
    )


def cell(text: str) -> str:
    """`text` safe in a Markdown table cell: outside `code` spans `<`, `>`, `*` and `|` are escaped
    (a `<id>` would be read as an HTML tag); inside them `|` is (GitHub splits cells on it)."""
    parts = text.replace("\n", " ").split("`")
    for i, part in enumerate(parts):
        if i % 2:
            parts[i] = part.replace("|", "\\|")
        else:
            parts[i] = part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            parts[i] = parts[i].replace("*", "\\*").replace("|", "\\|")
    return "`".join(parts)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


# --- the CLI reference -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FlagRow:
    """One row of a command's flag table: the flags (`--x`, or `--x` and `--no-x`), the value it
    takes, the default stated ("" when none is worth stating) and what it does."""

    flags: tuple[str, ...]
    value: str
    default: str
    help: str


def _metavar(action: argparse.Action) -> str:
    if action.metavar:
        return str(action.metavar)
    if not action.option_strings:
        return action.dest.upper()
    return {int: "N", float: "X"}.get(action.type, "TEXT")


def _value(action: argparse.Action) -> str:
    if not action.option_strings and not action.choices:
        return ""  # a positional argument: its name says it
    if action.nargs == 0:
        return "switch"
    value = ", ".join(f"`{choice}`" for choice in action.choices) if action.choices else _metavar(action)
    return f"{value} …" if action.nargs in ("+", "*") else value


def _plain_default(action: argparse.Action) -> str:
    default = action.default
    if action.nargs == 0 or default in (None, "", argparse.SUPPRESS):
        return ""
    return " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)


def flag_rows(group: argparse._ArgumentGroup) -> list[FlagRow]:
    """The rows of one argument group (argparse's own groups, or a settings group): a stage
    setting's help and default come from its `Setting`; other flags' from the parser."""
    rows = []
    for action in group._group_actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        flags = tuple(action.option_strings) or (_metavar(action),)
        if group.title in _SETTING_GROUPS:
            setting = BY_DEST[action.dest]
            on_switch = setting.value_type is bool and not setting.negatable
            default = "" if on_switch else setting.describe(default_value(setting))
            rows.append(FlagRow(flags, _value(action), default, setting.help))
            continue
        default = _plain_default(action)
        text = action.help or ""
        if default:  # a help that states its default says it in the default column
            text = text.replace(f" (default {default})", "")
        rows.append(FlagRow(flags, _value(action), default, text))
    return rows


def _groups(parser: argparse.ArgumentParser) -> list[tuple[str, list[FlagRow]]]:
    titles = {"positional arguments": "Arguments", "options": "Flags", "optional arguments": "Flags"}
    groups = []
    for group in parser._action_groups:  # argparse keeps no public list of its groups
        rows = flag_rows(group)
        if rows:
            title = titles.get(group.title or "", f"Settings: {group.title}")
            groups.append((title, rows))
    return groups


def usage(name: str, parser: argparse.ArgumentParser) -> str:
    """`gld NAME` with its positional arguments and required flags, then what else it takes."""
    parts, optional = ["gld", name], False
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:
            parts.append(_metavar(action) if not action.choices else "{" + ",".join(action.choices) + "}")
        elif action.required:
            parts += [action.option_strings[0], str(action.metavar or action.dest.upper())]
        else:
            optional = True
    if optional:
        parts.append("[flags]")
    if _BEAM in (parser.description or ""):
        parts.append("[Beam options]")
    return " ".join(parts)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "—" if value is None else f"`{value}`"


def _setting_label(stage: str, field: str) -> str:
    for setting in SETTINGS:
        if (setting.stage, setting.field) == (stage, field):
            return f"`{setting.flag}`"
    return f"`{stage}.{field}` (no flag)"


def preset_rows(configs: dict[str, Any]) -> list[list[str]]:
    """One row per stage field that the resolved `configs` (name -> CurateConfig) do not all
    agree on: its flag (or `stage.field`) and each config's value."""
    rows = []
    for stage, cls in STAGE_CONFIGS.items():
        for field in dataclasses.fields(cls):
            values = [getattr(getattr(config, stage), field.name) for config in configs.values()]
            if any(value != values[0] for value in values):
                rows.append([_setting_label(stage, field.name), *map(_shown, values)])
    return rows


def _presets_section() -> list[str]:
    names = [DEFAULT_PRESET, *sorted(set(PRESETS) - {DEFAULT_PRESET})]
    presets = {name: build_config("train.csv", "out", name) for name in names}
    lines = [
        "### Presets",
        "",
        f"`--preset` (default `{DEFAULT_PRESET}`) fills every setting a flag does not give; a flag given "
        "overrides it. The settings on which the presets differ, as a run resolves them (— : none); what "
        "each preset keeps and costs, measured, is in [Presets and quality](../presets.md).",
        "",
        *_table(["setting", *(f"`{name}`" for name in names)], preset_rows(presets)),
    ]
    for name in sorted(set(MATCHING_PRESETS) - {DEFAULT_MATCHING}):
        pair = {m: build_config("train.csv", "out", matching=m) for m in (DEFAULT_MATCHING, name)}
        lines += [
            f"`--matching {name}` sets, over the preset:",
            "",
            *_table(["setting", f"`{DEFAULT_MATCHING}`", f"`{name}`"], preset_rows(pair)),
        ]
    return lines


def _command_section(name: str, parser: argparse.ArgumentParser) -> list[str]:
    lines = [f"## gld {name}", "", cell(parser.description or ""), "", "```", usage(name, parser), "```", ""]
    for title, rows in _groups(parser):
        lines += [f"### {title}" if name in ("curate", "ingest", "select") else f"**{title}**", ""]
        lines += _table(
            ["flag", "value", "default", "what it does"],
            ([", ".join(f"`{f}`" for f in row.flags), row.value, cell(row.default), cell(row.help)] for row in rows),
        )
    if name == "curate":
        lines += _presets_section()
    return lines


def cli_reference(parsers: dict[str, Callable[[], argparse.ArgumentParser]] | None = None) -> str:
    """`reference/cli.md`."""
    parsers = parsers or PARSERS
    built = {name: make() for name, make in parsers.items()}
    lines = [
        _banner("the parsers of every gld command and pipeline/cli/settings.py"),
        "# CLI reference",
        "",
        "Every `gld` command and every flag it takes. The stage settings of `gld curate`, `gld ingest` and "
        "`gld select` are defined once, in `pipeline/cli/settings.py`: the parsers, `--help`, the Dataflow "
        "template's parameters and this page are made from that table, and each default below is the "
        f"value a run with the default preset (`{DEFAULT_PRESET}`) gets when the flag is left out. A run "
        "records every resolved setting in `run.json`.",
        "",
        "A command whose usage ends in `[Beam options]` hands every flag it does not define to Beam (`--runner`, "
        "`--direct_num_workers`, `--project`, `--region`, …). Anything that is neither a flag of the command "
        "nor an option Beam knows (a misspelt `--min_inliers`, an abbreviation) stops the command before any "
        'work, with exit status 2 and a "did you mean" line. Without `--runner`, runs use Beam\'s in-process '
        "runner with one worker thread per core ([Troubleshooting](../troubleshooting.md)).",
        "",
        "`gld curate` and `gld select` end with a readable summary (counts per status and reason, the "
        "accounting, where the outputs are) and then one JSON object on the last line of stdout; `--json` "
        "prints the JSON alone. The other commands print one JSON object on the last line of stdout, except "
        "`gld template-metadata` (the template's metadata), `gld make-tiny-delf` (the model's folder) and "
        "`gld review` while it serves its page.",
        "",
        "| command | what it does |",
        "|---|---|",
        *(
            f"| [`gld {name}`](#gld-{name}) | {cell(_first_sentence(p.description or ''))} |"
            for name, p in built.items()
        ),
        "",
    ]
    for name, parser in built.items():
        lines += _command_section(name, parser)
    return "\n".join(lines).rstrip("\n") + "\n"


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?[.:])(\s|$)", text)
    return (match.group(1) if match else text).rstrip(":.")


# --- the outputs reference ---------------------------------------------------------------------


def _rows(text: str, fields: int) -> dict[str, tuple[str, ...]]:
    """A `word_table` whose words are `fields` cells split by "|" (the last one the words)."""
    rows = {}
    for name, words in word_table(text).items():
        cells = tuple(cell.strip() for cell in words.split("|", fields - 1))
        if len(cells) != fields:
            raise ValueError(f"{name}: {fields} cells expected, got {words!r}")
        rows[name] = cells
    return rows


#: What each output of `OUTPUT_NAMES` is, by name: written by | the schema of its columns | what it holds.
FILES = _rows(
    """
train_clean.csv: curate, select |  | the clean split in the official format: header `landmark_id,images`; rows
  sorted by landmark_id (numeric), ids sorted and space-separated; classes without a kept image omitted
decisions.parquet: curate, select | decisions | exactly one row per input line, sorted by id
pairs.parquet: curate | pairs | one row per candidate pair, matched or skipped; read by `gld select`
members.parquet: curate | members | the images that reached selection (they have features); read by selection
failures.parquet: curate | decisions | the decisions of the rows that failed; read by selection
audit_candidates.parquet: curate | audit | what the audit found before any threshold: duplicates and every verified
  cross-class candidate (inliers as `score`); selection keeps the cross-class ones of at least `--min-inliers`
run.json: curate, select (last) |  | the commit marker, written last: resolved config, `counts` (per status, per
  reason, `accounting_ok`: one decision per input line, ids unique), `ingest`, `seconds` (busy seconds per stage,
  `wall`, `select_wall`), `cores`, `shuffle` (`bytes`, `elements`, `bytes_per_image`), Beam `counters`, library
  `versions`, `outputs` (paths, the stores included). A folder without it holds no finished run
images: curate, ingest | images | the image store: normalised JPEGs, one image per row group, parts committed while
  the run goes; reused by every later run
duplicates.parquet: curate, ingest | duplicates | images whose fetched bytes are identical, one row per member
tar_shards.json: curate, ingest (`--tar-dir`) |  | per shard: `md5` (`ok`, `mismatch`, `missing`), `images`,
  `rejected`, `error`, `unlisted` (members of ids the manifest does not name, skipped unread)
ingest_stats.json: curate, ingest |  | `rows`, `stored` (new), `reused`, `failed` (by `stage/reason`),
  `failed_total`, `success_rate`, `bytes_fetched`, `exact_duplicates`, `seconds`, `images_per_s`, `accounting_ok`
c2x_rejected.csv: curate, select |  | for retraining on clean + rejected (c2x): the removed images of the classes
  `train_clean.csv` keeps, in the same format
c2x_scores.parquet: curate, select | decisions | those images' decisions, sorted by id
audit.parquet: curate, select | audit | label-noise findings at the run's threshold
report.html: curate, select, audit, overlap |  | the static report (no script): counts, class sizes, the inlier
  histogram, the noisiest classes, drawn pairs, the audit, the review queues, evaluation overlap
""",
    3,
)

#: The other paths under `--output`: written by | schema | what it holds.
MORE_FILES = _rows(
    f"""
features/<settings>/part-*.parquet: curate | features | the features store, a folder per feature settings (a hash
  of the decode and extractor settings), one feature set per row group; reused by re-runs for the same image bytes
verified/<settings>/part-*.parquet: curate | verified | the verified-pair store, a folder per feature +
  verification settings: every matched pair as it was committed; reused by re-runs for the same image bytes
ingest_failures/attempt-NNNN/part-*.parquet: curate, ingest | ingest_failures | the failure log of each run's fetch
  and decode stages; the latest attempt of a row wins
ingest.json: curate, ingest |  | the decode settings the image store was made with (others are refused)
{REPORT_FILES_DIR}/: curate, select, audit |  | the report's thumbnails and drawn pairs
{REVIEWS_NAME}: review |  | verdicts, header `{HEADER_LINE.strip()}`, one line each, appended; the last line for
  an id wins (`gld select --reviews`)
{LOCK}: curate, select, ingest, overlap, audit |  | held while a command writes the folder (host, pid, start)
{IN_PROGRESS}: curate, select, ingest |  | present while a run is unfinished: who started it and the command that
  finishes the folder
{OVERLAP_DIR}/<NAME>/: overlap |  | the results of `gld overlap` for one evaluation set (below)
""",
    3,
)

#: What each file of `gld overlap` (`OVERLAP_OUTPUTS`) is: schema | what it holds.
OVERLAP_FILES = _rows(
    f"""
overlap.parquet: overlap | one row per verified cross-set pair (at least the run's `--min-inliers`)
candidates.parquet: overlap | every candidate pair, to judge another threshold without matching again
overlap_classes.csv:  | the classes with any verified overlap: `{CLASSES_HEADER}`
eval_images.parquet: eval_images | exactly one row per evaluation input row
eval_manifest.csv:  | the resolved evaluation list (`id,url,landmark_id`, landmark 0)
overlap.json:  | the counts that `gld overlap` prints, the settings, the evaluation image store, counters
train_clean_no_overlap.csv:  | with `--exclude`: `train_clean.csv` without the overlapping classes or images,
  every other line as in the original
c2x_rejected_no_overlap.csv:  | with `--exclude`: `c2x_rejected.csv` likewise
c2x_scores_no_overlap.parquet: decisions | with `--exclude`: `c2x_scores.parquet` likewise
""",
    2,
)


def _schema_link(schema: str) -> str:
    return f"[`{schema}`](#{schema})" if schema else ""


def _path(name: str) -> str:
    """A file's name, or a store folder's parts."""
    return name if "." in name or name.endswith("/") else f"{name}/part-*.parquet"


def _columns_section(name: str) -> list[str]:
    schema = SCHEMAS[name]
    texts = COLUMNS[name]
    return [
        f"### {name}",
        "",
        *_table(
            ["column", "type", "what it holds"],
            ([f"`{field.name}`", f"`{field.type}`", cell(texts[field.name])] for field in schema),
        ),
    ]


def outputs_reference() -> str:
    """`reference/outputs.md`."""
    lines = [
        _banner("pipeline/curation/outputs.py, the schemas and schemas/columns.py"),
        "# Outputs",
        "",
        "Everything a run writes lies under its `--output DIR` (any Beam path: a local folder, `gs://`, …). "
        "Every input row ends in exactly one place: one row of `decisions.parquet` per input line, `kept`, "
        "`removed` (with the rule that removed it) or `failed` (with the stage and reason). A row without a "
        "usable id gets the synthetic id `line:N`; a repeated id's later lines fail as `duplicate_id` under "
        "`line:N`.",
        "",
        "Every Parquet table is written sorted, in parallel, by key range: up to 500,000 rows it is one file; "
        "above that the same name is a folder of parts (`decisions.parquet/part-<key prefix>.parquet`) whose "
        "names sort in key order, so reading the parts in name order reads the table in order "
        "(`pyarrow.parquet.read_table` reads either form). `train_clean.csv` and `c2x_rejected.csv` stay single "
        "files. The same inputs and settings give byte-identical tables and CSVs; the stores hold identical "
        "rows, but their part names and boundaries depend on scheduling.",
        "",
        "## Files under `--output DIR`",
        "",
        *_table(
            ["path", "written by", "what it holds", "columns"],
            [
                *(
                    [f"`{_path(name)}`", writer, cell(text), _schema_link(schema)]
                    for name, (writer, schema, text) in (FILES | MORE_FILES).items()
                ),
            ],
        ),
        f"## Files of `gld overlap`, under `{OVERLAP_DIR}/<NAME>/`",
        "",
        "`NAME` is `--eval-name`, by default the evaluation source's base name (`gnd_` dropped). The curation's "
        "own files are never rewritten.",
        "",
        *_table(
            ["file", "what it holds", "columns"],
            ([f"`{name}`", cell(text), _schema_link(schema)] for name, (schema, text) in OVERLAP_FILES.items()),
        ),
        "## Tables and their columns",
        "",
        "Column names and types are read from the schemas the writers use (`schemas/tables.py`, `schemas/overlap.py`).",
        "",
    ]
    for name in SCHEMAS:
        lines += _columns_section(name)
    lines += [
        "## Statuses and reasons",
        "",
        "`decisions.parquet` `status`, `stage` and `reason` (`schemas/vocabulary.py`; values are added, never "
        "renamed). `run.json` counts them as `status/reason` and, for failures, `failed/stage/reason`.",
        "",
        *_table(
            ["status", "stage", "reason", "meaning"],
            (
                [*(f"`{value.value}`" for value in (*reason_outcome(reason), reason)), cell(text)]
                for reason, text in REASONS.items()
            ),
        ),
        "## Pair reasons",
        "",
        "`pairs.parquet` `reason`: empty when RANSAC ran, else one of these (all with 0 inliers).",
        "",
        *_table(["reason", "meaning"], ([f"`{r.value}`", cell(text)] for r, text in PAIR_REASONS.items())),
        "## Audit kinds",
        "",
        *_table(["kind", "meaning"], ([f"`{k.value}`", cell(text)] for k, text in AUDIT_KINDS.items())),
        "## Evaluation statuses",
        "",
        *_table(["status", "meaning"], ([f"`{s.value}`", cell(text)] for s, text in EVAL_STATUSES.items())),
        "## Review issues",
        "",
        "Counted in `run.json` as `review/<issue>` when `--reviews` is given; never fatal. `review/changed` counts "
        "the verdicts that changed a status or a landmark.",
        "",
        *_table(["issue", "meaning"], ([f"`{i.value}`", cell(text)] for i, text in REVIEW_ISSUES.items())),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


#: The generated pages, by path under the docs folder.
PAGES: dict[str, Callable[[], str]] = {CLI_PAGE: cli_reference, OUTPUTS_PAGE: outputs_reference}


def main(argv: list[str] | None = None) -> int:
    """Write the generated pages under the docs folder given (default `docs`)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.cli.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("docs", nargs="?", default="docs", help="the docs folder")
    args = parser.parse_args(argv)
    for page, make in PAGES.items():
        path = os.path.join(args.docs, page)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(make())
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
