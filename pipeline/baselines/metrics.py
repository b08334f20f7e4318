"""Official GLDv2 metrics and CSV parsing rules, as pure functions (`gld score`).

The rules follow the challenge's scorer (research/delf `datasets/google_landmarks_dataset`
`metrics.py` and `dataset_file_io.py`) exactly, odd cases included, because scores are only
comparable when every team's file is read the same way:

- solution `id,<gt>,Usage`: header skipped; `Ignored` rows only name ids to skip; recognition
  ground truth is a space-separated list of ints (empty = out-of-domain image); retrieval ground
  truth is split on single spaces as it is (so an empty field is one empty id); a repeated id
  keeps its last row.
- predictions `id,<prediction>`: header skipped; blank lines skipped; ids of `Ignored` rows
  skipped; an empty prediction is no prediction; the prediction is split on single spaces and
  one trailing empty piece (a trailing space) dropped; recognition predictions are exactly
  `<landmark_id> <score>`; an id seen twice with a prediction, or unknown, is an error.
- GAP: predictions sorted by score descending, ties by id then class ascending; each counts in
  N, a correct one adds correct/N; divided by the images with ground truth.
- mAP@100: a repeated id scores nothing but keeps its rank; divided by min(|GT|, 100); queries
  without prediction score 0. P@k divides by k past the end of the list. The first-hit position
  is 101 when no hit is in the top 100.

A metric of an empty subset (no query, or no image with ground truth) is undefined and returned
as None, where the official scorer divides by zero.

Revisited Oxford/Paris (`revisited_scores`) follows revisitop's `compute_map`: junk images are
taken out of the ranking, AP is the trapezoid rule over the positives, queries without
positives are skipped.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

RECOGNITION = "recognition"
RETRIEVAL = "retrieval"
TASKS = (RECOGNITION, RETRIEVAL)
MAX_PREDICTIONS = 100
PRECISION_RANKS = (1, 5, 10, 50, 100)
REVISITED_RANKS = (1, 5, 10)
USAGES = ("Public", "Private")


@dataclass(frozen=True)
class RecognitionPrediction:
    landmark_id: int
    score: float


@dataclass(frozen=True)
class Solution:
    """Ground truth per subset: test id -> landmark ids (recognition, ints) or index ids
    (retrieval, strings); `ignored`: ids whose predictions are skipped."""

    public: dict[str, list]
    private: dict[str, list]
    ignored: frozenset[str]


def _rows(text: str) -> csv.reader:
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader, None)  # header
    return reader


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: use one of {TASKS}")


def parse_solution(text: str, task: str) -> Solution:
    """Parse a solution CSV (`id,landmarks,Usage` or `id,images,Usage`).

    Raises ValueError on a row with fewer than 3 columns, a Usage other than
    Public/Private/Ignored, or a recognition landmark id that is not an int.
    """
    _check_task(task)
    subsets: dict[str, dict[str, list]] = {usage: {} for usage in USAGES}
    ignored: set[str] = set()
    for row in _rows(text):
        if len(row) < 3:
            raise ValueError(f"solution row {row!r} needs 3 columns: id, ground truth, Usage")
        test_id, truth, usage = row[0], row[1], row[2]
        if usage == "Ignored":
            ignored.add(test_id)
            continue
        if usage not in subsets:
            raise ValueError(f"test image {test_id} has unknown Usage {usage!r}")
        if task == RECOGNITION:
            subsets[usage][test_id] = [int(piece) for piece in truth.split(" ")] if truth else []
        else:
            subsets[usage][test_id] = truth.split(" ")
    return Solution(subsets["Public"], subsets["Private"], frozenset(ignored))


def _prediction_pieces(field: str) -> list[str]:
    pieces = field.split(" ")
    return pieces[:-1] if not pieces[-1] else pieces


def parse_predictions(text: str, solution: Solution, task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(public, private) predictions: test id -> RecognitionPrediction, or -> list of index ids.

    Raises ValueError on a repeated or unknown test id, a row without a prediction column, or a
    recognition prediction that is not `<int> <float>`.
    """
    _check_task(task)
    public: dict[str, Any] = {}
    private: dict[str, Any] = {}
    for row in _rows(text):
        if not row:
            continue
        test_id = row[0]
        if test_id in public or test_id in private:
            raise ValueError(f"test image {test_id} is repeated")
        if test_id in solution.ignored:
            continue
        if len(row) < 2:
            raise ValueError(f"prediction row {row!r} has no prediction column")
        if not row[1]:
            continue
        pieces = _prediction_pieces(row[1])
        if task == RECOGNITION:
            if len(pieces) != 2:
                raise ValueError(f"prediction of {test_id} must be '<landmark_id> <score>', got {row[1]!r}")
            entry: Any = RecognitionPrediction(int(pieces[0]), float(pieces[1]))
        else:
            entry = pieces
        if test_id in solution.public:
            public[test_id] = entry
        elif test_id in solution.private:
            private[test_id] = entry
        else:
            raise ValueError(f"test image {test_id} is not in the solution")
    return public, private


def global_average_precision(
    predictions: Mapping[str, RecognitionPrediction],
    solution: Mapping[str, Sequence[int]],
    ignore_non_landmarks: bool = False,
) -> float | None:
    """Micro-AP over one prediction per image; None when no image has ground truth.

    With `ignore_non_landmarks`, predictions on images without ground truth are skipped instead
    of counting as wrong.
    """
    positives = sum(1 for truth in solution.values() if truth)
    if positives == 0:
        return None
    # two stable sorts give the official order: score descending, then id, then class ascending
    by_id = sorted(predictions.items(), key=lambda item: (item[0], item[1].landmark_id))
    ordered = sorted(by_id, key=lambda item: item[1].score, reverse=True)
    total = 0
    correct = 0
    gap = 0.0
    for test_id, prediction in ordered:
        if ignore_non_landmarks and not solution[test_id]:
            continue
        total += 1
        if prediction.landmark_id in solution[test_id]:
            correct += 1
            gap += correct / total
    return gap / positives


def top1_accuracy(
    predictions: Mapping[str, RecognitionPrediction], solution: Mapping[str, Sequence[int]]
) -> float | None:
    """Share of images with ground truth whose prediction is right; None when none has any."""
    with_truth = [test_id for test_id, truth in solution.items() if truth]
    if not with_truth:
        return None
    right = sum(1 for i in with_truth if i in predictions and predictions[i].landmark_id in solution[i])
    return right / len(with_truth)


def _hits(ranking: Sequence[str], truth: Sequence[str], depth: int) -> list[bool]:
    """Per rank (up to `depth`), whether the id is relevant and not seen at an earlier rank."""
    seen: set[str] = set()
    hits = []
    for image_id in ranking[:depth]:
        hits.append(image_id not in seen and image_id in truth)
        seen.add(image_id)
    return hits


def average_precision(ranking: Sequence[str], truth: Sequence[str], depth: int = MAX_PREDICTIONS) -> float:
    """AP@depth of one ranked list: sum of P(k) at new relevant ranks over min(|truth|, depth)."""
    correct = 0
    total = 0.0
    for rank, hit in enumerate(_hits(ranking, truth, depth), start=1):
        if hit:
            correct += 1
            total += correct / rank
    return total / min(len(truth), depth)


def mean_average_precision(
    predictions: Mapping[str, Sequence[str]], solution: Mapping[str, Sequence[str]], depth: int = MAX_PREDICTIONS
) -> float | None:
    """mAP@depth over every query of `solution` (missing predictions score 0); None if no query."""
    if not solution:
        return None
    return sum(average_precision(ranking, solution[q], depth) for q, ranking in predictions.items()) / len(solution)


def mean_precisions(
    predictions: Mapping[str, Sequence[str]],
    solution: Mapping[str, Sequence[str]],
    ranks: Sequence[int] = PRECISION_RANKS,
) -> dict[int, float | None]:
    """Mean P@k for each k in `ranks` (k <= 100), over every query of `solution`."""
    if not solution:
        return {k: None for k in ranks}
    sums = dict.fromkeys(ranks, 0.0)
    for query, ranking in predictions.items():
        hits = _hits(ranking, solution[query], MAX_PREDICTIONS)
        for k in ranks:
            sums[k] += sum(hits[:k]) / k
    return {k: sums[k] / len(solution) for k in ranks}


def first_hit_positions(
    predictions: Mapping[str, Sequence[str]], solution: Mapping[str, Sequence[str]]
) -> tuple[float | None, float | None]:
    """(mean, median) rank of the first relevant id per query; 101 when none in the top 100."""
    if not solution:
        return None, None
    positions = [float(MAX_PREDICTIONS + 1)] * len(solution)
    for slot, (query, ranking) in enumerate(predictions.items()):
        truth = solution[query]
        first = next((rank for rank, i in enumerate(ranking[:MAX_PREDICTIONS], start=1) if i in truth), None)
        if first is not None:
            positions[slot] = float(first)
    return sum(positions) / len(positions), float(median(positions))


def recognition_scores(solution_text: str, predictions_text: str) -> dict[str, dict[str, float | None]]:
    """`{"public": {"gap", "gap_ignore_nonlandmarks", "top1"}, "private": {...}}` of two CSV texts."""
    solution = parse_solution(solution_text, RECOGNITION)
    public, private = parse_predictions(predictions_text, solution, RECOGNITION)
    out = {}
    for name, preds, truth in (("public", public, solution.public), ("private", private, solution.private)):
        out[name] = {
            "gap": global_average_precision(preds, truth),
            "gap_ignore_nonlandmarks": global_average_precision(preds, truth, ignore_non_landmarks=True),
            "top1": top1_accuracy(preds, truth),
        }
    return out


def retrieval_scores(solution_text: str, predictions_text: str) -> dict[str, dict[str, float | None]]:
    """`{"public": {"map@100", "p@1", …, "p@100", "mean_position", "median_position"}, "private": …}`."""
    solution = parse_solution(solution_text, RETRIEVAL)
    public, private = parse_predictions(predictions_text, solution, RETRIEVAL)
    out = {}
    for name, preds, truth in (("public", public, solution.public), ("private", private, solution.private)):
        scores: dict[str, float | None] = {"map@100": mean_average_precision(preds, truth)}
        scores.update({f"p@{k}": value for k, value in mean_precisions(preds, truth).items()})
        scores["mean_position"], scores["median_position"] = first_hit_positions(preds, truth)
        out[name] = scores
    return out


# --- Revisited Oxford / Paris ---------------------------------------------------------------

PROTOCOLS = {
    # protocol: (positive groups, junk groups)
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


@dataclass(frozen=True)
class RevisitedGroundTruth:
    """revisitop's ground truth: index names `imlist`, query names `qimlist`, and per query the
    index positions of its `easy`, `hard` and `junk` images."""

    imlist: list[str]
    qimlist: list[str]
    gnd: list[dict[str, list[int]]]


def load_revisited_ground_truth(path: str) -> RevisitedGroundTruth:
    """Read `gnd_roxford5k.pkl`-style ground truth (revisitop's pickle; only trusted files) or
    the same dictionary as JSON (`.json`)."""
    with open(path, "rb") as handle:
        raw = json.load(handle) if path.endswith(".json") else pickle.load(handle)
    groups = ("easy", "hard", "junk")
    gnd = [{group: [int(i) for i in entry.get(group, [])] for group in groups} for entry in raw["gnd"]]
    return RevisitedGroundTruth(list(raw["imlist"]), list(raw["qimlist"]), gnd)


def trapezoid_average_precision(positive_ranks: Sequence[int], positives: int) -> float:
    """revisitop's AP: `positive_ranks` are the 0-based ranks of the positives found (junk already
    taken out, ascending); `positives` the number of positives of the query."""
    ap = 0.0
    for found, rank in enumerate(positive_ranks):
        before = 1.0 if rank == 0 else found / rank
        after = (found + 1) / (rank + 1)
        ap += (before + after) / (2.0 * positives)
    return ap


def _junk_free_ranks(ranking: Sequence[int], positives: set[int], junk: set[int]) -> list[int]:
    ranks = []
    junk_seen = 0
    for rank, index in enumerate(ranking):
        if index in junk:
            junk_seen += 1
        elif index in positives:
            ranks.append(rank - junk_seen)
    return ranks


def revisited_protocol(
    rankings: Sequence[Sequence[int]], gnd: Sequence[Mapping[str, Sequence[int]]], protocol: str
) -> dict[str, float | None]:
    """`{"map", "mp@1", "mp@5", "mp@10"}` of one protocol; rankings[q] are index positions, best
    first. Queries without positives are skipped; None when every query is."""
    positive_groups, junk_groups = PROTOCOLS[protocol]
    aps = []
    precisions: dict[int, list[float]] = {k: [] for k in REVISITED_RANKS}
    for ranking, truth in zip(rankings, gnd, strict=True):
        positives = {i for group in positive_groups for i in truth[group]}
        if not positives:
            continue
        junk = {i for group in junk_groups for i in truth[group]} - positives
        ranks = _junk_free_ranks(ranking, positives, junk)
        aps.append(trapezoid_average_precision(ranks, len(positives)))
        for k in REVISITED_RANKS:
            depth = min(ranks[-1] + 1, k) if ranks else k
            precisions[k].append(sum(1 for r in ranks if r < depth) / depth)
    if not aps:
        return {"map": None, **{f"mp@{k}": None for k in REVISITED_RANKS}}
    return {"map": sum(aps) / len(aps), **{f"mp@{k}": sum(v) / len(v) for k, v in precisions.items()}}


def revisited_scores(ground_truth: RevisitedGroundTruth, predictions_text: str) -> dict[str, dict[str, float | None]]:
    """Easy/Medium/Hard scores of a retrieval predictions CSV (`id,images`, query and index names
    as in the ground truth). A query without a row has an empty ranking. Raises ValueError on
    unknown or repeated names."""
    index_of = {name: position for position, name in enumerate(ground_truth.imlist)}
    query_slot = {name: slot for slot, name in enumerate(ground_truth.qimlist)}
    rankings: list[list[int]] = [[] for _ in ground_truth.qimlist]
    seen: set[str] = set()
    for row in _rows(predictions_text):
        if not row:
            continue
        if row[0] not in query_slot or row[0] in seen:
            raise ValueError(f"query {row[0]!r} is unknown or repeated")
        seen.add(row[0])
        names = _prediction_pieces(row[1]) if len(row) > 1 and row[1] else []
        unknown = [name for name in names if name not in index_of]
        if unknown:
            raise ValueError(f"query {row[0]} ranks unknown index images {unknown[:3]}")
        rankings[query_slot[row[0]]] = [index_of[name] for name in names]
    return {protocol: revisited_protocol(rankings, ground_truth.gnd, protocol) for protocol in PROTOCOLS}
