"""Record types that flow between the stages.

Every record carries the manifest `line` it came from, so that each input row can be traced to
exactly one outcome in `decisions.parquet`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from schemas.vocabulary import FAILURE_REASONS, Reason, Stage, Status

#: How descriptors may be stored (`LocalFeatures.descriptors`).
DESCRIPTOR_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.uint8))

#: Field metadata of a record written as a table row (`schemas.tables.record_schema`): a count
#: or score that fits 32 bits is stored as int32, a similarity as float32 (else int64, float64).
INT32 = MappingProxyType({"column_type": "int32"})
FLOAT32 = MappingProxyType({"column_type": "float32"})


@dataclass(frozen=True)
class ManifestRow:
    """One valid row of a GLDv2 `train.csv` (`id,url,landmark_id`); `url` may be empty."""

    line: int
    id: str
    url: str
    landmark_id: int


@dataclass(frozen=True)
class Failure:
    """An input row that could not be processed, with the stage and reason that stopped it.

    `landmark_id` is None when the row never had a valid one; `id` is the synthetic
    `line:N` when the row had no usable id.
    """

    line: int
    id: str
    landmark_id: int | None
    stage: Stage
    reason: Reason
    detail: str = ""
    url: str = ""

    def __post_init__(self) -> None:
        if self.reason not in FAILURE_REASONS.get(self.stage, frozenset()):
            raise ValueError(f"reason {self.reason.value!r} is not a {self.stage.value} failure")


@dataclass(frozen=True)
class FetchedImage:
    """Raw bytes of one image as downloaded or read, before any decoding."""

    row: ManifestRow
    data: bytes


@dataclass(frozen=True)
class DecodedImage:
    """A normalised image as the image store keeps it.

    `jpeg` is the normalised image (longest side at most the configured size), `width` x
    `height` its size; `original_*` and `sha256` describe the fetched bytes. Its pixels are
    always decoded from `jpeg` (`transforms.ingest.decode.stored_pixels`), so features computed from a
    fresh download and from the store of an earlier run are the same.
    """

    row: ManifestRow
    jpeg: bytes = field(repr=False)
    width: int
    height: int
    original_width: int
    original_height: int
    original_bytes: int
    sha256: str


@dataclass(frozen=True)
class ImageRef:
    """Claim check for one stored image: where the image store holds its normalised JPEG.

    `path` is a part file of the image store and `index` the row's position in it (its row
    group: parts keep one image per row group, so reading one image touches nothing else).
    `width` x `height` is the stored image's size and `sha256` the hash of the fetched bytes.
    A few hundred bytes: this, never the JPEG, is what travels between stages.
    """

    row: ManifestRow
    path: str
    index: int
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class LocalFeatures:
    """Local features of one image, strongest first.

    - `keypoints`: float32 [N, 2], (x, y) in pixels of the normalised image: origin at the
      top-left corner, (0, 0) the centre of the top-left pixel (DELF's (y, x) is swapped).
    - `descriptors`: [N, D], float16 (default), float32, or uint8 (SIFT only, RootSIFT x 255);
      D = 128 for SIFT, 40 for the public DELF module.
    - `scales`: float32 [N], SIFT keypoint size in pixels or DELF's 1 / pyramid scale;
      `scores`: float32 [N], SIFT response or DELF attention (NaN where a model gives none).
    - `width`, `height`: size of the normalised image the keypoints refer to.
    N may be 0: an image without features is a valid record that simply cannot verify.
    """

    id: str
    landmark_id: int
    line: int
    keypoints: np.ndarray = field(repr=False)
    descriptors: np.ndarray = field(repr=False)
    scales: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    width: int
    height: int

    def __post_init__(self) -> None:
        n = self.keypoints.shape[0]
        if self.keypoints.shape != (n, 2) or self.descriptors.ndim != 2:
            raise ValueError(
                f"keypoints must be [N, 2] and descriptors [N, D], got "
                f"{self.keypoints.shape} and {self.descriptors.shape}"
            )
        if self.descriptors.shape[0] != n or self.scales.shape != (n,) or self.scores.shape != (n,):
            raise ValueError("keypoints, descriptors, scales and scores must have the same N")
        if not all(a.dtype == np.float32 for a in (self.keypoints, self.scales, self.scores)):
            raise ValueError("keypoints, scales and scores must be float32")
        if self.descriptors.dtype not in DESCRIPTOR_DTYPES:
            raise ValueError(f"descriptors must be one of {DESCRIPTOR_DTYPES}, got {self.descriptors.dtype}")

    @property
    def count(self) -> int:
        return int(self.keypoints.shape[0])


@dataclass(frozen=True)
class FeatureRef:
    """Claim check for the local features of one image in the features store, with the small
    summaries later stages need without reading the features themselves.

    - `path`, `index`: the features part file and the row (= row group) holding the features;
    - `count`: N, the number of local features; `sha256`: the image bytes they were made from
      (a re-run reuses stored features and pair results only for the same bytes);
    - `global_descriptor`: the kNN descriptor [G] when the reference carries one (an embedding
      model's), else empty [0]: the offline one (float16 [4096], 8 KiB) stays in the store and
      the pair planner reads it only for the classes that need a kNN;
    - `mean`: float32 [D], the mean local descriptor (the audit's signature); zeros when N = 0;
    - `phash`: the 64-bit perceptual hash of the stored image (the audit's near duplicates).
    """

    id: str
    landmark_id: int
    line: int
    path: str
    index: int
    count: int
    sha256: str
    global_descriptor: np.ndarray = field(repr=False)
    mean: np.ndarray = field(repr=False)
    phash: int


@dataclass(frozen=True)
class PairResult:
    """Geometric verification of one candidate pair inside a class (`id_a < id_b`).

    `reason` is empty for a pair that reached RANSAC, else why it could not (e.g. too few
    putative matches).
    """

    landmark_id: int
    id_a: str
    id_b: str
    num_matches: int = field(metadata=INT32)
    inliers: int = field(metadata=INT32)
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.id_a < self.id_b:
            raise ValueError(f"pair ids must be ordered: {self.id_a!r} !< {self.id_b!r}")


@dataclass(frozen=True)
class ImageDecision:
    """The one final outcome of one input row (a line of the manifest); a row of
    `decisions.parquet`, whose `line` column comes last."""

    line: int
    id: str
    landmark_id: int | None
    status: Status
    reason: str
    stage: str = ""
    detail: str = ""
    degree: int = field(default=0, metadata=INT32)
    component_id: int = field(default=-1, metadata=INT32)
    component_size: int = field(default=0, metadata=INT32)
    max_inliers: int = field(default=0, metadata=INT32)
    best_partner: str = ""

    @classmethod
    def from_failure(cls, failure: Failure) -> ImageDecision:
        return cls(
            line=failure.line,
            id=failure.id,
            landmark_id=failure.landmark_id,
            status=Status.FAILED,
            reason=failure.reason.value,
            stage=failure.stage.value,
            detail=f"{failure.detail} (url {failure.url})"
            if failure.url and failure.stage == Stage.FETCH
            else failure.detail,
        )


@dataclass(frozen=True)
class AuditFinding:
    """One label-noise finding of the audit (a row of `audit.parquet`).

    `kind` is `cross_class_match` (score = RANSAC inliers between images of two classes),
    `exact_duplicate` (same bytes; score = copies), `near_duplicate` (score = perceptual-hash
    Hamming distance) or `split_class` (ids empty, landmark_b = -1; score = number of large
    components of class landmark_a).
    """

    kind: str
    landmark_a: int
    id_a: str
    landmark_b: int
    id_b: str
    score: int
    detail: str = ""
