"""gld export-tfrecords: relabelling, per-class split, shard names and the written examples."""

from __future__ import annotations

import csv
import os

import pytest
import tensorflow as tf

from pipeline.baselines.tfrecords import ExportConfig, relabel, relabeling_csv, run_export, split_class
from tests.baseline_data import write_store, write_train_clean

CLASSES = {
    7: [f"{7:03d}{i:013x}" for i in range(10)],
    3: [f"{3:03d}{i:013x}" for i in range(5)],
    42: ["0420000000000000"],
}


def test_relabel_sorts_old_ids():
    assert relabel([42, 3, 7, 3]) == {3: 0, 7: 1, 42: 2}
    assert relabeling_csv({3: 0, 7: 1}) == "new_label,old_label\n0,3\n1,7\n"


def test_split_sizes_and_seed():
    config = ExportConfig("t.csv", "images", "out")
    split = split_class(7, CLASSES[7], config)
    assert sorted(split) == sorted(CLASSES[7])
    assert sum(v == "validation" for v in split.values()) == 2  # max(1, int(0.2 * 10))
    assert split == split_class(7, list(reversed(CLASSES[7])), config)  # input order does not matter
    assert sum(v == "validation" for v in split_class(3, CLASSES[3], config).values()) == 1
    other_seed = ExportConfig("t.csv", "images", "out", seed=5)
    assert split_class(7, CLASSES[7], other_seed) != split


def test_single_image_class_choice():
    assert split_class(42, ["a"], ExportConfig("t", "i", "o")) == {"a": "train"}
    official = ExportConfig("t", "i", "o", single_image_split="validation")
    assert split_class(42, ["a"], official) == {"a": "validation"}


def test_config_is_validated():
    with pytest.raises(ValueError):
        ExportConfig("t", "i", "o", train_shards=0)
    with pytest.raises(ValueError):
        ExportConfig("t", "i", "o", single_image_split="test")


def _read(paths):
    examples = []
    for record in tf.data.TFRecordDataset(sorted(paths)):
        examples.append(tf.train.Example.FromString(record.numpy()).features.feature)
    return examples


def test_export_writes_official_records(tmp_path):
    stored = {lid: ids for lid, ids in CLASSES.items()}
    stored[3] = CLASSES[3][:-1]  # one id of the split has no stored image
    images = write_store(str(tmp_path / "store"), stored)
    train_clean = write_train_clean(str(tmp_path / "train_clean.csv"), CLASSES)
    out = tmp_path / "records"
    summary = run_export(
        ExportConfig(train_clean, images, str(out), train_shards=3, validation_shards=2), show_progress=False
    )
    assert summary["classes"] == 3 and summary["images"] == 16
    assert (summary["train"], summary["validation"], summary["missing_images"]) == (12, 3, 1)
    assert summary["accounting_ok"]
    names = sorted(os.listdir(out))
    assert [n for n in names if n.startswith("train")] == [f"train-0000{i}-of-00003" for i in range(3)]
    assert [n for n in names if n.startswith("validation")] == [f"validation-0000{i}-of-00002" for i in range(2)]
    assert (out / "missing_images.txt").read_text() == CLASSES[3][-1] + "\n"
    with open(out / "relabeling.csv", encoding="utf-8") as handle:
        assert list(csv.reader(handle)) == [["new_label", "old_label"], ["0", "3"], ["1", "7"], ["2", "42"]]
    train = _read(out.glob("train-*"))
    validation = _read(out.glob("validation-*"))
    assert len(train) == 12 and len(validation) == 3
    keys = {
        "image/height", "image/width", "image/colorspace", "image/channels",
        "image/format", "image/id", "image/encoded", "image/class/label",
    }  # fmt: skip
    assert all(set(example) == keys for example in train + validation)
    first = train[0]
    assert first["image/colorspace"].bytes_list.value[0] == b"RGB"
    assert first["image/format"].bytes_list.value[0] == b"JPEG"
    assert first["image/channels"].int64_list.value[0] == 3
    assert first["image/height"].int64_list.value[0] == 64
    decoded = tf.io.decode_jpeg(first["image/encoded"].bytes_list.value[0])
    assert tuple(decoded.shape) == (64, 64, 3)
    label_of = {
        ex["image/id"].bytes_list.value[0].decode(): ex["image/class/label"].int64_list.value[0] for ex in train
    }
    assert label_of["0420000000000000"] == 2  # the one-image class trains by default
    assert {label_of[i] for i in CLASSES[7] if i in label_of} == {1}
    held_out = {ex["image/id"].bytes_list.value[0].decode() for ex in validation}
    assert not held_out & set(label_of)
