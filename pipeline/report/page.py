"""`report.html`: a static page that shows at a glance what a curate run removed and why.

Written by `gld curate` after the run and rebuilt by `gld audit --output DIR`. The page has no
script; charts are inline SVG and pictures are JPEG files in `report_files/` beside it.
"""

from __future__ import annotations

import json
from html import escape

import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from pipeline.report.charts import grouped_bars, horizontal_bars
from pipeline.report.data import (
    ClassCounts,
    ExamplePair,
    class_counts,
    decision_groups,
    example_pairs,
    inlier_histogram,
    ranked_by_removal,
    rows_with_ids,
    size_bins,
)
from pipeline.report.html import Files, pair_figure, table
from pipeline.report.images import thumbnail
from pipeline.report.overlap import overlap_section
from pipeline.review.queues import DEFAULT_PORT, Queue, item_url, load_queues
from schemas.reviews import REVIEWS_NAME, read_reviews
from schemas.tables import features_from_row
from schemas.vocabulary import AUDIT_KINDS, AuditKind, Status
from transforms.matching.verify import VerifyConfig
from transforms.plumbing.store import read_table, stream_batches

REPORT_NAME = "report.html"
_STATUS_COLOURS = {Status.KEPT.value: "#59a14f", Status.REMOVED.value: "#f28e2b", Status.FAILED.value: "#e15759"}
_NOISY_CLASSES_SHOWN = 3
_THUMBS_PER_SIDE = 6
_CROSS_CLASS_DRAWN = 2
_TABLE_ROWS = 20
_HIST_BINS = 16
_INPUTS = ("run.json", "decisions.parquet", "pairs.parquet", "audit.parquet")
_FEATURE_COLUMNS = ["landmark_id", "line", "width", "height", "keypoints", "descriptors", "scales", "scores"]
_FINDING_COLUMNS = ("kind", "landmark_a", "id_a", "landmark_b", "id_b", "score", "detail")

_CSS = """
body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.thumbs{display:flex;flex-wrap:wrap;gap:6px}.thumbs figure{margin:0;font-size:11px;width:164px}
.thumbs img{max-width:160px;max-height:160px;display:block}.kept img{border:3px solid #59a14f}
.removed img{border:3px solid #f28e2b}figure.pair{margin:12px 0}figure.pair img{max-width:100%}
.note{color:#666;font-size:13px}
"""


def _counts_section(counts: dict) -> str:
    statuses = [(status, n, _STATUS_COLOURS.get(status, "#999")) for status, n in counts["by_status"].items()]
    reasons = [
        (key, n, _STATUS_COLOURS.get(key.split("/")[0], "#999"))
        for key, n in sorted(counts["by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return (
        "<h2>What happened to every input row</h2>"
        + horizontal_bars("rows by status", statuses)
        + horizontal_bars("rows by status / reason", reasons)
    )


def _sizes_section(classes: dict[int, ClassCounts]) -> str:
    labels_before, before = size_bins(c.total for c in classes.values())
    labels_after, after = size_bins(c.kept for c in classes.values())
    labels = labels_before if len(labels_before) >= len(labels_after) else labels_after
    series = {
        "before (input rows)": before + [0] * (len(labels) - len(before)),
        "after (kept images)": after + [0] * (len(labels) - len(after)),
    }
    kept_classes = sum(1 for c in classes.values() if c.kept)
    return (
        "<h2>Class sizes before and after</h2>"
        f'<p class="note">{len(classes)} classes in the input, {kept_classes} with kept images. '
        "Sizes are binned by powers of two; both axes are logarithmic.</p>"
        + grouped_bars(
            "classes per size bin", labels, series, log_y=True, x_label="images per class", y_label="classes"
        )
    )


def _inliers_section(pairs_path: str, min_inliers: int) -> str:
    width = max(1, min_inliers // 6)
    batches = (batch.column(0).to_numpy() for batch in stream_batches(pairs_path, ["inliers"]))
    histogram = inlier_histogram(batches, width, _HIST_BINS)
    return (
        "<h2>Inliers of the verified candidate pairs</h2>"
        f'<p class="note">{sum(histogram.counts)} pairs; an edge needs at least {min_inliers} inliers '
        "(red line). Log scale.</p>"
        + grouped_bars(
            "pairs per inlier bin",
            histogram.labels,
            {"pairs": list(histogram.counts)},
            log_y=True,
            marker_at=min_inliers / width,
            marker_label=f">= {min_inliers}: edge",
            x_label="RANSAC inliers",
            y_label="pairs",
        )
    )


def _ranked_section(ranked: list[ClassCounts]) -> str:
    rows = [
        [c.landmark_id, c.total, c.kept, c.removed, c.failed, f"{c.removal_rate:.0%}", c.reasons.most_common(1)[0][0]]
        for c in ranked
    ]
    return "<h2>Classes ranked by removal rate</h2>" + table(
        ["landmark_id", "rows", "kept", "removed", "failed", "removed / verifiable", "main reason"], rows
    )


def _thumbs(files: Files, jpegs: dict[str, bytes], items: list[tuple[str, str, str]]) -> str:
    """Figures for (id, css class, caption) items whose image is stored."""
    figures = []
    for image_id, css, caption in items:
        if image_id in jpegs:
            src = files.write(f"thumb-{image_id}.jpg", thumbnail(jpegs[image_id]))
            figures.append(
                f'<figure class="{css}"><img src="{escape(src)}" alt="{escape(image_id)}">'
                f"<figcaption>{escape(image_id)}<br>{escape(caption)}</figcaption></figure>"
            )
    return '<div class="thumbs">' + "".join(figures) + "</div>"


def _finding_rows(findings: dict[str, list]) -> list[tuple]:
    """audit.parquet columns -> (kind, landmark_a, id_a, landmark_b, id_b, score, detail) rows."""
    return list(zip(*(findings.get(k, []) for k in _FINDING_COLUMNS), strict=True))


def _audit_section(findings: dict[str, list]) -> str:
    rows = _finding_rows(findings)
    by_kind: dict[str, list[tuple]] = {}
    for row in rows:
        by_kind.setdefault(row[0], []).append(row)
    class_pairs: dict[tuple[int, int], list[int]] = {}
    for _, lid_a, _, lid_b, _, score, _ in by_kind.get(AuditKind.CROSS_CLASS_MATCH.value, []):
        class_pairs.setdefault(tuple(sorted((lid_a, lid_b))), []).append(score)
    pair_rows = sorted(
        ([a, b, len(s), max(s)] for (a, b), s in class_pairs.items()), key=lambda r: (-r[2], -r[3], r[0], r[1])
    )
    duplicates = sorted(
        by_kind.get(AuditKind.EXACT_DUPLICATE.value, []) + by_kind.get(AuditKind.NEAR_DUPLICATE.value, []),
        key=lambda r: (r[0], r[1], r[2], r[4]),
    )
    splits = sorted(by_kind.get(AuditKind.SPLIT_CLASS.value, []), key=lambda r: (-r[5], r[1]))
    summary = [[kind, len(by_kind.get(kind, []))] for kind in AUDIT_KINDS]
    return (
        "<h2>Label-noise audit (audit.parquet)</h2>"
        + table(["finding", "count"], summary)
        + "<h3>Class pairs with images that verify across classes</h3>"
        + '<p class="note">Likely mislabeled images, or two ids for one landmark.</p>'
        + table(["landmark_a", "landmark_b", "matching pairs", "best inliers"], pair_rows[:_TABLE_ROWS], left=0)
        + "<h3>Duplicates across classes</h3>"
        + table(
            ["kind", "landmark_a", "id_a", "landmark_b", "id_b", "score", "detail"],
            [list(r) for r in duplicates[:_TABLE_ROWS]],
        )
        + "<h3>Classes that split into several large components</h3>"
        + '<p class="note">Possibly several landmarks under one id.</p>'
        + table(
            ["landmark_id", "large components", "detail"], [[r[1], r[5], r[6]] for r in splits[:_TABLE_ROWS]], left=0
        )
    )


def _noisy_thumbnails(decisions: pa.Table, noisy: list[ClassCounts]) -> dict[int, list[tuple[str, str, str]]]:
    """Per noisy class, up to `_THUMBS_PER_SIDE` kept and removed (id, status, caption), by id."""
    wanted = pa.array([c.landmark_id for c in noisy], pa.int64())
    rows = decisions.filter(pc.is_in(decisions.column("landmark_id"), value_set=wanted)).to_pylist()
    shown: dict[int, list[tuple[str, str, str]]] = {c.landmark_id: [] for c in noisy}
    for row in sorted(rows, key=lambda r: (r["status"] != Status.KEPT.value, r["id"])):
        items = shown[row["landmark_id"]]
        if (
            row["status"] in (Status.KEPT.value, Status.REMOVED.value)
            and sum(i[1] == row["status"] for i in items) < _THUMBS_PER_SIDE
        ):
            items.append((row["id"], row["status"], f"{row['status']}: {row['reason']}"))
    return shown


def _examples(pairs_path: str, findings: dict[str, list], min_inliers: int) -> list[ExamplePair]:
    """Within-class examples (strongest/weakest edge, strongest rejected) + the best cross-class matches."""
    examples = example_pairs(stream_batches(pairs_path, ["landmark_id", "id_a", "id_b", "inliers"]), min_inliers)
    cross = sorted(
        (r for r in _finding_rows(findings) if r[0] == AuditKind.CROSS_CLASS_MATCH.value),
        key=lambda r: (-r[5], r[2], r[4]),
    )
    examples += [ExamplePair("verifies across classes", *r[1:6]) for r in cross[:_CROSS_CLASS_DRAWN]]
    return examples


def _rule(config: dict) -> str:
    select = config["select"]
    if select["policy"] == "degree":
        per_image = f">= {select['min_degree']} edges per image"
    else:
        per_image = f"components of >= {select['min_component_size']}"
        per_image += ", largest only" if select.get("largest_component_only") else ""
        if select.get("drop_isolated_components"):
            per_image += (
                f", isolated components of <= {select['isolated_max_size']} dropped"
                f" (no pair of >= {select['isolation_inliers']} inliers to the rest of the class)"
            )
    return (
        f"policy {select['policy']}: edges of >= {select['min_inliers']} inliers, {per_image}, "
        f"classes of >= {select['min_class_size']} survivors"
    )


_REVIEW_LINKS = 5


def _reviewed_ids(output: str) -> set[str]:
    """The ids with a verdict in `<output>/reviews.csv` (none without the file)."""
    path = FileSystems.join(output, REVIEWS_NAME)
    if not FileSystems.exists(path):
        return set()
    with FileSystems.open(path) as handle:
        return set(read_reviews(handle.read().decode("utf-8", errors="replace").splitlines()).latest)


def _queue_row(queue: Queue, reviewed: set[str]) -> str:
    done = sum(1 for image_id in queue.ids if image_id in reviewed)
    open_ids = [image_id for image_id in queue.ids if image_id not in reviewed][:_REVIEW_LINKS]
    links = " ".join(f'<a href="{escape(item_url(queue.name, i))}">{escape(i)}</a>' for i in open_ids)
    first = queue.ids[0] if queue.ids else ""
    title = f'<a href="{escape(item_url(queue.name, first))}">{escape(queue.title)}</a>' if first else queue.title
    return (
        f"<tr><td class=l>{title}</td><td>{queue.total}</td><td>{done}</td><td>{queue.total - done}</td>"
        f"<td class=l>{links or 'none'}</td></tr>"
    )


def _review_section(output: str, run: dict) -> str:
    """Counts of reviewed and unreviewed items per `gld review` queue, with links to the page."""
    queues = load_queues(output, run)
    reviewed = _reviewed_ids(output)
    head = (
        "<tr><th class=l>queue</th><th>items</th><th>reviewed</th><th>unreviewed</th>"
        "<th class=l>next to review</th></tr>"
    )
    return (
        "<h2>Review by eye (gld review)</h2>"
        # the folder is not named: the page of a run is the same wherever the run lies
        f'<p class="note">Start <code>gld review --output DIR</code> (port {DEFAULT_PORT}) on this run, then '
        f"follow a link; verdicts go to {REVIEWS_NAME}, and <code>gld select --output DIR --reviews "
        f"DIR/{REVIEWS_NAME}</code> applies them ({len(reviewed)} reviewed images in {REVIEWS_NAME}).</p>"
        f"<table>{head}{''.join(_queue_row(q, reviewed) for q in queues.values())}</table>"
    )


def _overlap_html(output: str, run: dict, files: Files, verify: VerifyConfig) -> str:
    """The `gld overlap` section (`pipeline.report.overlap`)."""
    return overlap_section(output, run, files, verify)


def build_report(output: str, run: dict | None = None) -> str:
    """Rebuild `<output>/report.html` (and `report_files/`) from a curate output; returns its path.
    `run`: the run summary when it is not yet committed as `run.json` (a run writes the report
    before its commit marker); read from `run.json` when None."""
    paths = {name: FileSystems.join(output, name) for name in _INPUTS}
    if run is None:
        with FileSystems.open(paths["run.json"]) as handle:
            run = json.loads(handle.read())
    config = run["config"]
    min_inliers = int(config["select"]["min_inliers"])
    decisions = read_table(paths["decisions.parquet"], ["id", "landmark_id", "status", "reason"])
    classes = class_counts(decision_groups(decisions))
    ranked = ranked_by_removal(classes, _TABLE_ROWS)
    noisy = [c for c in ranked if c.kept][:_NOISY_CLASSES_SHOWN] or ranked[:_NOISY_CLASSES_SHOWN]
    shown = _noisy_thumbnails(decisions, noisy)
    findings = read_table(paths["audit.parquet"]).to_pydict() if FileSystems.exists(paths["audit.parquet"]) else {}
    examples = _examples(paths["pairs.parquet"], findings, min_inliers)

    pair_ids = {i for p in examples for i in (p.id_a, p.id_b)}
    thumb_ids = {item[0] for items in shown.values() for item in items}
    jpegs = {i: r["jpeg"] for i, r in rows_with_ids(run["outputs"]["images"], thumb_ids | pair_ids, ["jpeg"]).items()}
    stored = rows_with_ids(run["outputs"]["features"], pair_ids, _FEATURE_COLUMNS)
    stores = {"jpegs": jpegs, "features": {i: features_from_row(r) for i, r in stored.items()}}
    files = Files(output)
    verify = VerifyConfig(**config["verify"])
    noisy_html = "".join(
        f"<h3>Class {c.landmark_id}: kept {c.kept}, removed {c.removed} ({c.removal_rate:.0%})</h3>"
        + _thumbs(files, jpegs, shown[c.landmark_id])
        for c in noisy
    )
    pairs_html = "".join(pair_figure(files, p, stores, verify) for p in examples)
    html = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>gld curate report</title>"
        f"<style>{_CSS}</style></head><body><h1>gld curate report</h1>"
        f"<p class=note>input {escape(str(config['train_csv']))}; preset {escape(config['preset'])}; "
        f"{escape(_rule(config))}; accounting {'ok' if run['counts'].get('accounting_ok') else 'NOT ok'}</p>"
        + _counts_section(run["counts"])
        + _sizes_section(classes)
        + _inliers_section(paths["pairs.parquet"], min_inliers)
        + _ranked_section(ranked)
        + "<h2>Noisiest classes: kept (green) vs removed (orange)</h2>"
        + (noisy_html or '<p class="note">no class lost an image</p>')
        + "<h2>Example pairs with their inlier matches</h2>"
        + (pairs_html or '<p class="note">no pairs</p>')
        + _audit_section(findings)
        + _review_section(output, run)
        + _overlap_html(output, run, files, verify)
        + "</body></html>\n"
    )
    path = FileSystems.join(output, REPORT_NAME)
    with FileSystems.create(path) as handle:
        handle.write(html.encode("utf-8"))
    return path
