"""A run folder's commit marker: `run.json`, written last by `gld curate` and `gld select`.

Readers of a run (`gld select`, `gld audit`, `gld overlap`, `gld review`) trust only a folder
whose `run.json` exists; `finished_run` is the one place that checks it and says what to run.
"""

from __future__ import annotations

import json
from typing import Any

from apache_beam.io.filesystems import FileSystems

RUN_JSON = "run.json"


class UnfinishedRun(FileNotFoundError):
    """The folder holds no finished curation (no `run.json`)."""


def finished_run(output: str, command: str) -> dict[str, Any]:
    """The parsed `run.json` of `output`. Raises `UnfinishedRun` naming `command` (the reader,
    e.g. "gld select") and the command that finishes the folder when it has none."""
    path = FileSystems.join(output, RUN_JSON)
    if not FileSystems.exists(path):
        raise UnfinishedRun(
            f"{output} holds no finished run (no {RUN_JSON}): `{command}` needs one; "
            f"run `gld curate --output {output} ...` first (it reuses what a killed run stored)"
        )
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))
