"""The fixed status, stage and reason vocabulary shared by every stage and output file.

Users filter `decisions.parquet` on these strings, so they are part of the contract: add new
values freely, never rename one.
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
