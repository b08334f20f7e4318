"""Tests of the record schemas: the array codec, the GLDv2 CSV formats and record validation."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from schemas.arrays import decode_array, encode_array
from schemas.gldv2_csv import (
    CLEAN_HEADER,
    format_clean_row,
    format_train_clean,
    id_problem,
    missing_columns,
    parse_header,
    parse_manifest_line,
    parse_train_clean,
    synthetic_id,
)
from schemas.records import Failure, LocalFeatures, ManifestRow, PairResult
from schemas.vocabulary import FAILURE_REASONS, Reason, Stage

COLUMNS = ("id", "url", "landmark_id")
GOOD_ID = "6e158a47eb2ca3f6"

# ---------------------------------------------------------------------------------------------
# schemas/arrays.py


def _random_array(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8", "int64"])
@pytest.mark.parametrize("shape", [(), (7,), (0, 2), (5, 2), (3, 4, 2), (2, 0, 3)])
def test_array_round_trip_is_bit_exact(dtype: str, shape: tuple[int, ...]) -> None:
    array = _random_array(dtype, shape)
    decoded = decode_array(encode_array(array))
    assert decoded.dtype == np.dtype(dtype)
    assert decoded.shape == shape
    assert decoded.tobytes() == array.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_array_round_trip_keeps_special_float_bits(dtype: str) -> None:
    array = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, np.finfo(dtype).tiny], dtype=dtype)
    decoded = decode_array(encode_array(array))
    assert decoded.view(f"u{array.itemsize}").tolist() == array.view(f"u{array.itemsize}").tolist()


def test_array_round_trip_of_extreme_integers() -> None:
    array = np.array([np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max], dtype=np.int64)
    assert decode_array(encode_array(array)).tolist() == array.tolist()


def test_encoded_array_layout_is_little_endian_and_compact() -> None:
    array = np.arange(6, dtype=">f4").reshape(2, 3)  # big endian input is stored little endian
    data = encode_array(array)
    descr = b"<f4"
    header = b"GLA1" + bytes([len(descr)]) + descr + bytes([2]) + struct.pack("<2I", 2, 3)
    assert data == header + np.arange(6, dtype="<f4").tobytes()
    decoded = decode_array(data)
    assert decoded.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(decoded, array)


def test_non_contiguous_array_round_trips_in_c_order() -> None:
    array = np.arange(24, dtype=np.int64).reshape(4, 6)[:, ::2].T
    assert not array.flags.c_contiguous
    decoded = decode_array(encode_array(array))
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.c_contiguous


def test_decoded_array_is_writable_and_independent() -> None:
    data = encode_array(np.zeros(3, dtype=np.float32))
    decoded = decode_array(data)
    decoded[0] = 5.0  # does not raise: not a read-only view of the bytes
    assert decode_array(data)[0] == 0.0


def test_object_arrays_are_refused() -> None:
    with pytest.raises(TypeError):
        encode_array(np.array([object()], dtype=object))


def test_bad_magic_raises_value_error() -> None:
    data = encode_array(np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="magic"):
        decode_array(b"XXXX" + data[4:])
    with pytest.raises(ValueError, match="magic"):
        decode_array(b"")


def test_zero_dimensional_array_keeps_its_shape() -> None:
    decoded = decode_array(encode_array(np.array(2.5, dtype=np.float32)))
    assert decoded.shape == ()
    assert decoded.dtype == np.float32
    assert decoded.item() == 2.5


@pytest.mark.parametrize(
    "data",
    [
        b"GLA1",  # nothing after the magic
        b"GLA1\x03<f",  # dtype string cut short
        b"GLA1\x03<f4\x02\x01\x00",  # shape cut short
        b"GLA1\x03zzz\x00",  # not a dtype
        b"GLA1\x03\xff\xfe\xfd\x00",  # dtype not ASCII
    ],
)
def test_truncated_or_corrupt_header_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_array(data)


@pytest.mark.parametrize("change", [-1, 1, -12])
def test_wrong_payload_length_raises_value_error(change: int) -> None:
    data = encode_array(np.ones((3, 4), dtype=np.float32))
    bad = data[:change] if change < 0 else data + b"\0" * change
    with pytest.raises(ValueError, match="bytes, expected"):
        decode_array(bad)


# ---------------------------------------------------------------------------------------------
# schemas/gldv2_csv.py: train.csv


def test_parse_header_normalises_names() -> None:
    assert parse_header(" ID , Url ,LANDMARK_ID\r\n") == COLUMNS
    assert missing_columns(parse_header("id,url")) == ["landmark_id"]
    assert missing_columns(parse_header("url,landmark_id,id")) == []


def test_good_row() -> None:
    row = parse_manifest_line(2, f"{GOOD_ID},http://x.test/a.jpg,42", COLUMNS)
    assert row == ManifestRow(line=2, id=GOOD_ID, url="http://x.test/a.jpg", landmark_id=42)


def test_fields_are_stripped_and_column_order_follows_header() -> None:
    row = parse_manifest_line(9, " 7 , abc , http://x.test/b.jpg ", ("landmark_id", "id", "url"))
    assert row == ManifestRow(line=9, id="abc", url="http://x.test/b.jpg", landmark_id=7)


def test_manifest_without_url_column() -> None:
    row = parse_manifest_line(3, "abc,5", ("id", "landmark_id"))
    assert row == ManifestRow(line=3, id="abc", url="", landmark_id=5)


def test_quoted_url_with_comma() -> None:
    row = parse_manifest_line(4, f'{GOOD_ID},"http://x.test/a,b.jpg?q=1,2",3', COLUMNS)
    assert isinstance(row, ManifestRow)
    assert row.url == "http://x.test/a,b.jpg?q=1,2"
    assert row.landmark_id == 3


def _failure(line: int, text: str, columns: tuple[str, ...] = COLUMNS) -> Failure:
    result = parse_manifest_line(line, text, columns)
    assert isinstance(result, Failure), result
    assert result.stage is Stage.MANIFEST
    return result


@pytest.mark.parametrize("text", [GOOD_ID, f"{GOOD_ID},http://x.test/a.jpg", ""])
def test_too_few_fields_is_missing_column(text: str) -> None:
    failure = _failure(5, text)
    assert failure.reason is Reason.MISSING_COLUMN
    assert failure.id == "line:5"
    assert failure.landmark_id is None


@pytest.mark.parametrize("text", [f"{GOOD_ID},http://x.test/a.jpg,1,extra", "a,b,c,d,e"])
def test_too_many_fields_is_malformed_row(text: str) -> None:
    failure = _failure(6, text)
    assert failure.reason is Reason.MALFORMED_ROW
    assert failure.id == "line:6"


@pytest.mark.parametrize("text", [f'{GOOD_ID},"http://x.test/a.jpg,1', f'{GOOD_ID},"http://x"y,1'])
def test_broken_quoting_is_malformed_row(text: str) -> None:
    failure = _failure(7, text)
    assert failure.reason is Reason.MALFORMED_ROW
    assert failure.detail.startswith("csv:")


@pytest.mark.parametrize("raw_id", ["", "   "])
def test_empty_id(raw_id: str) -> None:
    failure = _failure(8, f"{raw_id},http://x.test/a.jpg,1")
    assert failure.reason is Reason.EMPTY_ID
    assert failure.id == synthetic_id(8) == "line:8"
    assert failure.url == "http://x.test/a.jpg"


@pytest.mark.parametrize(
    "raw_id",
    ["../x", "a/b", "..", ".", "...", "a\\b", "a\x00b", "a\x07b", "a\tb", "a\x7fb", "x" * 129],
)
def test_unsafe_ids_are_bad_id(raw_id: str) -> None:
    failure = _failure(10, f'"{raw_id}",http://x.test/a.jpg,1')
    assert failure.reason is Reason.BAD_ID
    assert failure.id == "line:10"  # the unsafe id itself is never used as an id
    assert failure.landmark_id is None


@pytest.mark.parametrize("image_id", [GOOD_ID, "abc", "a.b-c_d", "x" * 128, "..x", "é"])
def test_safe_ids_are_accepted(image_id: str) -> None:
    assert id_problem(image_id) == ""
    row = parse_manifest_line(11, f"{image_id},,1", COLUMNS)
    assert isinstance(row, ManifestRow)
    assert row.id == image_id


@pytest.mark.parametrize("label", ["", "abc", "-1", "1.5", "1e3", "+3", "0x1f", "\u00b2", "\u0663"])
def test_bad_landmark_id(label: str) -> None:
    failure = _failure(12, f"{GOOD_ID},http://x.test/a.jpg,{label}")
    assert failure.reason is Reason.BAD_LANDMARK_ID
    assert failure.id == GOOD_ID  # the id was usable, so the failure keeps it
    assert failure.landmark_id is None
    assert failure.url == "http://x.test/a.jpg"


def test_zero_and_large_landmark_ids_are_valid() -> None:
    assert parse_manifest_line(2, "abc,,0", COLUMNS).landmark_id == 0
    assert parse_manifest_line(2, "abc,,203093", COLUMNS).landmark_id == 203093


# ---------------------------------------------------------------------------------------------
# schemas/gldv2_csv.py: train_clean.csv


def test_format_train_clean_sorts_numerically_and_omits_empty_classes() -> None:
    classes = {10: ["c", "a", "b"], 9: ["z"], 100: [], 2: ["y", "x"], 0: ["q"]}
    text = format_train_clean(classes)
    assert text == "landmark_id,images\n0,q\n2,x y\n9,z\n10,a b c\n"
    assert text.splitlines()[0] == CLEAN_HEADER


def test_format_train_clean_accepts_any_iterable_of_ids() -> None:
    assert format_train_clean({3: iter(["b", "a"]), 1: ("c",), 2: set()}) == "landmark_id,images\n1,c\n3,a b\n"
    assert format_clean_row(5, {"b", "a"}) == "5,a b"


def test_format_train_clean_of_nothing_is_just_the_header() -> None:
    assert format_train_clean({}) == "landmark_id,images\n"
    assert parse_train_clean(format_train_clean({})) == {}


def test_train_clean_round_trip() -> None:
    classes = {1: ["b", "a"], 10: ["z"], 9: ["m", "n", "o"], 5: []}
    parsed = parse_train_clean(format_train_clean(classes))
    assert parsed == {1: ["a", "b"], 9: ["m", "n", "o"], 10: ["z"]}
    assert list(parsed) == [1, 9, 10]
    assert format_train_clean(parsed) == format_train_clean(classes)


def test_parse_train_clean_tolerates_crlf_and_blank_lines() -> None:
    assert parse_train_clean("landmark_id,images\r\n3,a b\r\n\r\n4,c\r\n") == {3: ["a", "b"], 4: ["c"]}


@pytest.mark.parametrize("text", ["", "id,images\n1,a\n", "landmark_id,images\nx,a\n", "landmark_id,images\n-1,a\n"])
def test_parse_train_clean_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError):
        parse_train_clean(text)


# ---------------------------------------------------------------------------------------------
# schemas/records.py


def test_failure_accepts_the_reasons_of_its_stage() -> None:
    for stage, reasons in FAILURE_REASONS.items():
        for reason in reasons:
            assert Failure(1, "x", None, stage, reason).reason is reason


@pytest.mark.parametrize(
    ("stage", "reason"),
    [
        (Stage.MANIFEST, Reason.HTTP_404),
        (Stage.FETCH, Reason.EMPTY_ID),
        (Stage.DECODE, Reason.TOO_LARGE),
        (Stage.FEATURES, Reason.TRUNCATED),
        (Stage.VERIFY, Reason.EXTRACTION_ERROR),
        (Stage.MANIFEST, Reason.VERIFIED_COMPONENT),
    ],
)
def test_failure_rejects_a_reason_of_another_stage(stage: Stage, reason: Reason) -> None:
    with pytest.raises(ValueError, match="is not a"):
        Failure(1, "x", None, stage, reason)


def test_pair_result_requires_ordered_ids() -> None:
    assert PairResult(1, "a", "b", 10, 5).id_a == "a"
    with pytest.raises(ValueError, match="ordered"):
        PairResult(1, "b", "a", 10, 5)
    with pytest.raises(ValueError, match="ordered"):
        PairResult(1, "a", "a", 10, 5)


def test_local_features_shape_checks() -> None:
    def features(n: int, kp_cols: int = 2, m: int | None = None) -> LocalFeatures:
        m = n if m is None else m
        return LocalFeatures(
            id="a",
            landmark_id=1,
            line=2,
            keypoints=np.zeros((n, kp_cols), np.float32),
            descriptors=np.zeros((m, 128), np.uint8),
            scales=np.zeros(n, np.float32),
            scores=np.zeros(n, np.float32),
            width=10,
            height=10,
        )

    assert features(0).count == 0
    assert features(3).count == 3
    with pytest.raises(ValueError):
        features(3, kp_cols=3)
    with pytest.raises(ValueError):
        features(3, m=2)


def test_record_tables_have_exactly_their_records_fields() -> None:
    from dataclasses import fields

    from schemas.records import AuditFinding, ImageDecision
    from schemas.tables import AUDIT_SCHEMA, DECISIONS_SCHEMA, PAIRS_SCHEMA

    for record, schema in ((AuditFinding, AUDIT_SCHEMA), (ImageDecision, DECISIONS_SCHEMA), (PairResult, PAIRS_SCHEMA)):
        assert sorted(f.name for f in fields(record)) == sorted(schema.names), record.__name__


def test_record_rows_round_trip() -> None:
    from schemas.records import AuditFinding, ImageDecision
    from schemas.tables import (
        decision_from_row,
        finding_from_row,
        pair_from_row,
        record_to_row,
    )
    from schemas.vocabulary import Status

    decision = ImageDecision(3, "a", None, Status.FAILED, "http_404", "fetch", "gone")
    assert record_to_row(decision)["status"] == "failed"
    assert decision_from_row(record_to_row(decision)) == decision
    pair = PairResult(7, "a", "b", 12, 5, "")
    assert pair_from_row(record_to_row(pair)) == pair
    finding = AuditFinding("split_class", 7, "", -1, "", 2, "component sizes [3, 3]")
    assert finding_from_row(record_to_row(finding)) == finding


def test_tables_derived_from_records_keep_their_format() -> None:
    """The schemas made from the records are the on-disk formats users read: these columns,
    these types, this order (a record change that would alter a file fails here)."""
    import pyarrow as pa

    from schemas.overlap import EVAL_OUTCOME_SCHEMA, OVERLAP_SCHEMA
    from schemas.tables import AUDIT_SCHEMA, DECISIONS_SCHEMA, PAIRS_SCHEMA

    s, i32, i64 = pa.string(), pa.int32(), pa.int64()
    expected = {
        "decisions": (
            DECISIONS_SCHEMA,
            [
                ("id", s),
                ("landmark_id", i64),
                ("status", s),
                ("reason", s),
                ("stage", s),
                ("detail", s),
                ("degree", i32),
                ("component_id", i32),
                ("component_size", i32),
                ("max_inliers", i32),
                ("best_partner", s),
                ("line", i64),
            ],
        ),
        "pairs": (
            PAIRS_SCHEMA,
            [("landmark_id", i64), ("id_a", s), ("id_b", s), ("num_matches", i32), ("inliers", i32), ("reason", s)],
        ),
        "audit": (
            AUDIT_SCHEMA,
            [
                ("kind", s),
                ("landmark_a", i64),
                ("id_a", s),
                ("landmark_b", i64),
                ("id_b", s),
                ("score", i64),
                ("detail", s),
            ],
        ),
        "overlap": (
            OVERLAP_SCHEMA,
            [
                ("train_id", s),
                ("landmark_id", i64),
                ("eval_id", s),
                ("inliers", i32),
                ("num_matches", i32),
                ("similarity", pa.float32()),
                ("reason", s),
            ],
        ),
        "eval_images": (
            EVAL_OUTCOME_SCHEMA,
            [
                ("id", s),
                ("line", i64),
                ("status", s),
                ("stage", s),
                ("reason", s),
                ("detail", s),
                ("num_features", i32),
            ],
        ),
    }
    for name, (schema, columns) in expected.items():
        assert schema == pa.schema(columns), name


def test_record_schema_refuses_what_it_cannot_store() -> None:
    from dataclasses import dataclass

    from schemas.tables import record_schema

    @dataclass(frozen=True)
    class Odd:
        values: list

    with pytest.raises(ValueError, match=r"Odd\.values"):
        record_schema(Odd)
    with pytest.raises(ValueError, match="no fields"):
        record_schema(PairResult, last=("nothing",))


def test_failure_rows_fill_the_failure_log() -> None:
    from dataclasses import fields

    from schemas.tables import INGEST_FAILURES_SCHEMA, ingest_failure_from_row, record_to_row

    assert sorted(f.name for f in fields(Failure)) == sorted(INGEST_FAILURES_SCHEMA.names)
    row = ManifestRow(4, "abc", "http://x/a.jpg", 9)
    failure = Failure(4, "abc", 9, Stage.FETCH, Reason.HTTP_404, "gone", "http://x/a.jpg")
    assert record_to_row(failure)["reason"] == "http_404"
    assert ingest_failure_from_row(record_to_row(failure), row) == failure
