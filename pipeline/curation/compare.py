"""`gld compare`: image- and class-level agreement of two clean splits in `train_clean.csv` format.

An image agrees when both splits keep it under the same landmark_id. Precision is measured over
OURS, recall over REF; a class agrees when both splits keep it (with any images).
"""

from __future__ import annotations

from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from schemas.gldv2_csv import parse_train_clean


@dataclass(frozen=True)
class ClassDisagreement:
    """How one class differs: images kept by both, only by OURS, only by REF."""

    landmark_id: int
    both: int
    only_ours: int
    only_ref: int

    @property
    def disagreeing(self) -> int:
        return self.only_ours + self.only_ref


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator; 1.0 for 0/0 (two empty sets agree perfectly)."""
    return numerator / denominator if denominator else 1.0


def _labelled_images(classes: dict[int, list[str]]) -> set[tuple[str, int]]:
    return {(image_id, landmark_id) for landmark_id, ids in classes.items() for image_id in ids}


def agreement(ours: dict[int, list[str]], ref: dict[int, list[str]]) -> dict[str, float | int]:
    """The agreement numbers of two parsed splits (landmark_id -> ids); exact ratios, unrounded."""
    ours_images, ref_images = _labelled_images(ours), _labelled_images(ref)
    both = len(ours_images & ref_images)
    ours_classes = {c for c, ids in ours.items() if ids}
    ref_classes = {c for c, ids in ref.items() if ids}
    both_classes = len(ours_classes & ref_classes)
    return {
        "image_precision": _ratio(both, len(ours_images)),
        "image_recall": _ratio(both, len(ref_images)),
        "image_jaccard": _ratio(both, len(ours_images | ref_images)),
        "class_precision": _ratio(both_classes, len(ours_classes)),
        "class_recall": _ratio(both_classes, len(ref_classes)),
        "class_jaccard": _ratio(both_classes, len(ours_classes | ref_classes)),
        "ours_images": len(ours_images),
        "ref_images": len(ref_images),
        "both_images": both,
        "ours_classes": len(ours_classes),
        "ref_classes": len(ref_classes),
        "both_classes": both_classes,
    }


def class_disagreements(ours: dict[int, list[str]], ref: dict[int, list[str]], top: int) -> list[ClassDisagreement]:
    """The `top` classes with the most images kept by only one split (ties: smaller landmark_id)."""
    rows = []
    for landmark_id in set(ours) | set(ref):
        mine, theirs = set(ours.get(landmark_id, ())), set(ref.get(landmark_id, ()))
        row = ClassDisagreement(landmark_id, len(mine & theirs), len(mine - theirs), len(theirs - mine))
        if row.disagreeing:
            rows.append(row)
    return sorted(rows, key=lambda r: (-r.disagreeing, r.landmark_id))[:top]


def format_table(rows: list[ClassDisagreement]) -> str:
    """A fixed-width text table of `class_disagreements` rows."""
    lines = [f"{'landmark_id':>12} {'both':>7} {'only_ours':>10} {'only_ref':>9}"]
    lines += [f"{r.landmark_id:>12} {r.both:>7} {r.only_ours:>10} {r.only_ref:>9}" for r in rows]
    return "\n".join(lines)


def read_split(path: str) -> dict[int, list[str]]:
    with FileSystems.open(path) as handle:
        return parse_train_clean(handle.read().decode("utf-8"))
