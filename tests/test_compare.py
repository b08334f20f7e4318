"""`gld compare`: agreement numbers checked against hand-computed cases."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from pipeline.cli.main import main
from pipeline.curation.compare import ClassDisagreement, agreement, class_disagreements
from schemas.gldv2_csv import format_train_clean

# OURS keeps (a,1) (b,1) (c,1) (d,2) (e,2) (f,3); REF keeps (a,1) (b,1) (x,1) (d,2) (e,4) (g,4).
# Agreeing images: a, b, d (e is kept by both, under different classes) -> 3 of 6 on each side,
# union 9. Classes: OURS {1, 2, 3}, REF {1, 2, 4} -> 2 shared, union 4.
OURS = {1: ["a", "b", "c"], 2: ["d", "e"], 3: ["f"]}
REF = {1: ["a", "b", "x"], 2: ["d"], 4: ["e", "g"]}


def test_agreement_by_hand() -> None:
    got = agreement(OURS, REF)
    expected = {
        "image_precision": Fraction(3, 6),
        "image_recall": Fraction(3, 6),
        "image_jaccard": Fraction(3, 9),
        "class_precision": Fraction(2, 3),
        "class_recall": Fraction(2, 3),
        "class_jaccard": Fraction(2, 4),
    }
    for key, value in expected.items():
        assert got[key] == float(value), key
    assert (got["ours_images"], got["ref_images"], got["both_images"]) == (6, 6, 3)
    assert (got["ours_classes"], got["ref_classes"], got["both_classes"]) == (3, 3, 2)


def test_precision_is_over_ours_and_recall_over_ref() -> None:
    ours = {1: ["a", "b"]}
    ref = {1: ["a", "b", "c", "d"], 2: ["e"]}
    got = agreement(ours, ref)
    assert (got["image_precision"], got["image_recall"], got["image_jaccard"]) == (1.0, 0.4, 0.4)
    assert (got["class_precision"], got["class_recall"]) == (1.0, 0.5)
    assert agreement(ref, ref)["image_jaccard"] == 1.0


def test_classes_that_disagree_most_come_first() -> None:
    assert class_disagreements(OURS, REF, top=10) == [
        ClassDisagreement(1, both=2, only_ours=1, only_ref=1),
        ClassDisagreement(4, both=0, only_ours=0, only_ref=2),
        ClassDisagreement(2, both=1, only_ours=1, only_ref=0),
        ClassDisagreement(3, both=0, only_ours=1, only_ref=0),
    ]
    assert [r.landmark_id for r in class_disagreements(OURS, REF, top=2)] == [1, 4]


def test_compare_command_prints_json_then_the_table(tmp_path, capsys: pytest.CaptureFixture) -> None:
    ours, ref = tmp_path / "ours.csv", tmp_path / "ref.csv"
    ours.write_text(format_train_clean(OURS))
    ref.write_text(format_train_clean(REF))
    assert main(["compare", "--clean", str(ours), "--reference", str(ref)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["image_jaccard"] == 1 / 3 and result["class_recall"] == 2 / 3
    table = captured.err.strip().splitlines()
    assert table[0].split() == ["landmark_id", "both", "only_ours", "only_ref"]
    assert table[1].split() == ["1", "2", "1", "1"]


def test_compare_command_rejects_a_file_that_is_not_a_split(tmp_path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,url,landmark_id\n")
    assert main(["compare", "--clean", str(bad), "--reference", str(bad)]) == 2
    assert "not a train_clean.csv" in capsys.readouterr().err
