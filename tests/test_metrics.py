"""gld score: the official test vectors, the official parsing rules, metric invariants
(hypothesis) and the Revisited Oxford/Paris protocols."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.baselines.metrics import (
    RevisitedGroundTruth,
    average_precision,
    load_revisited_ground_truth,
    mean_average_precision,
    mean_precisions,
    parse_predictions,
    parse_solution,
    recognition_scores,
    retrieval_scores,
    revisited_protocol,
    revisited_scores,
    trapezoid_average_precision,
)


def csv_text(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows]) + "\n"


RECOGNITION_SOLUTION = csv_text(
    "id,landmarks,Usage",
    ["A,0 12,Public", "B,100 200 300,Public", "C,1,Public", "D,,Public", "E,,Public"],
)
RETRIEVAL_SOLUTION = csv_text("id,images,Usage", ["A,10 20,Public", "B,10,Public", "C,30 40 50,Public", "D,30,Public"])


def test_official_recognition_vector():
    predictions = csv_text("id,landmarks", ["B,0 0.01", "C,1 10.0", "D,150 15.0"])
    public = recognition_scores(RECOGNITION_SOLUTION, predictions)["public"]
    assert public["gap"] == pytest.approx(1 / 6, abs=1e-12)
    assert public["gap_ignore_nonlandmarks"] == pytest.approx(1 / 3, abs=1e-12)
    assert public["top1"] == pytest.approx(1 / 3, abs=1e-12)
    assert recognition_scores(RECOGNITION_SOLUTION, predictions)["private"] == {
        "gap": None,
        "gap_ignore_nonlandmarks": None,
        "top1": None,
    }


def test_official_retrieval_vector():
    predictions = csv_text("id,images", ["B,00 10", "C,40", "D,30 40"])
    public = retrieval_scores(RETRIEVAL_SOLUTION, predictions)["public"]
    assert public["map@100"] == pytest.approx(0.458333, abs=1e-6)
    assert public["p@1"] == pytest.approx(0.5)
    assert public["mean_position"] == pytest.approx(26.25)
    assert public["median_position"] == pytest.approx(1.5)
    solution = parse_solution(RETRIEVAL_SOLUTION, "retrieval")
    parsed, _ = parse_predictions(predictions, solution, "retrieval")
    assert mean_average_precision(parsed, solution.public, depth=1) == pytest.approx(0.5)
    assert mean_precisions(parsed, solution.public, ranks=(1, 2)) == pytest.approx({1: 0.5, 2: 0.375})


def test_official_tie_and_duplicate_vectors():
    solution = csv_text("id,landmarks,Usage", ["q1,5,Public", "q2,7,Public"])
    predictions = csv_text("id,landmarks", ["q2,7 1.0", "q1,9 1.0"])
    assert recognition_scores(solution, predictions)["public"]["gap"] == pytest.approx(0.25)
    assert average_precision(["x", "x", "g"], ["g"]) == pytest.approx(1 / 3)


def test_trailing_space_and_empty_prediction():
    predictions = csv_text("id,images", ["B,10 ", "C,", "D,30 40 "])
    solution = parse_solution(RETRIEVAL_SOLUTION, "retrieval")
    public, _ = parse_predictions(predictions, solution, "retrieval")
    assert public == {"B": ["10"], "D": ["30", "40"]}
    recognition = parse_solution(RECOGNITION_SOLUTION, "recognition")
    parsed, _ = parse_predictions(csv_text("id,landmarks", ["C,1 0.5 ", "B,"]), recognition, "recognition")
    assert list(parsed) == ["C"] and parsed["C"].landmark_id == 1 and parsed["C"].score == 0.5


def test_repeated_unknown_and_malformed_rows_are_errors():
    solution = parse_solution(RETRIEVAL_SOLUTION, "retrieval")
    with pytest.raises(ValueError, match="repeated"):
        parse_predictions(csv_text("id,images", ["B,10", "B,20"]), solution, "retrieval")
    with pytest.raises(ValueError, match="not in the solution"):
        parse_predictions(csv_text("id,images", ["Z,10"]), solution, "retrieval")
    # the official reader only remembers ids that had a prediction: an empty one may repeat
    public, _ = parse_predictions(csv_text("id,images", ["B,", "B,10"]), solution, "retrieval")
    assert public == {"B": ["10"]}
    recognition = parse_solution(RECOGNITION_SOLUTION, "recognition")
    with pytest.raises(ValueError, match="landmark_id"):
        parse_predictions(csv_text("id,landmarks", ["A,0"]), recognition, "recognition")
    with pytest.raises(ValueError, match="landmark_id"):
        parse_predictions(csv_text("id,landmarks", ["A,0 1.0 2"]), recognition, "recognition")
    with pytest.raises(ValueError, match="Usage"):
        parse_solution(csv_text("id,images,Usage", ["A,1,Secret"]), "retrieval")


def test_ignored_rows_and_blank_lines():
    solution_text = csv_text("id,images,Usage", ["A,1,Public", "I,None,Ignored", "P,2,Private"])
    solution = parse_solution(solution_text, "retrieval")
    assert solution.ignored == frozenset({"I"}) and "I" not in solution.public
    public, private = parse_predictions(csv_text("id,images", ["I,1", "", "I,2", "A,1", "P,3"]), solution, "retrieval")
    assert public == {"A": ["1"]} and private == {"P": ["3"]}
    scores = retrieval_scores(solution_text, csv_text("id,images", ["I,1", "A,1", "P,3"]))
    assert scores["public"]["map@100"] == 1.0 and scores["private"]["map@100"] == 0.0


ids = st.sampled_from([f"i{n}" for n in range(30)])
rankings = st.lists(ids, max_size=120)
truths = st.lists(ids, min_size=1, max_size=12, unique=True)


@settings(max_examples=150, deadline=None)
@given(rankings, truths)
def test_average_precision_bounds_and_duplicates(ranking, truth):
    ap = average_precision(ranking, truth)
    assert 0.0 <= ap <= 1.0
    if ranking:
        # repeating the first id takes a rank and scores nothing: AP never rises
        assert average_precision([ranking[0], *ranking], truth) <= ap + 1e-12
    # nothing past rank 100 counts
    top = [*ranking, *["pad"] * 100][:100]
    assert average_precision([*top, *truth], truth) == average_precision(top, truth)


@settings(max_examples=100, deadline=None)
@given(truths, st.randoms(use_true_random=False))
def test_perfect_ranking_scores_one(truth, rng):
    shuffled = list(truth)
    rng.shuffle(shuffled)
    assert average_precision([*shuffled, "zz"], truth) == pytest.approx(1.0)


queries = st.dictionaries(st.sampled_from([f"q{n}" for n in range(12)]), st.tuples(truths, rankings), min_size=1)


@settings(max_examples=100, deadline=None)
@given(queries, st.randoms(use_true_random=False))
def test_retrieval_scores_bounds_and_row_order(data, rng):
    solution = csv_text("id,images,Usage", [f"{q},{' '.join(t)},Public" for q, (t, _) in data.items()])
    rows = [f"{q},{' '.join(r)}" for q, (_, r) in data.items()]
    scores = retrieval_scores(solution, csv_text("id,images", rows))["public"]
    for key in ("map@100", "p@1", "p@5", "p@10", "p@50", "p@100"):
        assert 0.0 <= scores[key] <= 1.0
    assert 1.0 <= scores["median_position"] <= 101.0 and 1.0 <= scores["mean_position"] <= 101.0
    rng.shuffle(rows)
    shuffled = retrieval_scores(solution, csv_text("id,images", rows))["public"]
    assert all(shuffled[k] == pytest.approx(v, abs=1e-12) for k, v in scores.items())


labels = st.integers(0, 6)
recognition_cases = st.dictionaries(
    st.sampled_from([f"q{n}" for n in range(15)]),
    st.tuples(st.lists(labels, max_size=2, unique=True), st.one_of(st.none(), st.tuples(labels, st.floats(0, 5)))),
    min_size=1,
)


@settings(max_examples=150, deadline=None)
@given(recognition_cases)
def test_recognition_bounds_and_correct_predictions(data):
    solution = csv_text("id,landmarks,Usage", [f"{q},{' '.join(map(str, t))},Public" for q, (t, _) in data.items()])
    rows = [f"{q},{p[0]} {p[1]!r}" for q, (_, p) in data.items() if p is not None]
    scores = recognition_scores(solution, csv_text("id,landmarks", rows))["public"]
    if not any(t for t, _ in data.values()):
        assert scores["gap"] is None and scores["top1"] is None
        return
    assert 0.0 <= scores["gap"] <= scores["gap_ignore_nonlandmarks"] <= 1.0
    assert 0.0 <= scores["top1"] <= 1.0
    perfect = [f"{q},{t[0]} {random.Random(q).random()}" for q, (t, _) in data.items() if t]
    assert recognition_scores(solution, csv_text("id,landmarks", perfect))["public"]["gap"] == pytest.approx(1.0)


def test_revisited_toy_check_and_protocols(tmp_path):
    assert trapezoid_average_precision([1, 2, 8], 3) == pytest.approx(0.375)
    toy = revisited_protocol([list(range(10))], [{"easy": [1, 3, 9], "hard": [], "junk": [2]}], "medium")
    assert toy["map"] == pytest.approx(0.375)
    gnd = {
        "imlist": ["a", "b", "c", "d"],
        "qimlist": ["q1", "q2"],
        "gnd": [{"easy": [0], "hard": [2], "junk": [1]}, {"easy": [], "hard": [], "junk": [3]}],
    }
    path = tmp_path / "gnd.json"
    path.write_text(json.dumps(gnd))
    truth = load_revisited_ground_truth(str(path))
    assert isinstance(truth, RevisitedGroundTruth)
    scores = revisited_scores(truth, csv_text("id,images", ["q1,b c d a"]))
    # easy: junk b, c (hard) removed -> a at rank 1 (0-based) after d
    assert scores["easy"]["map"] == pytest.approx(trapezoid_average_precision([1], 1))
    # medium: junk b removed -> c at 0, a at 2
    assert scores["medium"]["map"] == pytest.approx(trapezoid_average_precision([0, 2], 2))
    assert scores["medium"]["mp@1"] == pytest.approx(1.0)
    assert scores["hard"]["map"] == pytest.approx(1.0)  # b junk: c first; a (easy) is junk
    assert revisited_protocol([[]], [{"easy": [], "hard": [], "junk": []}], "easy")["map"] is None
    with pytest.raises(ValueError, match="unknown"):
        revisited_scores(truth, csv_text("id,images", ["q1,zz"]))


def test_gld_score_prints_one_json_object(tmp_path, capsys):
    from pipeline.cli.main import main

    solution = tmp_path / "solution.csv"
    solution.write_text(RETRIEVAL_SOLUTION)
    predictions = tmp_path / "predictions.csv"
    predictions.write_text(csv_text("id,images", ["B,00 10", "C,40", "D,30 40"]))
    assert main(["score", "retrieval", "--solution", str(solution), "--predictions", str(predictions)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed) == {"public", "private"}
    assert printed["public"]["map@100"] == pytest.approx(0.458333, abs=1e-6)
    predictions.write_text(csv_text("id,images", ["B,10", "B,10"]))
    assert main(["score", "retrieval", "--solution", str(solution), "--predictions", str(predictions)]) == 2
