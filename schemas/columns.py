"""What each written column and each vocabulary value means, in words.

The outputs reference of the docs (`docs/reference/outputs.md`, made by `pipeline.cli.reference`)
takes the columns and their types from the schemas themselves and the words from here;
`tests/test_docs_reference.py` fails when a column or a value has no text here, or a text names
a column that no longer exists. Add the text with the column.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

import pyarrow as pa

from schemas.overlap import EVAL_OUTCOME_SCHEMA, OVERLAP_SCHEMA
from schemas.tables import (
    AUDIT_SCHEMA,
    DECISIONS_SCHEMA,
    DUPLICATES_SCHEMA,
    FEATURES_SCHEMA,
    IMAGES_SCHEMA,
    INGEST_FAILURES_SCHEMA,
    MEMBERS_SCHEMA,
    PAIRS_SCHEMA,
    VERIFIED_SCHEMA,
)
from schemas.vocabulary import (
    FAILURE_REASONS,
    REVIEWED_REASONS,
    AuditKind,
    EvalStatus,
    PairReason,
    Reason,
    ReviewIssue,
    Stage,
    Status,
)

E = TypeVar("E", bound=Enum)

#: Every schema a written table has, by the name the texts below use.
SCHEMAS: dict[str, pa.Schema] = {
    "decisions": DECISIONS_SCHEMA,
    "pairs": PAIRS_SCHEMA,
    "audit": AUDIT_SCHEMA,
    "members": MEMBERS_SCHEMA,
    "duplicates": DUPLICATES_SCHEMA,
    "images": IMAGES_SCHEMA,
    "features": FEATURES_SCHEMA,
    "verified": VERIFIED_SCHEMA,
    "ingest_failures": INGEST_FAILURES_SCHEMA,
    "overlap": OVERLAP_SCHEMA,
    "eval_images": EVAL_OUTCOME_SCHEMA,
}

_ID = "image id: GLDv2's 16-character lowercase hex, or `line:N` for a row without a usable id"
_LANDMARK = "class (landmark) of the image, as the manifest files it; null when the row had no valid one"
_LINE = "line of the row in the manifest (the header is line 1)"
_CODEC = "in the array codec of `schemas/arrays.py` (dtype and shape header, raw bytes: read back bit for bit)"

#: Table name -> column -> what it holds.
COLUMNS: dict[str, dict[str, str]] = {
    "decisions": {
        "id": _ID,
        "landmark_id": _LANDMARK,
        "status": "`kept`, `removed` or `failed` (see the reasons below)",
        "reason": "why: the rule that kept or removed the image, or the failure",
        "stage": "the stage that decided: `select`, `review`, or the stage a failure happened in",
        "detail": "the decision in words (sizes, inliers, the failure's message and URL)",
        "degree": "verified edges of the image (pairs with at least `--min-inliers` inliers)",
        "component_id": "its component within the class, 0 for the largest (ties by smallest id); -1 when none",
        "component_size": "images in that component",
        "max_inliers": "inliers of its best matched candidate pair",
        "best_partner": "the image of that pair",
        "line": _LINE,
    },
    "pairs": {
        "landmark_id": "the class of both images",
        "id_a": "first image of the pair (`id_a < id_b`)",
        "id_b": "second image",
        "num_matches": "putative matches before RANSAC",
        "inliers": "RANSAC inliers (0 when a reason is given)",
        "reason": "empty when RANSAC ran, else why not (see the pair reasons below)",
    },
    "audit": {
        "kind": "the kind of finding (see the audit kinds below)",
        "landmark_a": "class of the first image (of the split class for `split_class`)",
        "id_a": "first image (`id_a < id_b`; empty for `split_class`)",
        "landmark_b": "class of the second image (-1 for `split_class`)",
        "id_b": "second image (empty for `split_class`)",
        "score": "inliers, copies, perceptual-hash distance or components, by kind",
        "detail": "the finding in words",
    },
    "members": {
        "id": _ID,
        "landmark_id": _LANDMARK,
        "line": _LINE,
    },
    "duplicates": {
        "sha256": "sha256 of the fetched bytes the group shares",
        "id": _ID,
        "landmark_id": _LANDMARK,
        "group_size": "images with these bytes",
        "same_class": "whether every image of the group has the same landmark_id",
    },
    "images": {
        "id": _ID,
        "landmark_id": _LANDMARK,
        "url": "the URL of its manifest row (may be empty when the images come from a folder or tar shards)",
        "jpeg": "the normalised image: longest side at most `--max-side`, 8-bit RGB, JPEG at `--jpeg-quality`",
        "width": "width of the normalised image in pixels",
        "height": "its height",
        "original_width": "width of the fetched image",
        "original_height": "height of the fetched image",
        "original_bytes": "size of the fetched bytes",
        "sha256": "sha256 of the fetched bytes",
        "line": _LINE,
    },
    "features": {
        "id": _ID,
        "landmark_id": _LANDMARK,
        "line": _LINE,
        "width": "width of the normalised image the keypoints refer to",
        "height": "its height",
        "num_features": "N, the local features kept (0: an image without features)",
        "keypoints": f"float32 [N, 2], (x, y) pixels of the normalised image, (0, 0) the centre of the "
        f"top-left pixel, strongest first; {_CODEC}",
        "descriptors": "[N, D] float16 by default (`--descriptor-dtype`); SIFT D = 128 RootSIFT, ALIKED 128, DELF 40",
        "scales": "float32 [N]: SIFT keypoint size in pixels, DELF 1 / pyramid scale, ALIKED 1",
        "scores": "float32 [N]: SIFT response, DELF attention, ALIKED score",
        "sha256": "sha256 of the image bytes the features were made from (reuse needs the same bytes)",
        "global_descriptor": "float16 [4096]: the offline kNN descriptor of `--pairs knn`",
        "mean": "float32 [D]: the mean local descriptor, the audit's signature",
        "phash": "64-bit perceptual hash of the stored image (the audit's near duplicates)",
    },
    "verified": {
        "id": "`<id_a> <id_b>`, the key parts are sorted and named by",
        "landmark_id": "the class of both images",
        "id_a": "first image (`id_a < id_b`)",
        "id_b": "second image",
        "sha_a": "sha256 of the first image's bytes",
        "sha_b": "sha256 of the second image's bytes",
        "num_matches": "putative matches",
        "inliers": "RANSAC inliers",
        "reason": "as in `pairs.parquet`",
    },
    "ingest_failures": {
        "id": _ID,
        "landmark_id": _LANDMARK,
        "url": "the URL of the row",
        "stage": "`fetch` or `decode`",
        "reason": "the failure reason (see the reasons below)",
        "detail": "the error in words",
        "line": _LINE,
    },
    "overlap": {
        "train_id": "image of `train_clean.csv` or `c2x_rejected.csv`",
        "landmark_id": "its class",
        "eval_id": "the evaluation image",
        "inliers": "RANSAC inliers of the pair",
        "num_matches": "putative matches",
        "similarity": "cosine of the two global descriptors, which proposed the pair",
        "reason": "as in `pairs.parquet`",
    },
    "eval_images": {
        "id": "evaluation image id",
        "line": "its line in the resolved evaluation list",
        "status": "`extracted` or `failed`",
        "stage": "for a failure, the stage (the ingest vocabulary)",
        "reason": "for a failure, the reason",
        "detail": "for a failure, the error in words",
        "num_features": "local features extracted",
    },
}


def word_table(text: str) -> dict[str, str]:
    """`name: words` lines as {name: words}, in order; a line that starts with spaces goes on
    with the words of the line before. ValueError for a line without a name, or a name twice."""
    table: dict[str, str] = {}
    name = ""
    for line in text.strip("\n").splitlines():
        if line.startswith(" ") and name:
            table[name] += " " + line.strip()
            continue
        name, sep, words = line.partition(": ")
        if not sep or not name or name in table:
            raise ValueError(f"not a new `name: words` line: {line!r}")
        table[name] = words.strip()
    return table


def vocabulary_words(vocabulary: type[E], text: str) -> dict[E, str]:
    """`word_table(text)` keyed by the members of `vocabulary` (ValueError for a name it lacks)."""
    return {vocabulary(name): words for name, words in word_table(text).items()}


#: What each decision reason means (its status and stage: `reason_outcome`).
REASONS: dict[Reason, str] = vocabulary_words(
    Reason,
    """
verified_component: in a component of at least `--min-component-size` images of the graph of verified edges
  (components policy)
verified_degree: at least `--min-degree` verified edges (degree policy)
reviewed_keep: a `keep` verdict of `--reviews`; the detail keeps the rule's decision
reviewed_relabel: a `relabel` verdict: kept under the verdict's landmark, in `train_clean.csv` too
no_verified_pair: no candidate pair reached `--min-inliers`
small_component: its component is smaller than `--min-component-size`
not_largest_component: not in its class's largest component (`--keep-largest-component`)
isolated_component: a component of at most `--isolated-max-size` images beside a larger one of its class, with no
  candidate pair of `--isolation-inliers` to the rest of the class (`--drop-isolated-components`)
low_degree: fewer than `--min-degree` verified edges (degree policy)
class_too_small: the image passed the rule, but fewer than `--min-class-size` images of its class did
reviewed_remove: a `remove` verdict of `--reviews`
malformed_row: not UTF-8, bad CSV quoting, or more fields than the header
missing_column: fewer fields than the header
empty_id: the id is empty
bad_id: the id is not safe as a file name (a path separator, dots only)
bad_landmark_id: the landmark_id is not a non-negative integer
duplicate_id: a later line of an id already seen; its decision is filed under `line:N`
bad_url: not an http(s) URL
blocked_host: the host resolves to a loopback, private, link-local or reserved address (`--allow-private-hosts`)
http_404: HTTP 404
http_4xx: another HTTP 4xx (429 is retried first), or too many redirects
http_5xx: HTTP 5xx after `--retries` retries
timeout: over `--timeout` seconds for the image, retries included
connection_error: the connection failed after `--retries` retries
too_large: more than `--max-image-bytes` bytes
missing_file: not in `--images-dir`, or in no tar shard of `--tar-dir`
read_error: the file or shard member could not be read
md5_mismatch: its tar shard fails its md5 check (every image of the shard; re-download it)
md5_missing: its tar shard has no md5 file
unsafe_path: its shard member is absolute, climbs with `..`, is a link, or is not at `a/b/c/<id>.jpg`
not_an_image: the bytes are no image format Pillow reads
truncated: the image data ends early
decode_error: Pillow failed to decode it
too_many_pixels: more pixels than the decode cap (checked before decoding)
too_small: a side under the decode minimum
extraction_error: the extractor failed on this image (alone)
""",
)

#: The reasons of a kept image; every other rule or review reason removes it.
KEPT_REASONS = frozenset(
    {Reason.VERIFIED_COMPONENT, Reason.VERIFIED_DEGREE, Reason.REVIEWED_KEEP, Reason.REVIEWED_RELABEL}
)


def reason_outcome(reason: Reason) -> tuple[Status, Stage]:
    """The status and stage of a decision with `reason`: a failure's stage (`FAILURE_REASONS`),
    `review` for a verdict's reason, else `select`."""
    for stage, reasons in FAILURE_REASONS.items():
        if reason in reasons:
            return Status.FAILED, stage
    stage = Stage.REVIEW if reason in REVIEWED_REASONS.values() else Stage.SELECT
    return (Status.KEPT if reason in KEPT_REASONS else Status.REMOVED), stage


#: `pairs.parquet` reasons.
PAIR_REASONS: dict[PairReason, str] = vocabulary_words(
    PairReason,
    """
no_features: an image of the pair has no features
too_few_matches: fewer putative matches than the model needs (4; 8 for `fundamental`)
degenerate_keypoints: the matched keypoints are identical or collinear
no_model: RANSAC found no model
already_joined: adaptive verification skipped it: its images were already joined, so it could change no decision
  (never matched)
""",
)

#: `audit.parquet` kinds.
AUDIT_KINDS: dict[AuditKind, str] = vocabulary_words(
    AuditKind,
    """
cross_class_match: images of two classes that verify (`score`: inliers, at least `--min-inliers`)
exact_duplicate: the same fetched bytes under another id (`score`: copies)
near_duplicate: perceptual hashes within 6 of 64 bits (`score`: the distance)
split_class: a class with two or more components of at least 3 images (`score`: how many)
""",
)

#: `eval_images.parquet` statuses.
EVAL_STATUSES: dict[EvalStatus, str] = {
    EvalStatus.EXTRACTED: "its features are in the features store",
    EvalStatus.FAILED: "it failed, with the stage and reason of the ingest vocabulary",
}

#: `review/<issue>` counters of `--reviews`: counted, never fatal.
REVIEW_ISSUES: dict[ReviewIssue, str] = vocabulary_words(
    ReviewIssue,
    """
malformed_line: a line of `reviews.csv` that is not 4 CSV fields
empty_id: a verdict without an id
unknown_verdict: a verdict other than `keep`, `remove`, `relabel`
bad_landmark_id: a relabel without an integer landmark_id >= 0
unknown_id: no input row has the id
not_reviewable: the row failed before selection: there is no image to judge
""",
)
