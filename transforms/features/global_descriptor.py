"""Global descriptors: one vector per image, what `--pairs knn` ranks same-class neighbours by.

Two sources:

- offline (no model): a bag of binary words built from the image's own local descriptors.
  Each L2-normalised descriptor, minus its mean component (RootSIFT is all non-negative, so
  random hyperplanes through the origin would put every descriptor on the same side), is
  hashed by the signs of `LOCAL_BITS` fixed, seeded random projections into one of
  2**LOCAL_BITS cells. The histogram is square-rooted (a repeated texture should not dominate)
  and L2-normalised. Two views of one landmark share many near-identical descriptors and so
  many cells; nothing is learned and nothing is downloaded.
- a TensorFlow SavedModel with an embedding signature (`--embedding-model`, any Beam path:
  it is copied through Beam FileSystems to local disk, then loaded): the signature's one image
  input gets the decoded RGB pixels, its output (one tensor, or the one named `embedding`) is
  the descriptor.

`nearest_neighbours` then ranks a class's descriptors after centring them on the class mean,
which discounts what every image of the class shares (sky, the generic cells of any texture).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from schemas.records import DecodedImage, FeatureRef, ImageRef
from transforms.ingest.decode import stored_pixels
from transforms.ingest.image_store import load_image
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import StageTimer

STAGE = "pairs"

#: Cells of the offline descriptor are 2**LOCAL_BITS (4096): on generated landmark views, 10
#: bits found 66 % true partners among 3 nearest, 12 bits 70 %, 16 bits 77 % at 16x the size.
LOCAL_BITS = 12
_LOCAL_SEED = 20240607
#: Rows of the similarity matrix computed at once: memory O(chunk * n), never n * n.
_CHUNK_ROWS = 256


def _projections(dimension: int) -> np.ndarray:
    """The fixed hyperplanes [dimension, LOCAL_BITS] of the offline descriptor."""
    return np.random.default_rng([_LOCAL_SEED, dimension]).standard_normal((dimension, LOCAL_BITS)).astype(np.float32)


def aggregate_local(descriptors: np.ndarray) -> np.ndarray:
    """Offline global descriptor of one image: descriptors [N, D] (any numeric dtype) ->
    float16 [2**LOCAL_BITS], L2-normalised; all zeros when N == 0."""
    cells = np.zeros(1 << LOCAL_BITS, np.float32)
    if len(descriptors):
        unit = descriptors.astype(np.float32)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        unit -= unit.mean(axis=1, keepdims=True)
        codes = (unit @ _projections(unit.shape[1]) > 0) @ (1 << np.arange(LOCAL_BITS))
        cells += np.sqrt(np.bincount(codes, minlength=cells.size))
        cells /= np.linalg.norm(cells)
    return cells.astype(np.float16)


def nearest_neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    """Indices [n, min(k, n-1)] of each row's most similar other rows of vectors [n, D].

    Similarity is the cosine after centring on the mean row; ties go to the lower index, so
    the result depends only on the rows and their order. Memory O(_CHUNK_ROWS * n).
    """
    n = len(vectors)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0), np.int64)
    centred = vectors.astype(np.float32)
    centred -= centred.mean(axis=0)
    centred /= np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    out = np.empty((n, k), np.int64)
    for start in range(0, n, _CHUNK_ROWS):
        rows = np.arange(start, min(n, start + _CHUNK_ROWS))
        similarity = centred[rows] @ centred.T
        similarity[np.arange(len(rows)), rows] = -np.inf
        out[rows] = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return out


def copy_to_local(path: str, local_dir: str) -> str:
    """Copy every file under `path` (any Beam FileSystems path) into `local_dir`, keeping the
    relative layout; returns `local_dir`. Raises FileNotFoundError when nothing is there."""
    root = path.rstrip("/")
    found = FileSystems.match([FileSystems.join(root, "**")])[0].metadata_list
    if not found:
        raise FileNotFoundError(f"no SavedModel files under {path!r}")
    for metadata in found:
        target = os.path.join(local_dir, os.path.relpath(metadata.path, root))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with FileSystems.open(metadata.path) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
    return local_dir


class SavedModelEmbedder:
    """Loads a SavedModel signature once and embeds uint8 RGB [H, W, 3] images into float32 [D].

    The signature must take exactly one image tensor ([H, W, 3] or [1, H, W, 3]; uint8 pixels,
    or float pixels scaled to [0, 1]; a static H, W is resized to) and return one tensor, or
    several of which one is named `embedding`. Raises ValueError when it does not.
    """

    def __init__(self, path: str, signature: str) -> None:
        import tensorflow as tf  # heavy: only runs that name a model pay for it

        self._tf = tf
        self._local = tempfile.mkdtemp(prefix="gld-embedding-")
        try:
            self._open(path, signature)
        except BaseException:
            self.close()
            raise

    def _open(self, path: str, signature: str) -> None:
        loaded = self._tf.saved_model.load(copy_to_local(path, self._local))
        if signature not in loaded.signatures:
            raise ValueError(f"SavedModel {path!r} has no signature {signature!r}; it has {sorted(loaded.signatures)}")
        self._loaded = loaded  # the signature's variables live as long as the loaded object
        self._function = loaded.signatures[signature]
        inputs = self._function.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(f"signature {signature!r} must take one image input, takes {sorted(inputs)}")
        ((self._input_name, spec),) = inputs.items()
        if spec.shape.rank not in (3, 4):
            raise ValueError(f"signature input must be [H, W, 3] or [1, H, W, 3], got {spec.shape}")
        self._spec = spec
        outputs = self._function.structured_outputs
        if len(outputs) != 1 and "embedding" not in outputs:
            raise ValueError(
                f"signature {signature!r} must return one tensor or `embedding`, returns {sorted(outputs)}"
            )
        self._output_name = "embedding" if "embedding" in outputs else next(iter(outputs))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        tf = self._tf
        image = tf.convert_to_tensor(pixels)
        size = self._spec.shape[-3:-1]
        if size.is_fully_defined() and tuple(size) != pixels.shape[:2]:
            image = tf.cast(tf.image.resize(image, tuple(size)), tf.uint8)
        image = tf.cast(image, self._spec.dtype) / 255.0 if self._spec.dtype.is_floating else image
        if self._spec.shape.rank == 4:
            image = image[None]
        embedding = self._function(**{self._input_name: image})[self._output_name]
        return embedding.numpy().astype(np.float32).reshape(-1)

    def close(self) -> None:
        shutil.rmtree(self._local, ignore_errors=True)


class _EmbedFn(beam.DoFn):
    """(id, float32 [D]) per stored image; the model is loaded once per DoFn instance."""

    def __init__(self, path: str, signature: str) -> None:
        self._path = path
        self._signature = signature
        self._embedder: SavedModelEmbedder | None = None

    def setup(self) -> None:
        self._embedder = SavedModelEmbedder(self._path, self._signature)

    def process(self, image: ImageRef | DecodedImage) -> Iterator[tuple[str, np.ndarray]]:
        assert self._embedder is not None
        with StageTimer(STAGE):
            vector = self._embedder(stored_pixels(load_image(image)))
        yield image.row.id, vector

    def teardown(self) -> None:
        if self._embedder is not None:
            self._embedder.close()


def _joined_member(image_id: str, grouped: dict[str, Any]) -> Iterator[FeatureRef]:
    """The FeatureRef with the model's descriptor, for images that have features (the only
    ones that can be verified)."""
    refs, vectors = list(grouped["ref"]), list(grouped["vector"])
    if refs and vectors:
        yield dataclasses.replace(refs[0], global_descriptor=vectors[0])


class DescribeImages(beam.PTransform):
    """{"features": FeatureRef, "images": ImageRef} -> FeatureRef whose `global_descriptor` is
    the embedding model's [D], for every image with features."""

    def __init__(self, model: str, signature: str = "serving_default") -> None:
        super().__init__()
        self._model = model
        self._signature = signature

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        if "images" not in inputs:
            raise ValueError("an embedding model needs the stored images")
        embeddings = inputs["images"] | "Embed" >> beam.ParDo(_EmbedFn(self._model, self._signature))
        refs = inputs["features"] | "RefById" >> beam.Map(lambda r: (r.id, r)) | meter("MeterRefs")
        return (
            {"ref": refs, "vector": embeddings | meter("MeterEmbeddings")}
            | "JoinEmbeddings" >> beam.CoGroupByKey()
            | "Members" >> beam.FlatMapTuple(_joined_member)
        )
