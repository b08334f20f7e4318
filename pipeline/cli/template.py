"""The Dataflow flex template's metadata (`deploy/dataflow/metadata.json`), made from the flags.

A template parameter is a `gld curate` flag (`deploy/dataflow/main.py` turns `name=value` back
into it). Its help, its value pattern (choices, number, switch) and whether it is required come
from the flag, and so from the config; this table only picks the flags the template offers,
labels them for the console and, for paths, asks for gs:// and says so.
`gld template-metadata > deploy/dataflow/metadata.json` writes the file;
`tests/test_flag_drift.py` fails when the committed one differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipeline.cli.settings import BY_DEST, CURATE_RUN_FLAGS, help_text

NAME = "gld-curate"
DESCRIPTION = "Clean a GLDv2-style landmark dataset into train_clean.csv (DELF/SIFT + RANSAC verification)"
_GCS_PATH = r"^gs:\/\/[^\n\r]+$"
_PATTERNS = {int: r"^[0-9]+$", float: r"^[0-9]*\.?[0-9]+$", bool: r"^(true|false)$", str: r"^[^\n\r]+$"}


@dataclass(frozen=True)
class TemplateParameter:
    """One flag the template offers: `name` is its argparse attribute (`--pairs-k` -> pairs_k),
    `label` what the console shows. `help` replaces the flag's help where the template's
    input differs (a gs:// path), `pattern` the pattern its type would give."""

    name: str
    label: str
    help: str = ""
    pattern: str = ""


PARAMETERS = (
    TemplateParameter("train_csv", "Manifest", "GLDv2-style train.csv (id,url,landmark_id), gs:// path", _GCS_PATH),
    TemplateParameter(
        "output",
        "Output folder",
        "gs:// folder for train_clean.csv, decisions, the image store and the report",
        _GCS_PATH,
    ),
    TemplateParameter(
        "images_dir", "Images folder", "Read gs://…/a/b/c/<id>.jpg instead of downloading the URLs", _GCS_PATH
    ),
    TemplateParameter(
        "tar_dir",
        "Tar shards folder",
        "Read the official images_NNN.tar shards and their md5 files from this gs:// folder",
        _GCS_PATH,
    ),
    TemplateParameter("retry_failed", "Retry failed rows"),
    TemplateParameter("preset", "Preset"),
    TemplateParameter("extractor", "Local features"),
    TemplateParameter("matcher", "Matcher"),
    TemplateParameter("delf_model", "DELF model"),
    TemplateParameter(
        "gpu_accelerator", "GPU for the feature step", pattern=r"^type:[a-z0-9-]+;count:[0-9]+(;[a-z0-9-]+)*$"
    ),
    TemplateParameter("pairs", "Candidate pairs"),
    TemplateParameter("pairs_k", "Partners per image"),
    TemplateParameter("min_inliers", "Inliers for an edge"),
    TemplateParameter("min_component_size", "Smallest component"),
    TemplateParameter("max_features", "Features per image"),
    TemplateParameter(
        "embedding_model",
        "Global descriptor model",
        "gs:// SavedModel with an embedding signature for knn candidate pairs (e.g. from gld train)",
        _GCS_PATH,
    ),
    TemplateParameter("matching", "Matching recipe"),
    TemplateParameter("policy", "Selection policy"),
    TemplateParameter("min_degree", "Verified pairs per image"),
    TemplateParameter(
        "reviews",
        "Reviewed verdicts",
        "gs:// reviews.csv of gld review (id,verdict,landmark_id,note), applied after the rules",
        _GCS_PATH,
    ),
)


def _flag(name: str) -> tuple[str, tuple[str, ...], type, bool]:
    """(help, choices, value type, required) of the `gld curate` flag with attribute `name`;
    KeyError when there is none."""
    if name in BY_DEST:
        setting = BY_DEST[name]
        return help_text(setting), setting.choices, setting.value_type, False
    for flag, options in CURATE_RUN_FLAGS:
        if flag[2:].replace("-", "_") == name:
            kind = bool if options.get("action") == "store_true" else str
            return options.get("help", ""), tuple(options.get("choices", ())), kind, bool(options.get("required"))
    raise KeyError(f"no gld curate flag --{name.replace('_', '-')}")


def _parameter(parameter: TemplateParameter) -> dict[str, Any]:
    text, choices, kind, required = _flag(parameter.name)
    pattern = parameter.pattern or (f"^({'|'.join(choices)})$" if choices else _PATTERNS[kind])
    return {
        "name": parameter.name,
        "label": parameter.label,
        "helpText": parameter.help or text,
        "isOptional": not required,
        "regexes": [pattern],
    }


def template_metadata() -> dict[str, Any]:
    """The flex template metadata: name, description and one entry per `PARAMETERS` item."""
    return {"name": NAME, "description": DESCRIPTION, "parameters": [_parameter(p) for p in PARAMETERS]}


def template_metadata_text() -> str:
    """`template_metadata()` as `deploy/dataflow/metadata.json` holds it."""
    return json.dumps(template_metadata(), indent=2) + "\n"
