"""`gld overlap`: verified overlap between a finished curation's splits and an evaluation set.

Everything lands in `<output>/overlap/<eval name>/` (the curation's own files are never
rewritten): `overlap.parquet` (pairs with >= min_inliers), `candidates.parquet` (every
verified candidate), `overlap_classes.csv`, `eval_images.parquet` (one row per evaluation
input row), `eval_manifest.csv` (the resolved list), `overlap.json` (counts, settings), and
with `--exclude` `train_clean_no_overlap.csv`, `c2x_rejected_no_overlap.csv` and
`c2x_scores_no_overlap.parquet`. The evaluation images go into the curation's image store and
features store (same settings key), so a re-run extracts nothing again.

The evaluation source is resolved before the graph is built (`resolve_eval_source`: listing a
folder or reading a `gnd_*.pkl` is the only I/O), so building the job reads nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from pipeline.curation.config import CurateConfig
from pipeline.curation.curate import output_paths, store_folders
from pipeline.curation.outputs import OVERLAP_DIR
from pipeline.curation.run_folder import UnfinishedRun, finished_run, locked
from pipeline.runner import Counters, paths_under, run_pipeline, write_json
from schemas.gldv2_csv import TRAIN_COLUMNS, parse_train_clean
from schemas.overlap import (
    EVAL_OUTCOME_SCHEMA,
    OVERLAP_SCHEMA,
    EvalOutcome,
)
from schemas.records import Failure, FeatureRef, ImageDecision, ImageRef, ManifestRow
from schemas.tables import decision_from_row, ingest_failure_from_row, record_to_row
from schemas.vocabulary import EvalStatus, Reason, Stage, Status
from transforms.features.feature_store import ReuseStoredFeatures
from transforms.features.stage import ExtractFeatures, check_model
from transforms.ingest.fetch import FetchConfig
from transforms.ingest.image_store import FINGERPRINT, IMAGES_DIR, ReadStore, attempt_dirs, part_files
from transforms.ingest.manifest import ManifestConfig, ReadManifest
from transforms.ingest.stage import INDEX_COLUMNS, Ingest, IngestConfig, StoreListing, list_store, read_logged
from transforms.overlap.stage import FindOverlap, OverlapConfig
from transforms.plumbing.progress import tick
from transforms.plumbing.store import (
    ParquetSpec,
    ReadTable,
    WriteSortedParquet,
    WriteTrainClean,
    read_table,
    remove_table,
)
from transforms.selection.c2x import ExportRejectedSameClass

STAGE = "overlap"
EXCLUDE_MODES = ("", "classes", "images")
#: Files written under `<output>/overlap/<eval name>/`, by key.
OVERLAP_OUTPUTS = {
    "overlap": "overlap.parquet",
    "candidates": "candidates.parquet",
    "classes": "overlap_classes.csv",
    "eval_images": "eval_images.parquet",
    "eval_manifest": "eval_manifest.csv",
    "summary": "overlap.json",
    "train_clean": "train_clean_no_overlap.csv",
    "c2x_csv": "c2x_rejected_no_overlap.csv",
    "c2x_scores": "c2x_scores_no_overlap.parquet",
}
CLASSES_HEADER = (
    "landmark_id,clean_images,c2x_images,overlap_train_images,overlap_eval_images,verified_pairs,max_inliers"
)
_STORE_COLUMNS = [*INDEX_COLUMNS, "landmark_id", "line"]
_EVAL_LANDMARK = 0  # the class evaluation rows are filed under in the stores (never read back)


@dataclass(frozen=True)
class OverlapRunConfig:
    """One `gld overlap` run. `output`: a finished `gld curate --output`; `eval_images`: an
    image folder (GLDv2 `a/b/c/<id>.jpg` or flat `<name>.jpg`), a folder of `images_NNN.tar`
    shards, a `gld ingest` store folder, an `id,url` CSV, or a revisitop `gnd_*.pkl` (names
    looked up as `<eval_dir>/<name>.jpg`, default the `jpg/` folder beside it);
    `exclude`: write the splits without the overlapping `classes` or `images` ("" = no);
    `k`/`min_inliers`/`embedding_model`: None takes the curation's `--pairs-k`, threshold and
    descriptor model; `include_c2x`: check the rejected images of clean classes too."""

    output: str
    eval_images: str
    eval_name: str = ""
    eval_dir: str = ""
    exclude: str = ""
    k: int | None = None
    min_inliers: int | None = None
    embedding_model: str | None = None
    include_c2x: bool = True
    retry_failed: bool = False
    allow_private_hosts: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.output or not self.eval_images:
            raise ValueError("output and eval_images are required")
        if self.exclude not in EXCLUDE_MODES:
            raise ValueError(f"exclude must be one of {EXCLUDE_MODES[1:]}")
        if not self.eval_name:
            object.__setattr__(self, "eval_name", default_eval_name(self.eval_images))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.eval_name):
            raise ValueError(f"eval name {self.eval_name!r}: use letters, digits, '.', '_' and '-'")
        if (self.k is not None and self.k < 1) or (self.min_inliers is not None and self.min_inliers < 1):
            raise ValueError("k and min_inliers must be >= 1")


def default_eval_name(eval_images: str) -> str:
    """A folder name for the evaluation set: the source's base name without extension (and
    without revisitop's `gnd_` prefix), reduced to safe characters."""
    base = os.path.basename(eval_images.rstrip("/"))
    base = re.sub(r"\.(pkl|csv|json)$", "", base)
    base = base[4:] if base.startswith("gnd_") else base
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "eval"


# ---- the evaluation source, resolved before the graph is built ------------------------------


@dataclass(frozen=True)
class EvalSource:
    """What the evaluation job reads: `rows` (id, url) to ingest with `fetch`, or the image
    store folder `store` of a `gld ingest` run (its images are used where they are)."""

    kind: str
    rows: tuple[tuple[str, str], ...] = ()
    fetch: FetchConfig = dataclasses.field(default_factory=FetchConfig)
    store: str = ""
    #: (attempt, part) of the store's ingest failure log: its rows that never got an image
    logged: tuple[tuple[int, str], ...] = ()


def _match(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def names_from_ground_truth(path: str) -> list[str]:
    """Image names of a revisitop `gnd_*.pkl` (or the same dictionary as `.json`): queries
    (`qimlist`) then index images (`imlist`), each once. Pickles run code: trusted files only."""
    import pickle

    with open(path, "rb") as handle:
        raw = json.load(handle) if path.endswith(".json") else pickle.load(handle)
    if not isinstance(raw, dict) or "imlist" not in raw or "qimlist" not in raw:
        raise ValueError(f"{path}: not a revisitop ground truth (a dict with 'imlist' and 'qimlist')")
    return list(dict.fromkeys([*map(str, raw["qimlist"]), *map(str, raw["imlist"])]))


def _tar_ids(tar_dir: str) -> list[str]:
    ids = []
    for shard in _match(FileSystems.join(tar_dir, "images_*.tar")):
        with FileSystems.open(shard) as handle, tarfile.open(fileobj=handle, mode="r|") as archive:
            for member in archive:
                name = os.path.basename(member.name)
                if member.isfile() and name.endswith(".jpg"):
                    ids.append(name[: -len(".jpg")])
    return sorted(set(ids))


def _folder_rows(folder: str) -> tuple[list[str], str]:
    """(ids, layout) of the `.jpg` files of an image folder: `gldv2` when every file sits at
    `a/b/c/<id>.jpg`, `flat` when every file is directly in the folder."""
    root = folder.rstrip("/")
    relative = [p[len(root) + 1 :] for p in _match(FileSystems.join(root, "**")) if p.endswith(".jpg")]
    if not relative:
        raise FileNotFoundError(f"no .jpg images under {folder}")
    ids = [r.rsplit("/", 1)[-1][: -len(".jpg")] for r in relative]
    if all("/" not in r for r in relative):
        return sorted(ids), "flat"
    if all(r == f"{i[0]}/{i[1]}/{i[2]}/{i}.jpg" for r, i in zip(relative, ids, strict=True)):
        return sorted(ids), "gldv2"
    raise ValueError(f"{folder}: images must all be <dir>/<id>.jpg or all <dir>/a/b/c/<id>.jpg")


def _csv_rows(path: str) -> list[tuple[str, str]]:
    with FileSystems.open(path) as handle:
        reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8-sig"))
        if "id" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: an evaluation list needs an `id` column (and `url` to download)")
        return [(row["id"], row.get("url") or "") for row in reader]


def resolve_eval_source(config: OverlapRunConfig) -> EvalSource:
    """Decide what `config.eval_images` is and list its images (see `OverlapRunConfig`)."""
    path = config.eval_images.rstrip("/")
    fetch = {"allow_private_hosts": config.allow_private_hosts, "retry_failed": config.retry_failed}
    if path.endswith((".pkl", ".json")):
        folder = config.eval_dir or FileSystems.join(os.path.dirname(path), "jpg")
        rows = tuple((name, "") for name in names_from_ground_truth(path))
        return EvalSource("ground_truth", rows, FetchConfig(images_dir=folder, images_layout="flat", **fetch))
    if path.endswith(".csv"):
        rows = tuple(_csv_rows(path))
        if config.eval_dir:
            layout = (
                "flat"
                if rows and FileSystems.exists(FileSystems.join(config.eval_dir, f"{rows[0][0]}.jpg"))
                else "gldv2"
            )
            return EvalSource("list", rows, FetchConfig(images_dir=config.eval_dir, images_layout=layout, **fetch))
        return EvalSource("list", rows, FetchConfig(**fetch))
    if not FileSystems.exists(path):
        raise FileNotFoundError(f"--eval-images {path} does not exist")
    if part_files(FileSystems.join(path, IMAGES_DIR)):
        logged = tuple((n, part) for n, folder in attempt_dirs(path) for part in part_files(folder))
        return EvalSource("store", store=path, logged=logged)
    if _match(FileSystems.join(path, "images_*.tar")):
        return EvalSource("tars", tuple((i, "") for i in _tar_ids(path)), FetchConfig(tar_dir=path, **fetch))
    ids, layout = _folder_rows(path)
    return EvalSource(
        "folder", tuple((i, "") for i in ids), FetchConfig(images_dir=path, images_layout=layout, **fetch)
    )


def write_manifest(path: str, rows: Iterable[tuple[str, str]]) -> None:
    """The evaluation rows as a manifest (`id,url,landmark_id`, landmark 0), in the given order."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(TRAIN_COLUMNS)
    writer.writerows((image_id, url, _EVAL_LANDMARK) for image_id, url in rows)
    with FileSystems.create(path) as handle:
        handle.write(text.getvalue().encode("utf-8"))


def check_store_settings(store: str, curation: CurateConfig) -> None:
    """Refuse an evaluation store normalised with other decode settings than the curation's:
    its features would not be comparable (nor belong in this features store)."""
    path = FileSystems.join(store, FINGERPRINT)
    wanted = {"decode": dataclasses.asdict(curation.decode)}
    found = None
    if FileSystems.exists(path):
        with FileSystems.open(path) as handle:
            found = json.loads(handle.read().decode("utf-8"))
    if found != json.loads(json.dumps(wanted)):
        raise ValueError(f"{store} was ingested with {found}, the curation with {wanted}: ingest it again with those")


# ---- pure helpers of the job ---------------------------------------------------------------


def training_members(
    landmark_id: int, decisions: Iterable[ImageDecision], include_c2x: bool = True
) -> Iterator[tuple[str, tuple[int, int]] | beam.pvalue.TaggedOutput]:
    """One class's images that a split of the curation lists: main output (id, (landmark_id,
    line)) for the kept images and, with `include_c2x`, the rejected images of a class that
    kept any (the c2x split); tag `counts`: (landmark_id, (kept, c2x))."""
    decisions = list(decisions)
    kept = sorted(d.id for d in decisions if d.status == Status.KEPT)
    rejected = sorted(d.id for d in decisions if d.status == Status.REMOVED) if kept else []
    lines = {d.id: d.line for d in decisions}
    for image_id in kept + (rejected if include_c2x else []):
        yield image_id, (landmark_id, lines[image_id])
    if kept:
        yield beam.pvalue.TaggedOutput("counts", (landmark_id, (len(kept), len(rejected))))


def _selected(decision: ImageDecision) -> Iterator[tuple[int, ImageDecision]]:
    if decision.stage == Stage.SELECT.value:
        yield decision.landmark_id, decision


def _first_stored(rows: Iterable[dict]) -> dict | None:
    return min(rows, key=lambda r: (r["path"], r["index"]), default=None)


def train_image_ref(image_id: str, grouped: dict[str, Iterable]) -> Iterator[ImageRef]:
    """The stored image of a training member (the smallest (path, index) of its copies);
    a member whose image left the store is counted (`overlap/train_image_missing`)."""
    members, stored = list(grouped["members"]), _first_stored(grouped["stored"])
    if not members:
        return
    if stored is None:
        tick(STAGE, "train_image_missing")
        return
    tick(STAGE, "train_images")
    landmark_id, line = members[0]
    row = ManifestRow(line, image_id, stored["url"], landmark_id)
    yield ImageRef(row, stored["path"], stored["index"], stored["width"], stored["height"], stored["sha256"])


def not_a_training_id(image_id: str, grouped: dict[str, Iterable]) -> Iterator[object]:
    """Evaluation items (ManifestRows, or ImageRefs of a store) go on unless their id is also a
    row of the curation (the stores are keyed by id): those fail as `manifest/duplicate_id`."""
    training = bool(list(grouped["train"]))
    for item in grouped["rows"]:
        if not training:
            yield item
            continue
        row = item.row if isinstance(item, ImageRef) else item
        detail = f"id {image_id} is also an input row of the curation"
        yield Failure(row.line, row.id, None, Stage.MANIFEST, Reason.DUPLICATE_ID, detail, row.url)


def _route_failures(item: object) -> Iterator[object]:
    yield beam.pvalue.TaggedOutput("failures", item) if isinstance(item, Failure) else item


def store_image_ref(image_id: str, rows: Iterable[dict]) -> Iterator[ImageRef]:
    """An image of an evaluation store (a `gld ingest` folder) as an ImageRef of its own row."""
    first = _first_stored(rows)
    if first is not None:
        row = ManifestRow(int(first["line"]), image_id, first["url"], _EVAL_LANDMARK)
        yield ImageRef(row, first["path"], first["index"], first["width"], first["height"], first["sha256"])


def logged_failure(image_id: str, grouped: dict[str, Iterable]) -> Iterator[Failure]:
    """The latest logged ingest failure of an evaluation store's id that was never stored."""
    if list(grouped["stored"]):
        return
    attempts = sorted(grouped["failed"], key=lambda item: item[0])
    if attempts:
        row = attempts[-1][1]
        try:
            yield ingest_failure_from_row(row, ManifestRow(int(row["line"]), image_id, row["url"], _EVAL_LANDMARK))
        except ValueError:
            tick(STAGE, "unknown_logged_reason")


def extracted_outcome(ref: FeatureRef) -> EvalOutcome:
    return EvalOutcome(ref.id, ref.line, EvalStatus.EXTRACTED.value, num_features=ref.count)


def failed_outcome(failure: Failure) -> EvalOutcome:
    return EvalOutcome(
        failure.id, failure.line, EvalStatus.FAILED.value, failure.stage.value, failure.reason.value, failure.detail
    )


def class_summary(landmark_id: int, grouped: dict[str, Iterable]) -> Iterator[tuple[int, str]]:
    """The `overlap_classes.csv` line of a class with any verified overlap."""
    pairs = list(grouped["pairs"])
    if not pairs:
        return
    counts = next(iter(grouped["counts"]), (0, 0))
    train_ids = {p.train_id for p in pairs}
    eval_ids = {p.eval_id for p in pairs}
    line = f"{landmark_id},{counts[0]},{counts[1]},{len(train_ids)},{len(eval_ids)},{len(pairs)},"
    yield landmark_id, line + str(max(p.inliers for p in pairs))


def _write_lines(lines: list[tuple[int, str]], path: str, header: str) -> None:
    text = "\n".join([header] + [line for _, line in sorted(lines)]) + "\n"
    with FileSystems.create(path) as handle:
        handle.write(text.encode("utf-8"))


def _keep(decision: ImageDecision, excluded: dict, by: str) -> bool:
    return (decision.landmark_id if by == "classes" else decision.id) not in excluded


def _sorted_writer(path: str, schema: Any, to_row: Any, key: Any) -> WriteSortedParquet:
    return WriteSortedParquet(path, ParquetSpec(schema, to_row, key))


def _pair_key(row: dict) -> tuple:
    return row["train_id"], row["eval_id"]


# ---- the job ---------------------------------------------------------------------------------


def overlap_paths(config: OverlapRunConfig) -> dict[str, str]:
    return paths_under(FileSystems.join(config.output, OVERLAP_DIR, config.eval_name), OVERLAP_OUTPUTS)


def overlap_settings(config: OverlapRunConfig, curation: CurateConfig) -> OverlapConfig:
    """The curation's descriptor, k, matcher and threshold, unless the run overrides them."""
    model = curation.pairs.embedding_model if config.embedding_model is None else config.embedding_model
    return OverlapConfig(
        k=config.k or curation.pairs.k,
        min_inliers=config.min_inliers or curation.select.min_inliers,
        verify=curation.verify,
        embedding_model=model,
        embedding_signature=curation.pairs.embedding_signature,
    )


def _features(label: str, images: beam.PCollection, curation: CurateConfig) -> tuple:
    """ImageRefs -> (FeatureRefs, Failures): stored feature sets reused, the rest extracted
    into the curation's features store."""
    folder = store_folders(curation)["features"]
    reused, to_extract = images | f"Reuse{label}Features" >> ReuseStoredFeatures(folder)
    extract = ExtractFeatures(curation.features, store=folder, parts=curation.store.scaled(1 / 8))
    extracted, failures = to_extract | f"Extract{label}" >> extract
    return (reused, extracted) | f"All{label}Features" >> beam.Flatten(), failures


def _eval_id(item: ManifestRow | ImageRef) -> tuple[str, ManifestRow | ImageRef]:
    return (item.row.id if isinstance(item, ImageRef) else item.id), item


def eval_ingest(source: EvalSource, curation: CurateConfig) -> IngestConfig:
    """How evaluation images from a manifest are ingested: into the curation's store."""
    return IngestConfig(curation.output, source.fetch, curation.decode, curation.store)


def overlap_preflight(source: EvalSource, curation: CurateConfig) -> StoreListing:
    """The checks and listings of the overlap job, before its graph is built: the feature
    model, then (evaluation images from a manifest) the store `Ingest` resumes from."""
    check_model(curation.features)
    return StoreListing() if source.kind == "store" else list_store(eval_ingest(source, curation))


def _eval_images(
    pipeline: beam.Pipeline,
    source: EvalSource,
    manifest: str,
    curation: CurateConfig,
    decisions: beam.PCollection,
    listing: StoreListing,
) -> tuple[beam.PCollection, beam.PCollection]:
    """(evaluation ImageRefs, Failures) from a store folder, or by ingesting the manifest
    (`listing`: the store as `overlap_preflight` found it); evaluation ids that are also
    curation rows fail first."""
    failures = []
    if source.kind == "store":
        stored = (
            pipeline
            | "ReadEvalStore" >> ReadStore(FileSystems.join(source.store, IMAGES_DIR), _STORE_COLUMNS, STAGE)
            | "KeyEvalStored" >> beam.Map(lambda r: (r["id"], r))
        )
        logged = pipeline | "EvalLogs" >> beam.Create(list(source.logged)) | "ReadEvalLogs" >> beam.FlatMap(read_logged)
        failures.append(
            {"stored": stored, "failed": logged}
            | "JoinEvalLogs" >> beam.CoGroupByKey()
            | "LoggedFailures" >> beam.FlatMapTuple(logged_failure)
        )
        items = stored | "GroupEvalStored" >> beam.GroupByKey() | "EvalRefs" >> beam.FlatMapTuple(store_image_ref)
    else:
        items, manifest_failures = pipeline | "ReadEvalManifest" >> ReadManifest(
            ManifestConfig(manifest, TRAIN_COLUMNS)
        )
        failures.append(manifest_failures)
    checked = (
        {
            "rows": items | "KeyEval" >> beam.Map(_eval_id),
            "train": decisions | "TrainingIds" >> beam.Map(lambda d: (d.id, True)),
        }
        | "JoinTrainingIds" >> beam.CoGroupByKey()
        | "NotTraining" >> beam.FlatMapTuple(not_a_training_id)
        | "RouteCollisions" >> beam.FlatMap(_route_failures).with_outputs("failures", main="rows")
    )
    failures.append(checked.failures)
    images = checked.rows
    if source.kind != "store":
        ingested = images | "IngestEval" >> Ingest(eval_ingest(source, curation), listing)
        images = ingested["images"]
        failures.append(ingested["failures"])
    return images, tuple(failures) | "EvalFailures" >> beam.Flatten()


def build_overlap(
    pipeline: beam.Pipeline,
    config: OverlapRunConfig,
    curation: CurateConfig,
    source: EvalSource,
    listing: StoreListing,
) -> dict[str, beam.PCollection]:
    """Wire the overlap job: the curation's split members and the evaluation images as feature
    references, `FindOverlap`, and the tables of `OVERLAP_OUTPUTS`. Reads nothing while built
    (`listing`: what `overlap_preflight` found)."""
    out, curated = overlap_paths(config), output_paths(curation.output)
    settings = overlap_settings(config, curation)
    decisions = (
        pipeline | "ReadDecisions" >> ReadTable(curated["decisions"]) | "ToDecisions" >> beam.Map(decision_from_row)
    )
    members = (
        decisions
        | "Selected" >> beam.FlatMap(_selected)
        | "GroupClasses" >> beam.GroupByKey()
        | "SplitMembers"
        >> beam.FlatMapTuple(training_members, include_c2x=config.include_c2x).with_outputs("counts", main="members")
    )
    stored = (
        pipeline
        | "ReadImageIndex" >> ReadStore(FileSystems.join(curation.output, IMAGES_DIR), _STORE_COLUMNS, STAGE)
        | "KeyStored" >> beam.Map(lambda r: (r["id"], r))
    )
    train_images = (
        {"members": members.members, "stored": stored}
        | "JoinTrainImages" >> beam.CoGroupByKey()
        | "TrainImages" >> beam.FlatMapTuple(train_image_ref)
    )
    train, train_failures = _features("Train", train_images, curation)
    train_failures | "CountTrainFailures" >> beam.Map(lambda f: tick(STAGE, f"train_{f.reason.value}"))
    eval_images, eval_failures = _eval_images(pipeline, source, out["eval_manifest"], curation, decisions, listing)
    evals, feature_failures = _features("Eval", eval_images, curation)
    outcomes = (
        evals | "Extracted" >> beam.Map(extracted_outcome),
        (eval_failures, feature_failures) | "AllEvalFailures" >> beam.Flatten() | "Failed" >> beam.Map(failed_outcome),
    ) | "Outcomes" >> beam.Flatten()
    outcomes | "WriteEvalImages" >> _sorted_writer(
        out["eval_images"], EVAL_OUTCOME_SCHEMA, record_to_row, lambda r: (r["id"], r["line"])
    )
    inputs = {"train": train, "eval": evals}
    if settings.embedding_model:
        inputs |= {"train_images": train_images, "eval_images": eval_images}
    candidates = inputs | "FindOverlap" >> FindOverlap(settings)
    candidates | "WriteCandidates" >> _sorted_writer(out["candidates"], OVERLAP_SCHEMA, record_to_row, _pair_key)
    verified = candidates | "Verified" >> beam.Filter(lambda p: p.inliers >= settings.min_inliers)
    verified | "WriteOverlap" >> _sorted_writer(out["overlap"], OVERLAP_SCHEMA, record_to_row, _pair_key)
    (
        {"pairs": verified | "PairsByClass" >> beam.Map(lambda p: (p.landmark_id, p)), "counts": members.counts}
        | "JoinClassCounts" >> beam.CoGroupByKey()
        | "ClassSummary" >> beam.FlatMapTuple(class_summary)
        | "AllClassLines" >> beam.combiners.ToList()
        | "WriteClasses" >> beam.Map(_write_lines, path=out["classes"], header=CLASSES_HEADER)
    )
    if config.exclude:
        by = config.exclude
        excluded = beam.pvalue.AsDict(
            verified
            | "Excluded" >> beam.Map(lambda p: (p.landmark_id if by == "classes" else p.train_id, True))
            | "DistinctExcluded" >> beam.Distinct()
        )
        remaining = decisions | "WithoutOverlap" >> beam.Filter(_keep, excluded, by)
        remaining | "WriteTrainClean" >> WriteTrainClean(out["train_clean"])
        remaining | "ExportC2x" >> ExportRejectedSameClass(out["c2x_csv"], out["c2x_scores"])
    return {"candidates": candidates, "verified": verified, "outcomes": outcomes}


# ---- the driver ------------------------------------------------------------------------------


def _read_run(output: str) -> dict[str, Any]:
    run = finished_run(output, "gld overlap")
    if not FileSystems.exists(output_paths(output)["decisions"]):
        raise UnfinishedRun(f"{output} has no decisions.parquet: run `gld curate --output {output} ...` again")
    return run


def _split_size(path: str) -> tuple[int, int]:
    """(classes, images) of a train_clean-format file; (0, 0) when absent."""
    if not FileSystems.exists(path):
        return 0, 0
    with FileSystems.open(path) as handle:
        classes = parse_train_clean(handle.read().decode("utf-8"))
    return len(classes), sum(len(ids) for ids in classes.values())


def summarize_overlap(config: OverlapRunConfig, counters: Counters, source: EvalSource, wall: float) -> dict[str, Any]:
    """The counts `gld overlap` prints (and writes to overlap.json)."""
    out, curated = overlap_paths(config), output_paths(config.output)
    outcomes = read_table(out["eval_images"], ["id", "status", "stage", "reason"])
    failed = outcomes.filter(pc.equal(outcomes.column("status"), EvalStatus.FAILED.value)).to_pylist()
    by_reason: dict[str, int] = {}
    for row in failed:
        key = f"{row['stage']}/{row['reason']}"
        by_reason[key] = by_reason.get(key, 0) + 1
    overlap = read_table(out["overlap"], ["train_id", "landmark_id", "eval_id"]).to_pydict()
    candidates = read_table(out["candidates"], ["train_id"]).num_rows
    input_rows = counters.get("manifest", {}).get("input_rows", 0) if source.kind != "store" else outcomes.num_rows
    ids = outcomes.column("id").to_pylist()
    counts = {
        "eval_images": input_rows,
        "eval_extracted": outcomes.num_rows - len(failed),
        "eval_failed": len(failed),
        "eval_failed_by_reason": dict(sorted(by_reason.items())),
        "train_images": counters.get(STAGE, {}).get("train_images", 0),
        "candidate_pairs": candidates,
        "verified_pairs": len(overlap["train_id"]),
        "overlap_classes": len(set(overlap["landmark_id"])),
        "overlap_train_images": len(set(overlap["train_id"])),
        "overlap_eval_images": len(set(overlap["eval_id"])),
        "excluded_images": 0,
        "excluded_classes": 0,
        "accounting_ok": outcomes.num_rows == input_rows and len(set(ids)) == len(ids),
        "seconds": round(wall, 3),
    }
    if config.exclude:
        before, after = _split_size(curated["train_clean"]), _split_size(out["train_clean"])
        c2x_before, c2x_after = _split_size(curated["c2x_csv"]), _split_size(out["c2x_csv"])
        counts["excluded_classes"] = before[0] - after[0]
        counts["excluded_images"] = before[1] - after[1]
        counts["excluded_c2x_images"] = c2x_before[1] - c2x_after[1]
    return counts


def run_overlap(config: OverlapRunConfig, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Resolve the evaluation source, run the overlap job, write `overlap.json` and rebuild
    `report.html`, holding the folder's lock (its image store and report are written too);
    returns the counts."""
    with locked(config.output, "gld overlap", create=False):
        return _run_overlap(config, beam_args)


def _run_overlap(config: OverlapRunConfig, beam_args: list[str] | None) -> dict[str, Any]:
    started = time.time()
    run = _read_run(config.output)
    curation = dataclasses.replace(
        CurateConfig.from_json(run["config"]), output=config.output, progress=config.progress
    )
    source = resolve_eval_source(config)
    if source.kind == "store":
        check_store_settings(source.store, curation)
    out = overlap_paths(config)
    for key in ("overlap", "candidates", "eval_images", "c2x_scores"):
        remove_table(out[key])
    stale = [out[key] for key in ("train_clean", "c2x_csv", "classes") if FileSystems.exists(out[key])]
    if stale:  # an earlier run's files: without --exclude none is written again
        FileSystems.delete(stale)
    if source.kind != "store":
        write_manifest(out["eval_manifest"], source.rows)
    listing = overlap_preflight(source, curation)
    counters, wall = run_pipeline(
        lambda p: build_overlap(p, config, curation, source, listing), beam_args, config.progress
    )
    counts = summarize_overlap(config, counters, source, time.time() - started)
    settings = overlap_settings(config, curation)
    eval_store = source.store or curation.output
    write_json(
        out["summary"],
        {
            "counts": counts,
            "config": dataclasses.asdict(config),
            "settings": dataclasses.asdict(settings),
            "source": source.kind,
            "eval_image_store": FileSystems.join(eval_store, IMAGES_DIR),
            "seconds": {"wall": round(wall, 3)},
            "counters": {stage: dict(sorted(c.items())) for stage, c in sorted(counters.items())},
            "outputs": {
                k: v for k, v in out.items() if config.exclude or k not in ("train_clean", "c2x_csv", "c2x_scores")
            },
        },
    )
    from pipeline.report.page import build_report

    build_report(config.output)
    return counts
