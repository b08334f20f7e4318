"""The fixed status, stage, reason and audit-kind vocabulary shared by every stage and output file.

Users filter `decisions.parquet`, `pairs.parquet`, `audit.parquet` and `eval_images.parquet` on
these strings, so they are part of the contract: add new values freely, never rename one.
Records and rows carry the plain strings (a member's `.value`).
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Where an input row ended."""

    KEPT = "kept"
    REMOVED = "removed"
    FAILED = "failed"


class Stage(str, Enum):
    """The stage that produced a failure or a decision."""

    MANIFEST = "manifest"
    FETCH = "fetch"
    DECODE = "decode"
    FEATURES = "features"
    VERIFY = "verify"
    SELECT = "select"
    AUDIT = "audit"  # counters only: the audit produces findings, never a failure or a decision
    REVIEW = "review"  # a verdict of `gld review` applied after the rules (`gld select --reviews`)


class Reason(str, Enum):
    """Why a row was kept, removed or failed."""

    # kept
    VERIFIED_COMPONENT = "verified_component"
    VERIFIED_DEGREE = "verified_degree"
    # removed by the selection rule
    NO_VERIFIED_PAIR = "no_verified_pair"
    SMALL_COMPONENT = "small_component"
    NOT_LARGEST_COMPONENT = "not_largest_component"
    ISOLATED_COMPONENT = "isolated_component"
    LOW_DEGREE = "low_degree"
    CLASS_TOO_SMALL = "class_too_small"
    # a person's verdict (reviews.csv) applied after the rules; the detail names the rule's decision
    REVIEWED_KEEP = "reviewed_keep"
    REVIEWED_REMOVE = "reviewed_remove"
    REVIEWED_RELABEL = "reviewed_relabel"
    # manifest failures
    MALFORMED_ROW = "malformed_row"
    MISSING_COLUMN = "missing_column"
    EMPTY_ID = "empty_id"
    BAD_ID = "bad_id"
    BAD_LANDMARK_ID = "bad_landmark_id"
    DUPLICATE_ID = "duplicate_id"
    # fetch failures
    BAD_URL = "bad_url"
    BLOCKED_HOST = "blocked_host"
    HTTP_404 = "http_404"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    TOO_LARGE = "too_large"
    MISSING_FILE = "missing_file"
    READ_ERROR = "read_error"
    # fetch failures, tar shards (--tar-dir)
    MD5_MISMATCH = "md5_mismatch"
    MD5_MISSING = "md5_missing"
    UNSAFE_PATH = "unsafe_path"
    # decode failures
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    DECODE_ERROR = "decode_error"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_SMALL = "too_small"
    # feature failures
    EXTRACTION_ERROR = "extraction_error"


#: Which stage may emit which failure reason; `Failure` validates against it.
FAILURE_REASONS: dict[Stage, frozenset[Reason]] = {
    Stage.MANIFEST: frozenset(
        {
            Reason.MALFORMED_ROW,
            Reason.MISSING_COLUMN,
            Reason.EMPTY_ID,
            Reason.BAD_ID,
            Reason.BAD_LANDMARK_ID,
            Reason.DUPLICATE_ID,
        }
    ),
    Stage.FETCH: frozenset(
        {
            Reason.BAD_URL,
            Reason.BLOCKED_HOST,
            Reason.HTTP_404,
            Reason.HTTP_4XX,
            Reason.HTTP_5XX,
            Reason.TIMEOUT,
            Reason.CONNECTION_ERROR,
            Reason.TOO_LARGE,
            Reason.MISSING_FILE,
            Reason.READ_ERROR,
            Reason.MD5_MISMATCH,
            Reason.MD5_MISSING,
            Reason.UNSAFE_PATH,
        }
    ),
    Stage.DECODE: frozenset(
        {
            Reason.NOT_AN_IMAGE,
            Reason.TRUNCATED,
            Reason.DECODE_ERROR,
            Reason.TOO_MANY_PIXELS,
            Reason.TOO_SMALL,
        }
    ),
    Stage.FEATURES: frozenset({Reason.EXTRACTION_ERROR}),
}


class PairReason(str, Enum):
    """Why a candidate pair never reached RANSAC or RANSAC found no model (`PairResult.reason`,
    `pairs.parquet`); the reason is "" for a pair that RANSAC fitted."""

    NO_FEATURES = "no_features"
    TOO_FEW_MATCHES = "too_few_matches"
    DEGENERATE_KEYPOINTS = "degenerate_keypoints"
    NO_MODEL = "no_model"
    #: adaptive verification skipped the pair: its images were already joined, so it could
    #: change no decision (`transforms.matching.rounds`); never matched, 0 matches and inliers
    ALREADY_JOINED = "already_joined"


#: The outcome counted for a pair RANSAC fitted (`verify/verified`).
VERIFIED = "verified"
#: The `verify/<outcome>` counters: one of them per matched pair (a skipped pair is not matched).
PAIR_OUTCOMES = (VERIFIED, *(reason.value for reason in PairReason if reason != PairReason.ALREADY_JOINED))


class AuditKind(str, Enum):
    """The kind of a label-noise finding (`AuditFinding.kind`, `audit.parquet`)."""

    CROSS_CLASS_MATCH = "cross_class_match"
    EXACT_DUPLICATE = "exact_duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    SPLIT_CLASS = "split_class"


#: Every audit kind, in the order reports list them (also the `audit/<kind>` counters).
AUDIT_KINDS = tuple(kind.value for kind in AuditKind)


class Verdict(str, Enum):
    """A person's verdict on one image (`reviews.csv`): keep it, remove it, or keep it under
    another landmark."""

    KEEP = "keep"
    REMOVE = "remove"
    RELABEL = "relabel"


#: The decision reason each verdict gives.
REVIEWED_REASONS = {
    Verdict.KEEP: Reason.REVIEWED_KEEP,
    Verdict.REMOVE: Reason.REVIEWED_REMOVE,
    Verdict.RELABEL: Reason.REVIEWED_RELABEL,
}


class ReviewIssue(str, Enum):
    """Why a line of `reviews.csv` or a verdict was not applied (`review/<issue>` counters):
    counted errors, never a crash."""

    MALFORMED_LINE = "malformed_line"  # not 4 CSV fields
    EMPTY_ID = "empty_id"
    UNKNOWN_VERDICT = "unknown_verdict"
    BAD_LANDMARK_ID = "bad_landmark_id"  # not an integer >= 0, or missing for relabel
    UNKNOWN_ID = "unknown_id"  # no input row has the id
    NOT_REVIEWABLE = "not_reviewable"  # the row failed before selection: there is no image to judge


class EvalStatus(str, Enum):
    """Where one evaluation input row of `gld overlap` ended (`eval_images.parquet`)."""

    EXTRACTED = "extracted"
    FAILED = "failed"
