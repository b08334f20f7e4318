"""`gld review --export DIR`: the verdicts of a run with their images, for an offline check.

Writes `DIR/verdicts.csv` (the winning verdict per id, with the decision the rules gave it),
`DIR/reviews.csv` (those verdicts in the reviews.csv format, for `gld select --reviews`),
`DIR/images/<id>.jpg` (the stored images) and `DIR/index.html` (a static page: each verdict
beside its image). Verdicts for ids the run does not have are listed with an empty decision.
"""

from __future__ import annotations

import csv
import io
from html import escape
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from pipeline.review.pictures import Pictures
from schemas.reviews import HEADER_LINE, REVIEWS_NAME, format_review, read_reviews
from transforms.matching.verify import VerifyConfig
from transforms.plumbing.store import read_table

VERDICT_COLUMNS = ("id", "verdict", "landmark_id", "note", "rule_landmark_id", "rule_status", "rule_reason", "image")


def _decisions_of(output: str, ids: list[str]) -> dict[str, dict]:
    table = read_table(FileSystems.join(output, "decisions.parquet"), ["id", "landmark_id", "status", "reason"])
    wanted = table.filter(pc.is_in(table["id"], value_set=pa.array(ids, pa.string())))
    return {row["id"]: row for row in wanted.to_pylist()}


def export_reviews(output: str, run: dict[str, Any], dest: str) -> dict[str, Any]:
    """Write the export of `output`'s reviews.csv under `dest`; returns a summary (counts)."""
    with open(Path(output) / REVIEWS_NAME, encoding="utf-8") as handle:
        log = read_reviews(handle)
    ids = list(log.latest)
    decisions = _decisions_of(output, ids)
    pictures = Pictures(run["outputs"]["images"], "", ids, VerifyConfig(**run["config"]["verify"]))
    folder = Path(dest)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for image_id, review in log.latest.items():
        jpeg = pictures.image(image_id)
        image = ""
        if jpeg is not None:
            image = f"images/{image_id}.jpg"
            (folder / image).write_bytes(jpeg)
        rule = decisions.get(image_id, {})
        rows.append(
            {
                "id": image_id,
                "verdict": review.verdict.value,
                "landmark_id": "" if review.landmark_id is None else review.landmark_id,
                "note": review.note,
                "rule_landmark_id": rule.get("landmark_id", ""),
                "rule_status": rule.get("status", ""),
                "rule_reason": rule.get("reason", ""),
                "image": image,
            }
        )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, VERDICT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "verdicts.csv").write_text(buffer.getvalue(), encoding="utf-8")
    (folder / REVIEWS_NAME).write_text(
        HEADER_LINE + "".join(format_review(r) for r in log.latest.values()), encoding="utf-8"
    )
    (folder / "index.html").write_text(_page(output, rows), encoding="utf-8")
    return {
        "export": str(folder),
        "verdicts": len(rows),
        "images": sum(1 for r in rows if r["image"]),
        "unknown_ids": sum(1 for r in rows if not r["rule_status"]),
        "unreadable_lines": sum(log.issues.values()),
    }


def _page(output: str, rows: list[dict]) -> str:
    figures = "".join(
        "<figure>"
        + (f'<img src="{escape(r["image"])}" alt="{escape(r["id"])}">' if r["image"] else "<p>(no stored image)</p>")
        + f"<figcaption><b>{escape(r['verdict'])}"
        + (f" to {escape(str(r['landmark_id']))}" if r["verdict"] == "relabel" else "")
        + f"</b> {escape(r['id'])}<br>rule: {escape(str(r['rule_status']) or 'no such image')}"
        + (f" ({escape(r['rule_reason'])}) in class {escape(str(r['rule_landmark_id']))}" if r["rule_status"] else "")
        + (f"<br>note: {escape(r['note'])}" if r["note"] else "")
        + "</figcaption></figure>"
        for r in rows
    )
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>gld review export</title><style>"
        "body{font-family:sans-serif;margin:24px}figure{display:inline-block;width:330px;vertical-align:top;"
        "margin:6px}img{max-width:320px;max-height:320px}figcaption{font-size:12px}</style></head><body>"
        f"<h1>Reviewed verdicts of {escape(output)}</h1><p>{len(rows)} verdicts (the last one per image).</p>"
        f"{figures}</body></html>\n"
    )
