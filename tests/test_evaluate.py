"""gld evaluate: exact blockwise kNN, re-ranking order, and the Beam job's official CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.baselines.evaluate import EvaluateConfig, nearest, predictions_csv, rerank_by_inliers, run_evaluation
from pipeline.baselines.metrics import parse_predictions, parse_solution, recognition_scores, retrieval_scores
from pipeline.baselines.tfrecords import ExportConfig, run_export
from pipeline.baselines.train import SIGNATURE, TrainConfig, run_training
from tests.baseline_data import write_store, write_train_clean


def test_nearest_is_exact_for_any_block_size():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(7, 5)).astype(np.float32)
    index = rng.normal(size=(23, 5)).astype(np.float32)
    index[4] = index[9]  # a tie: the lower position ranks first
    brute = queries @ index.T
    expected = np.lexsort((np.broadcast_to(np.arange(23), brute.shape), -brute), axis=1)[:, :6]
    for block in (1, 4, 23, 100):
        positions, scores = nearest(queries, index, 6, block)
        assert np.array_equal(positions, expected)
        assert np.allclose(scores, np.take_along_axis(brute, expected, axis=1))
    positions, _ = nearest(queries, index[:3], 6, 2)
    assert positions.shape == (7, 3)


def test_rerank_moves_verified_images_up_within_the_top_only():
    ranked = ["a", "b", "c", "d", "e"]
    assert rerank_by_inliers(ranked, {"c": 40, "b": 40, "e": 99}, top=4) == ["b", "c", "a", "d", "e"]


def test_predictions_csv_is_sorted_with_header():
    assert predictions_csv("retrieval", ["q2,a b", "q1,c"]) == "id,images\nq1,c\nq2,a b\n"


INDEX = {lid: [f"{lid:04d}a{i:011x}" for i in range(4)] for lid in (21, 22, 23)}
QUERIES = {lid: [f"{lid:04d}b{i:011x}" for i in range(4, 6)] for lid in (21, 22, 23)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    index = write_store(str(root / "index"), INDEX, size=128)
    queries = write_store(str(root / "queries"), QUERIES, size=128)
    records = str(root / "records")
    run_export(
        ExportConfig(write_train_clean(str(root / "clean.csv"), INDEX), index, records, 1, 1), show_progress=False
    )
    config = TrainConfig(records, str(root / "model"), backbone="tiny", tiny_width=8, image_size=32, steps=0)
    model = run_training(config).saved_model
    return index, queries, model


def _solutions():
    retrieval = ["id,images,Usage"] + [f"{q},{' '.join(INDEX[lid])},Public" for lid, qs in QUERIES.items() for q in qs]
    recognition = ["id,landmarks,Usage"] + [f"{q},{lid},Private" for lid, qs in QUERIES.items() for q in qs]
    return "\n".join(retrieval) + "\n", "\n".join(recognition) + "\n"


def test_evaluate_writes_official_predictions(setup, tmp_path):
    index, queries, model = setup
    retrieval_solution, recognition_solution = _solutions()
    summary = run_evaluation(EvaluateConfig(model, index, queries, str(tmp_path / "r"), top_k=5), show_progress=False)
    assert summary["queries"] == 6
    text = Path(summary["predictions"]).read_text()
    solution = parse_solution(retrieval_solution, "retrieval")
    public, _ = parse_predictions(text, solution, "retrieval")
    assert sorted(public) == sorted(q for qs in QUERIES.values() for q in qs)
    assert all(len(ranked) == 5 and len(set(ranked)) == 5 for ranked in public.values())
    assert 0 <= retrieval_scores(retrieval_solution, text)["public"]["map@100"] <= 1
    again = run_evaluation(EvaluateConfig(model, index, queries, str(tmp_path / "r2"), top_k=5), show_progress=False)
    assert Path(again["predictions"]).read_text() == text

    config = EvaluateConfig(model, index, queries, str(tmp_path / "c"), task="recognition", signature=SIGNATURE)
    recognition = Path(run_evaluation(config, show_progress=False)["predictions"]).read_text()
    assert recognition.startswith("id,landmarks\n")
    scores = recognition_scores(recognition_solution, recognition)["private"]
    assert 0 <= scores["gap"] <= 1 and scores["top1"] is not None


def test_rerank_by_spatial_verification_finds_the_class(setup, tmp_path):
    index, queries, model = setup
    config = EvaluateConfig(model, index, queries, str(tmp_path / "v"), rerank=True, rerank_top=12)
    text = Path(run_evaluation(config, show_progress=False)["predictions"]).read_text()
    retrieval_solution, _ = _solutions()
    assert retrieval_scores(retrieval_solution, text)["public"]["map@100"] > 0.9
