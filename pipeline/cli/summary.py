"""The readable end of `gld demo`, `gld curate` and `gld select`: counts per status and per
reason, whether every input row is accounted for, and where the outputs are. The JSON line each
command prints last (the contract: one object on the last line of stdout) follows it, or stands
alone with `--json`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, TextIO

#: The outputs the summary names after the folder, in the order a reader opens them.
_NAMED_OUTPUTS = ("train_clean", "decisions", "pairs", "audit", "c2x_csv", "report")


def summary_lines(run: dict[str, Any]) -> list[str]:
    """The readable summary of a finished run (`run.json`'s dict): a line of counts per status,
    one line per reason (`kept/verified_component`, `failed/fetch/http_404`, ...), the
    accounting, the verdicts of `--reviews` when there were any, and the outputs."""
    counts = run["counts"]
    statuses = ", ".join(f"{status} {n}" for status, n in counts["by_status"].items())
    lines = [f"rows {counts['rows']}: {statuses}"]
    width = max((len(key) for key in counts["by_reason"]), default=0)
    lines += [f"  {key:<{width}}  {n:>7}" for key, n in counts["by_reason"].items()]
    if counts.get("accounting_ok", True):
        lines.append("accounting: every input row ends in exactly one decision")
    else:
        lines.append(
            f"accounting FAILED: {counts['rows']} decisions for {counts.get('input_rows')} input rows, "
            f"{counts.get('distinct_ids')} distinct ids"
        )
    if reviews := run.get("counters", {}).get("review"):
        lines.append("reviews: " + ", ".join(f"{key} {n}" for key, n in sorted(reviews.items())))
    outputs = run["outputs"]
    folder = os.path.dirname(outputs["train_clean"])
    names = [os.path.basename(outputs[key]) for key in _NAMED_OUTPUTS if key in outputs]
    lines.append(f"outputs in {folder}: {', '.join(names)}, run.json")
    return lines


def print_summary(
    run: dict[str, Any],
    last_line: dict[str, Any],
    json_only: bool = False,
    more: Sequence[str] = (),
    file: TextIO | None = None,
) -> None:
    """Print the readable summary of `run` and the lines `more` (unless `json_only`), then
    `last_line` as the one JSON object on the last line."""
    if not json_only:
        for line in [*summary_lines(run), *more]:
            print(line, file=file)
    print(json.dumps(last_line), file=file)
