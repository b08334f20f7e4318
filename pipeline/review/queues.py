"""The queues `gld review` offers, built from a finished run's `decisions.parquet` and `audit.parquet`.

Every item is one image, since a verdict is about one image; it comes with the image drawn
beside it (a pair partner), the pair's inliers, the decision and why the item is in the queue.

- `findings`: images in the audit's cross-class findings (suspected mislabels: a verified match
  with an image of another class; duplicates across classes), strongest first; the partner is
  the strongest finding's other image, and the page suggests relabelling to the partners' classes.
- `removed`: removed images of classes that kept others, closest to passing first (most inliers
  with their best partner); the partner is that best partner.
- `weak`: kept images held by the weakest edges: those whose strongest pair has the fewest
  inliers first; the partner is that pair's other image.
- `isolated`: images of small components beside their class's largest: those the isolated-
  component rule removed, and, where the rule was off, the kept ones it would have judged.

Reading is bounded: Arrow filters and sorts the decisions and only `limit` rows a queue become
Python objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from schemas.vocabulary import AuditKind, Reason, Status
from transforms.plumbing.store import read_table

QUEUE_LIMIT = 2000
#: Where `gld review` listens unless told otherwise (loopback only); the report links there.
DEFAULT_PORT = 8765
LOOPBACK = "127.0.0.1"
_DECISION_COLUMNS = [
    "id",
    "landmark_id",
    "status",
    "reason",
    "detail",
    "degree",
    "component_id",
    "component_size",
    "max_inliers",
    "best_partner",
]
#: Audit kinds that pair two images of different classes, in the order the queue shows them.
_FINDING_ORDER = (AuditKind.EXACT_DUPLICATE.value, AuditKind.NEAR_DUPLICATE.value, AuditKind.CROSS_CLASS_MATCH.value)


@dataclass(frozen=True)
class Item:
    """One image to judge: its decision, the image drawn beside it (`partner`, "" for none) with
    the pair's `inliers` (-1 when the pair was not matched, e.g. a duplicate), why it is in its
    queue, and the landmarks a relabel may go to (`suggestions`, from the audit)."""

    id: str
    landmark_id: int
    status: str
    reason: str
    detail: str
    why: str
    partner: str = ""
    partner_landmark: int | None = None
    inliers: int = -1
    suggestions: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "suggestions": list(self.suggestions)}


@dataclass(frozen=True)
class Queue:
    """A named list of items; `total` counts the matching images, `items` holds the first `limit`."""

    name: str
    title: str
    description: str
    items: tuple[Item, ...] = ()
    total: int = 0

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]


@dataclass(frozen=True)
class RunTables:
    """What the queues read: decisions (the columns above) and audit findings (may be empty)."""

    decisions: pa.Table
    audit: pa.Table
    min_inliers: int
    isolated_max_size: int
    suggestions: dict[str, list[int]] = field(default_factory=dict)


def _rows(table: pa.Table, sort_keys: list[tuple[str, str]], limit: int) -> list[dict]:
    return table.sort_by(sort_keys).slice(0, limit).to_pylist()


def _item(row: dict, why: str, suggestions: dict[str, list[int]], partner_landmark: int | None = None) -> Item:
    return Item(
        id=row["id"],
        landmark_id=row["landmark_id"],
        status=row["status"],
        reason=row["reason"],
        detail=row["detail"],
        why=why,
        partner=row["best_partner"],
        partner_landmark=row["landmark_id"] if partner_landmark is None and row["best_partner"] else partner_landmark,
        inliers=row["max_inliers"] if row["best_partner"] else -1,
        suggestions=tuple(suggestions.get(row["id"], ())),
    )


def finding_sides(audit: pa.Table) -> list[dict]:
    """Both sides of every finding that pairs images of two classes, as rows of (id, landmark_id,
    partner, partner_landmark, kind, score), sorted strongest first: exact duplicates, near
    duplicates (closest hash first), then cross-class matches (most inliers first); ties by ids."""
    sides = []
    for row in audit.to_pylist():
        if row["kind"] not in _FINDING_ORDER or row["landmark_a"] == row["landmark_b"]:
            continue
        for me, mine, other, theirs in (
            (row["id_a"], row["landmark_a"], row["id_b"], row["landmark_b"]),
            (row["id_b"], row["landmark_b"], row["id_a"], row["landmark_a"]),
        ):
            sides.append({"id": me, "landmark_id": mine, "partner": other, "partner_landmark": theirs, **_finding(row)})
    return sorted(sides, key=_strength)


def _finding(row: dict) -> dict:
    return {"kind": row["kind"], "score": row["score"], "finding_detail": row["detail"]}


def _strength(side: dict) -> tuple:
    order = _FINDING_ORDER.index(side["kind"])
    score = side["score"] if side["kind"] == AuditKind.NEAR_DUPLICATE.value else -side["score"]
    return (order, score, side["id"], side["partner"])


def suggestions_from(sides: list[dict]) -> dict[str, list[int]]:
    """id -> the classes of its finding partners, strongest finding first, each once."""
    found: dict[str, list[int]] = {}
    for side in sides:
        landmarks = found.setdefault(side["id"], [])
        if side["partner_landmark"] not in landmarks:
            landmarks.append(side["partner_landmark"])
    return found


def _findings_queue(tables: RunTables, sides: list[dict], limit: int) -> Queue:
    by_id = {}
    for side in sides:
        by_id.setdefault(side["id"], side)  # the strongest finding of each image
    wanted = pa.array(list(by_id), pa.string())
    rows = {r["id"]: r for r in tables.decisions.filter(pc.is_in(tables.decisions["id"], value_set=wanted)).to_pylist()}
    items = []
    for image_id, side in by_id.items():
        row = rows.get(image_id)
        if row is None:
            continue
        what = side["kind"].replace("_", " ").replace("cross class", "cross-class")
        matched = side["kind"] == AuditKind.CROSS_CLASS_MATCH.value
        score = f"{side['score']} inliers" if matched else side["finding_detail"]
        items.append(
            Item(
                id=image_id,
                landmark_id=row["landmark_id"],
                status=row["status"],
                reason=row["reason"],
                detail=row["detail"],
                why=f"{what} with {side['partner']} of class {side['partner_landmark']} ({score})",
                partner=side["partner"],
                partner_landmark=side["partner_landmark"],
                inliers=side["score"] if matched else -1,
                suggestions=tuple(tables.suggestions.get(image_id, ())),
            )
        )
    return Queue(
        "findings",
        "Audit findings",
        "images that verify against, or duplicate, an image of another class: mislabelled, or two ids for one landmark",
        tuple(items[:limit]),
        len(items),
    )


def _removed_queue(tables: RunTables, limit: int) -> Queue:
    decisions = tables.decisions
    kept_classes = pc.unique(decisions.filter(pc.equal(decisions["status"], Status.KEPT.value))["landmark_id"])
    removed = decisions.filter(
        pc.and_(
            pc.equal(decisions["status"], Status.REMOVED.value),
            pc.is_in(decisions["landmark_id"], value_set=kept_classes),
        )
    )
    rows = _rows(removed, [("max_inliers", "descending"), ("id", "ascending")], limit)
    items = [
        _item(
            r,
            f"removed ({r['reason']}); best pair {r['max_inliers']} inliers, an edge needs {tables.min_inliers}",
            tables.suggestions,
        )
        if r["best_partner"]
        else _item(r, f"removed ({r['reason']}); no candidate pair", tables.suggestions)
        for r in rows
    ]
    return Queue(
        "removed",
        "Removed beside kept",
        "removed images of classes that kept others, closest to an edge first, drawn with their best pair",
        tuple(items),
        removed.num_rows,
    )


def _weak_queue(tables: RunTables, limit: int) -> Queue:
    decisions = tables.decisions
    kept = decisions.filter(pc.equal(decisions["status"], Status.KEPT.value))
    rows = _rows(kept, [("max_inliers", "ascending"), ("id", "ascending")], limit)
    items = [
        _item(
            r,
            f"kept; its strongest pair has {r['max_inliers']} inliers (an edge needs {tables.min_inliers})",
            tables.suggestions,
        )
        for r in rows
    ]
    return Queue(
        "weak",
        "Weakest kept edges",
        "kept images whose strongest verified pair is the weakest, drawn with that pair",
        tuple(items),
        kept.num_rows,
    )


def _isolated_queue(tables: RunTables, limit: int) -> Queue:
    decisions = tables.decisions
    removed_isolated = pc.equal(decisions["reason"], Reason.ISOLATED_COMPONENT.value)
    kept_beside = pc.and_(
        pc.and_(pc.equal(decisions["status"], Status.KEPT.value), pc.greater(decisions["component_id"], 0)),
        pc.and_(
            pc.greater_equal(decisions["component_size"], 2),
            pc.less_equal(decisions["component_size"], tables.isolated_max_size),
        ),
    )
    isolated = decisions.filter(pc.or_(removed_isolated, kept_beside))
    rows = _rows(isolated, [("landmark_id", "ascending"), ("component_id", "ascending"), ("id", "ascending")], limit)
    items = [
        _item(
            r,
            f"{r['component_size']}-image component {r['component_id']} of class {r['landmark_id']} ({r['status']})",
            tables.suggestions,
        )
        for r in rows
    ]
    return Queue(
        "isolated",
        "Isolated components",
        "small components beside their class's largest: removed by the isolated-component rule, or kept where it "
        "was off",
        tuple(items),
        isolated.num_rows,
    )


def item_url(queue: str, image_id: str, port: int = DEFAULT_PORT) -> str:
    """The review page opened at one item of a queue (the report links these)."""
    return f"http://{LOOPBACK}:{port}/#queue={queue}&id={image_id}"


def build_queues(tables: RunTables, limit: int = QUEUE_LIMIT) -> dict[str, Queue]:
    """The four queues by name, in the order the page shows them."""
    sides = finding_sides(tables.audit)
    tables = RunTables(
        tables.decisions, tables.audit, tables.min_inliers, tables.isolated_max_size, suggestions_from(sides)
    )
    queues = (
        _findings_queue(tables, sides, limit),
        _removed_queue(tables, limit),
        _weak_queue(tables, limit),
        _isolated_queue(tables, limit),
    )
    return {queue.name: queue for queue in queues}


def read_run_tables(output: str, run: dict[str, Any]) -> RunTables:
    """The tables of the run folder `output` whose run.json is `run`."""
    decisions = read_table(FileSystems.join(output, "decisions.parquet"), _DECISION_COLUMNS)
    audit_path = FileSystems.join(output, "audit.parquet")
    audit = read_table(audit_path) if FileSystems.exists(audit_path) else pa.table({"kind": pa.array([], pa.string())})
    select = run["config"]["select"]
    return RunTables(decisions, audit, int(select["min_inliers"]), int(select.get("isolated_max_size", 2)))


def load_queues(output: str, run: dict[str, Any], limit: int = QUEUE_LIMIT) -> dict[str, Queue]:
    """The queues of a finished run (`run`: its run.json, from `finished_run`)."""
    return build_queues(read_run_tables(output, run), limit)
