"""`gld evaluate`: embed index and query images with a trained SavedModel (Beam `RunInference`),
rank the index for every query by exact kNN on cosine similarity, optionally re-rank the top
of each list by spatial verification, and write the predictions in the official CSV formats.

- retrieval: `retrieval_predictions.csv`, `id,images` with the `top_k` (100) best index ids;
- recognition: `recognition_predictions.csv`, `id,landmarks` with `<landmark_id> <score>` of
  the nearest index image (the index is then a labelled set, e.g. the training images).

Re-ranking (`rerank`): the first `rerank_top` (100) index images of a query are re-ordered by
the inlier count of SIFT matching + affine RANSAC (transforms/matching/verify.py, the curation verifier),
ties keeping the embedding order; the rest of the list is unchanged.

kNN is a blockwise matmul over the index (`index_block` rows at a time), so the similarity
matrix stays at queries-per-bundle x index_block floats; the index embeddings themselves
(N x D float32, 1.5 GB for GLDv2's 762k index images at D = 512) are one side input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from pipeline.baselines.metrics import RECOGNITION, RETRIEVAL, TASKS
from pipeline.baselines.train import BATCH_SIGNATURE, OUTPUT_NAME
from pipeline.runner import run_pipeline, write_json
from schemas.records import DecodedImage, LocalFeatures, ManifestRow
from schemas.tables import image_from_row
from transforms.features.extractors.config import FeatureConfig
from transforms.features.extractors.sift import SiftExtractor
from transforms.features.stage import extract_features
from transforms.ingest.decode import stored_pixels
from transforms.ingest.image_store import part_files, read_rows
from transforms.matching.verify import VerifyConfig, verify_pair
from transforms.plumbing.progress import tick

STAGE = "evaluate"
PREDICTION_FILES = {RETRIEVAL: "retrieval_predictions.csv", RECOGNITION: "recognition_predictions.csv"}
HEADERS = {RETRIEVAL: "id,images", RECOGNITION: "id,landmarks"}


@dataclass(frozen=True)
class EvaluateConfig:
    """`model`: SavedModel of `gld train` (or any with an image -> `embedding` signature);
    `index_images`, `query_images`: image store folders (`images/` of `gld ingest`)."""

    model: str
    index_images: str
    query_images: str
    output: str
    task: str = RETRIEVAL
    signature: str = BATCH_SIGNATURE
    top_k: int = 100
    index_block: int = 65536
    batch_size: int = 32
    rerank: bool = False
    rerank_top: int = 100
    rerank_features: int = 1000

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}")
        if min(self.top_k, self.index_block, self.batch_size, self.rerank_top, self.rerank_features) < 1:
            raise ValueError("top_k, index_block, batch_size, rerank_top and rerank_features must be >= 1")


# --- pure functions ---------------------------------------------------------------------------


def nearest(queries: np.ndarray, index: np.ndarray, k: int, index_block: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine for L2-normalised rows), one index block at a time.

    queries [Q, D], index [N, D] float32 -> (positions [Q, min(k, N)] int64 into `index`, scores
    [Q, min(k, N)] float32), best first; equal scores are ordered by position.
    """
    keep = min(k, len(index))
    best_pos = np.zeros((len(queries), 0), np.int64)
    best_score = np.zeros((len(queries), 0), np.float32)
    for start in range(0, len(index), index_block):
        scores = queries @ index[start : start + index_block].T
        if scores.shape[1] > keep:
            top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
            scores = np.take_along_axis(scores, top, axis=1)
            positions = top + start
        else:
            positions = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        all_pos = np.concatenate([best_pos, positions], axis=1)
        all_score = np.concatenate([best_score, scores], axis=1)
        order = np.lexsort((all_pos, -all_score), axis=1)[:, :keep]
        best_pos = np.take_along_axis(all_pos, order, axis=1)
        best_score = np.take_along_axis(all_score, order, axis=1)
    return best_pos, best_score


def rerank_by_inliers(ranked: Sequence[str], inliers: dict[str, int], top: int) -> list[str]:
    """The first `top` ids re-ordered by inliers (descending; ties keep their order), then the rest."""
    head = sorted(ranked[:top], key=lambda i: -inliers.get(i, 0))
    return head + list(ranked[top:])


def retrieval_line(query_id: str, ranked: Sequence[str]) -> str:
    return f"{query_id},{' '.join(ranked)}"


def recognition_line(query_id: str, landmark_id: int, score: float) -> str:
    return f"{query_id},{landmark_id} {score:.6f}"


def predictions_csv(task: str, lines: Iterable[str]) -> str:
    return HEADERS[task] + "\n" + "".join(line + "\n" for line in sorted(lines))


# --- Beam wiring ------------------------------------------------------------------------------


class EmbeddingModelHandler(ModelHandler[np.ndarray, np.ndarray, Any]):
    """RunInference handler around `tf.saved_model.load(path).signatures[signature]`.

    Beam's stock TensorFlow handlers load through Keras, which cannot load a plain SavedModel
    under Keras 3. Examples are uint8 RGB [H, W, 3]; a batch signature ([B, H, W, 3]) is called
    once per group of equal-sized images, a single-image one once per image. Inference is the
    signature's `embedding` (or only) output, float32 [D].
    """

    def __init__(self, path: str, signature: str, batch_size: int) -> None:
        self._path = path
        self._signature = signature
        self._batch_size = batch_size

    def load_model(self) -> Any:
        import tensorflow as tf

        loaded = tf.saved_model.load(self._path)
        if self._signature not in loaded.signatures:
            raise ValueError(f"{self._path} has no signature {self._signature!r}: {sorted(loaded.signatures)}")
        return loaded

    def run_inference(
        self, batch: Sequence[np.ndarray], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        import tensorflow as tf

        function = model.signatures[self._signature]
        ((name, spec),) = function.structured_input_signature[1].items()
        outputs = function.structured_outputs
        output = OUTPUT_NAME if OUTPUT_NAME in outputs else next(iter(outputs))
        embeddings: list[np.ndarray | None] = [None] * len(batch)
        if spec.shape.rank == 3:
            for slot, image in enumerate(batch):
                embeddings[slot] = function(**{name: tf.constant(image)})[output].numpy().reshape(-1)
        else:
            by_shape: dict[tuple, list[int]] = {}
            for slot, image in enumerate(batch):
                by_shape.setdefault(image.shape, []).append(slot)
            for slots in by_shape.values():
                result = function(**{name: tf.constant(np.stack([batch[s] for s in slots]))})[output].numpy()
                for slot, vector in zip(slots, result, strict=True):
                    embeddings[slot] = vector.reshape(-1)
        return [PredictionResult(image, vector) for image, vector in zip(batch, embeddings, strict=True)]

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"max_batch_size": self._batch_size}


def _stored_images(pipeline: beam.Pipeline, directory: str, label: str) -> beam.PCollection:
    """(id, DecodedImage) of every image of a store; an id in several parts is kept once."""

    def to_image(row: dict) -> tuple[str, DecodedImage]:
        return row["id"], image_from_row(row, ManifestRow(row["line"], row["id"], row["url"], row["landmark_id"]))

    return (
        pipeline
        | f"List{label}" >> beam.Create(part_files(directory))
        | f"Read{label}" >> beam.FlatMap(read_rows)
        | f"Image{label}" >> beam.Map(to_image)
        | f"Group{label}" >> beam.GroupByKey()
        | f"Once{label}" >> beam.MapTuple(lambda image_id, images: (image_id, next(iter(images))))
    )


def _embed(images: beam.PCollection, config: EvaluateConfig, label: str) -> beam.PCollection:
    handler = KeyedModelHandler(EmbeddingModelHandler(config.model, config.signature, config.batch_size))
    return (
        images
        | f"Pixels{label}" >> beam.MapTuple(lambda image_id, image: (image_id, stored_pixels(image)))
        | f"RunInference{label}" >> RunInference(handler)
        | f"Vector{label}" >> beam.MapTuple(lambda i, result: (i, np.asarray(result.inference, np.float32)))
    )


def _index_matrix(entries: list[tuple[str, np.ndarray, int]]) -> tuple[list[str], np.ndarray, list[int]]:
    """(ids sorted, embeddings [N, D] in that order, landmark ids in that order)."""
    entries = sorted(entries, key=lambda e: e[0])
    if not entries:
        raise ValueError("the index store has no images")
    return [e[0] for e in entries], np.stack([e[1] for e in entries]), [e[2] for e in entries]


def _rank_block(
    block: list[tuple[str, np.ndarray]], index: tuple[list[str], np.ndarray, list[int]], config: EvaluateConfig
) -> Iterator[tuple[str, list[tuple[str, float, int]]]]:
    ids, matrix, labels = index
    positions, scores = nearest(np.stack([v for _, v in block]), matrix, config.top_k, config.index_block)
    for (query_id, _), row_pos, row_score in zip(block, positions, scores, strict=True):
        tick(STAGE, "ranked")
        yield query_id, [(ids[p], float(s), labels[p]) for p, s in zip(row_pos, row_score, strict=True)]


class _FeaturesFn(beam.DoFn):
    """(id, DecodedImage) -> (id, LocalFeatures); an image whose features fail gets none, and so
    0 inliers with every partner."""

    def __init__(self, max_features: int) -> None:
        self._config = FeatureConfig(max_features=max_features)

    def setup(self) -> None:
        self._extractor = SiftExtractor(self._config)

    def process(self, element: tuple[str, DecodedImage]) -> Iterator[tuple[str, LocalFeatures]]:
        image_id, image = element
        features = extract_features(image, self._extractor)
        if isinstance(features, LocalFeatures):
            yield image_id, features
        else:
            tick(STAGE, "rerank_features_failed")


def _wanted_image(joined: tuple[str, dict]) -> list[tuple[str, DecodedImage]]:
    """The index image, once, when some query wants it re-ranked."""
    index_id, groups = joined
    images = list(groups["image"])
    return [(index_id, images[0])] if images and list(groups["queries"]) else []


def _candidate_features(joined: tuple[str, dict]) -> Iterator[tuple[str, tuple[str, LocalFeatures]]]:
    index_id, groups = joined
    for features in list(groups["features"])[:1]:
        for query_id in groups["queries"]:
            yield query_id, (index_id, features)


def _rerank(joined: tuple[str, dict], top: int) -> Iterator[tuple[str, list[tuple[str, float, int]]]]:
    query_id, groups = joined
    for ranked in groups["ranked"]:
        query_features = list(groups["features"])
        inliers: dict[str, int] = {}
        if query_features:
            verify = VerifyConfig()
            for index_id, features in groups["candidates"]:
                inliers[index_id] = verify_pair(query_features[0], features, verify)[1]
        by_id = {entry[0]: entry for entry in ranked}
        order = rerank_by_inliers([entry[0] for entry in ranked], inliers, top)
        tick(STAGE, "reranked")
        yield query_id, [by_id[i] for i in order]


def _prediction_line(task: str) -> Any:
    def line(query_id: str, ranked: list[tuple[str, float, int]]) -> str:
        if task == RETRIEVAL:
            return retrieval_line(query_id, [entry[0] for entry in ranked])
        _, score, landmark_id = ranked[0]
        return recognition_line(query_id, landmark_id, score)

    return line


def _write_text(lines: list[str], path: str, task: str) -> None:
    with FileSystems.create(path) as handle:
        handle.write(predictions_csv(task, lines).encode("utf-8"))


class EvaluateQueries(beam.PTransform):
    """Pipeline root -> writes the predictions CSV of `config.task` under `config.output`."""

    def __init__(self, config: EvaluateConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, pipeline: beam.pvalue.PBegin) -> None:
        cfg = self._config
        index_images = _stored_images(pipeline, cfg.index_images, "Index")
        query_images = _stored_images(pipeline, cfg.query_images, "Queries")
        labels = index_images | "IndexLabels" >> beam.MapTuple(lambda i, image: (i, image.row.landmark_id))
        index = (
            {"vector": _embed(index_images, cfg, "Index"), "label": labels}
            | "JoinIndex" >> beam.CoGroupByKey()
            | "IndexEntry" >> beam.MapTuple(lambda i, g: (i, next(iter(g["vector"])), next(iter(g["label"]))))
            | "CollectIndex" >> beam.combiners.ToList()
            | "IndexMatrix" >> beam.Map(_index_matrix)
        )
        ranked = (
            _embed(query_images, cfg, "Queries")
            | "QueryBlocks" >> beam.BatchElements(min_batch_size=1, max_batch_size=1024)
            | "Rank" >> beam.FlatMap(_rank_block, beam.pvalue.AsSingleton(index), cfg)
        )
        if cfg.rerank:
            ranked = self._reranked(ranked, index_images, query_images)
        path = FileSystems.join(cfg.output, PREDICTION_FILES[cfg.task])
        (
            ranked
            | "Format" >> beam.MapTuple(_prediction_line(cfg.task))
            | "CollectLines" >> beam.combiners.ToList()
            | "WritePredictions" >> beam.Map(_write_text, path, cfg.task)
        )

    def _reranked(self, ranked, index_images, query_images) -> beam.PCollection:
        cfg = self._config
        wanted = ranked | "Candidates" >> beam.FlatMap(
            lambda item: ((entry[0], item[0]) for entry in item[1][: cfg.rerank_top])
        )
        needed_index = (
            {"image": index_images, "queries": wanted}
            | "JoinWanted" >> beam.CoGroupByKey()
            | "OnlyWanted" >> beam.FlatMap(_wanted_image)
        )
        index_features = needed_index | "IndexFeatures" >> beam.ParDo(_FeaturesFn(cfg.rerank_features))
        candidates = (
            {"features": index_features, "queries": wanted}
            | "JoinCandidates" >> beam.CoGroupByKey()
            | "ByQuery" >> beam.FlatMap(_candidate_features)
        )
        query_features = query_images | "QueryFeatures" >> beam.ParDo(_FeaturesFn(cfg.rerank_features))
        return (
            {"ranked": ranked, "features": query_features, "candidates": candidates}
            | "JoinForRerank" >> beam.CoGroupByKey()
            | "Rerank" >> beam.FlatMap(_rerank, cfg.rerank_top)
        )


def run_evaluation(config: EvaluateConfig, beam_args: list[str] | None = None, show_progress: bool = True) -> dict:
    """Run the evaluation job; returns `{"predictions": path, "queries": n, "seconds": s}`."""
    counters, seconds = run_pipeline(lambda p: p | "Evaluate" >> EvaluateQueries(config), beam_args, show_progress)
    summary = {
        "predictions": FileSystems.join(config.output, PREDICTION_FILES[config.task]),
        "queries": counters.get(STAGE, {}).get("ranked", 0),
        "seconds": round(seconds, 1),
    }
    write_json(FileSystems.join(config.output, "evaluate.json"), summary)
    return summary
