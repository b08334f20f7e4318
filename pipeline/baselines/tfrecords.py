"""`gld export-tfrecords`: a clean split and its stored images -> TFRecords in the format of the
official DELG builder (`training/build_image_dataset.py`), ready for `gld train`.

- labels: the split's sorted landmark ids become 0..K-1; `relabeling.csv` (`new_label,old_label`)
  maps them back;
- split: per class, the ids sorted and shuffled with a generator seeded by (seed, landmark_id),
  so a class's split does not depend on the other classes; `max(1, int(0.2 n))` images go to
  validation. One-image classes: the official builder sends the image to validation, which
  leaves the class without a training image; here it stays in training by default
  (`single_image_split="validation"` restores the official choice);
- keys: `image/height`, `image/width`, `image/colorspace` (RGB), `image/channels` (3),
  `image/format` (JPEG), `image/id`, `image/encoded`, `image/class/label`. `image/encoded` is
  the store's normalised JPEG (the official builder copies the downloaded file);
- shards: `train-00000-of-NNNNN` and `validation-00000-of-NNNNN`.

Every id of the split ends in `train`, `validation` or `missing_images.txt` (no stored image);
`export.json` gives the counts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.runner import run_pipeline, write_json
from schemas.gldv2_csv import parse_train_clean
from transforms.ingest.image_store import part_files, read_rows
from transforms.plumbing.progress import tick

STAGE = "export"
TRAIN, VALIDATION = "train", "validation"
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"


@dataclass(frozen=True)
class ExportConfig:
    """`train_clean`: the split (official CSV); `images`: the image store folder (`images/` of a
    curate or ingest output); `output`: folder for the shards, `relabeling.csv`, `export.json`."""

    train_clean: str
    images: str
    output: str
    train_shards: int = 128
    validation_shards: int = 128
    validation_fraction: float = 0.2
    seed: int = 0
    single_image_split: str = TRAIN

    def __post_init__(self) -> None:
        if self.train_shards < 1 or self.validation_shards < 1:
            raise ValueError("train_shards and validation_shards must be >= 1")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError("validation_fraction must be in [0, 1)")
        if self.single_image_split not in (TRAIN, VALIDATION):
            raise ValueError(f"single_image_split must be {TRAIN!r} or {VALIDATION!r}")


def relabel(landmark_ids: list[int]) -> dict[int, int]:
    """Old landmark id -> new label 0..K-1, in ascending order of the old ids."""
    return {old: new for new, old in enumerate(sorted(set(landmark_ids)))}


def split_class(landmark_id: int, ids: list[str], config: ExportConfig) -> dict[str, str]:
    """id -> `train` or `validation` for one class (see the module docstring for the rule)."""
    if len(ids) == 1:
        return {ids[0]: config.single_image_split}
    shuffled = sorted(ids)
    random.Random(f"{config.seed}:{landmark_id}").shuffle(shuffled)
    held_out = max(1, int(config.validation_fraction * len(ids))) if config.validation_fraction > 0 else 0
    return {image_id: VALIDATION if i < held_out else TRAIN for i, image_id in enumerate(shuffled)}


def relabeling_csv(labels: Mapping[int, int]) -> str:
    rows = [f"{new},{old}" for old, new in sorted(labels.items(), key=lambda item: item[1])]
    return "new_label,old_label\n" + "".join(row + "\n" for row in rows)


def tf_example(image_id: str, jpeg: bytes, width: int, height: int, label: int) -> bytes:
    """One serialised `tf.train.Example` with the official builder's keys."""
    import tensorflow as tf

    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    features = {
        "image/height": _int(height),
        "image/width": _int(width),
        "image/colorspace": _bytes(b"RGB"),
        "image/channels": _int(3),
        "image/format": _bytes(b"JPEG"),
        "image/id": _bytes(image_id.encode("utf-8")),
        "image/encoded": _bytes(jpeg),
        "image/class/label": _int(label),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _assignments(line: str, labels: Mapping[int, int], config: ExportConfig) -> Iterator[tuple[str, tuple[int, str]]]:
    """`landmark_id,ids` line of train_clean.csv -> (id, (new label, split)) per id."""
    label, _, images = line.partition(",")
    ids = images.split()
    if not ids:
        return
    for image_id, split in sorted(split_class(int(label), ids, config).items()):
        yield image_id, (labels[int(label)], split)


def _route(joined: tuple[str, dict]) -> list:
    """Joined id -> [] (a stored image outside the split), the id tagged `missing`, or its
    serialised example tagged with its split."""
    image_id, groups = joined
    assigned = list(groups["split"])
    images = list(groups["image"])
    if not assigned:
        return []
    label, split = assigned[0]
    if not images:
        tick(STAGE, "missing_image")
        return [beam.pvalue.TaggedOutput("missing", image_id)]
    # an id stored by a retried bundle has the same content in each part: any copy will do
    row = images[0]
    tick(STAGE, split)
    return [beam.pvalue.TaggedOutput(split, tf_example(image_id, row["jpeg"], row["width"], row["height"], label))]


class ExportTFRecords(beam.PTransform):
    """Pipeline root -> writes the train/validation shards and `missing_images.txt`."""

    def __init__(self, config: ExportConfig, labels: Mapping[int, int]) -> None:
        super().__init__()
        self._config = config
        self._labels = dict(labels)

    def expand(self, pipeline: beam.pvalue.PBegin) -> None:
        cfg = self._config
        split = (
            pipeline
            | "ReadSplit" >> beam.io.ReadFromText(cfg.train_clean, skip_header_lines=1)
            | "AssignSplit" >> beam.FlatMap(_assignments, self._labels, cfg)
        )
        images = (
            pipeline
            | "ListParts" >> beam.Create(part_files(cfg.images))
            | "ReadImages" >> beam.FlatMap(read_rows, ["id", "jpeg", "width", "height"])
            | "KeyById" >> beam.Map(lambda row: (row["id"], row))
        )
        routed = (
            {"split": split, "image": images}
            | "JoinById" >> beam.CoGroupByKey()
            | "Route" >> beam.FlatMap(_route).with_outputs(TRAIN, VALIDATION, "missing")
        )
        for name, shards in ((TRAIN, cfg.train_shards), (VALIDATION, cfg.validation_shards)):
            routed[name] | f"Write{name.title()}" >> beam.io.WriteToTFRecord(
                FileSystems.join(cfg.output, name), shard_name_template=SHARD_TEMPLATE, num_shards=shards
            )
        (
            routed["missing"]
            | "CollectMissing" >> beam.combiners.ToList()
            | "WriteMissing" >> beam.Map(_write_lines, FileSystems.join(cfg.output, "missing_images.txt"))
        )


def _write_lines(ids: list[str], path: str) -> None:
    with FileSystems.create(path) as handle:
        handle.write("".join(f"{i}\n" for i in sorted(ids)).encode("utf-8"))


def run_export(config: ExportConfig, beam_args: list[str] | None = None, show_progress: bool = True) -> dict:
    """Run the export job; returns (and writes as `export.json`) the counts per split."""
    with FileSystems.open(config.train_clean) as handle:
        classes = parse_train_clean(handle.read().decode("utf-8"))
    labels = relabel([lid for lid, ids in classes.items() if ids])
    with FileSystems.create(FileSystems.join(config.output, "relabeling.csv")) as handle:
        handle.write(relabeling_csv(labels).encode("utf-8"))
    export = ExportTFRecords(config, labels)
    counters, seconds = run_pipeline(lambda p: p | "Export" >> export, beam_args, show_progress)
    counts = counters.get(STAGE, {})
    summary = {
        "classes": len(labels),
        "images": sum(len(ids) for ids in classes.values()),
        TRAIN: counts.get(TRAIN, 0),
        VALIDATION: counts.get(VALIDATION, 0),
        "missing_images": counts.get("missing_image", 0),
        "train_shards": config.train_shards,
        "validation_shards": config.validation_shards,
        "seconds": round(seconds, 1),
    }
    summary["accounting_ok"] = summary[TRAIN] + summary[VALIDATION] + summary["missing_images"] == summary["images"]
    write_json(FileSystems.join(config.output, "export.json"), summary)
    return summary
