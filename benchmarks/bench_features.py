"""Cost of running SIFT inside the Beam feature stage, against a bare OpenCV loop on the same images.

Both sides start from the same JPEG files: the bare loop reads and decodes each with OpenCV and
runs SIFT (`detectAndCompute`, same `nfeatures`); the pipeline runs `Create(paths) -> read ->
ExtractFeatures` (which decodes the stored JPEG, as in `gld curate`) on Beam's in-process runner
with one worker, so it also pays for Beam's start-up, RunInference batching, RootSIFT, float16
storage, records and counters. (Paths, not bytes, go into `Create`: Beam bz2-compresses a
`Create`'s values into the pipeline graph, which no real run does.) Runs alternate (bare,
pipeline, bare, ...) so that load from other processes hits both; medians are reported. On a
shared machine wall time follows the load of other processes, so the same figures per CPU
second of this process (all its threads) are printed too. With `--delf-model` the DELF step's
images/s is measured too (on a GPU when TensorFlow sees one).

    python benchmarks/bench_features.py --images 120 --runs 5

Last line: {"images", "pipeline_images_per_s", "bare_images_per_s", "overhead_ratio"}, then the
`..._per_cpu_s` and `cpu_overhead_ratio` figures (+ DELF figures); overhead_ratio = bare /
pipeline images per second (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import apache_beam as beam
import cv2
import numpy as np
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from pipeline.demo.data import _texture
from schemas.records import DecodedImage, ManifestRow
from transforms.features.extractors.config import FeatureConfig
from transforms.features.stage import ExtractFeatures


def make_images(folder: str, count: int, width: int, height: int) -> list[str]:
    """Writes `count` distinct landmark-like textures as JPEG files (quality 90); their paths."""
    paths = []
    for seed in range(count):
        pixels = _texture(np.random.default_rng([seed, 17]), (width, height), distractor=False)
        paths.append(os.path.join(folder, f"{seed:05d}.jpg"))
        cv2.imwrite(paths[-1], pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return paths


def bare_loop(paths: list[str], max_features: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for OpenCV alone: read + decode + grey + SIFT on every image."""
    sift = cv2.SIFT_create(nfeatures=max_features)
    started, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        pixels = cv2.imread(path, cv2.IMREAD_COLOR)
        sift.detectAndCompute(cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY), None)
    return time.perf_counter() - started, time.process_time() - cpu


def _read(item: tuple[int, str]) -> DecodedImage:
    """The stored-image record of one file; the feature step decodes its pixels on use."""
    index, path = item
    with open(path, "rb") as handle:
        data = handle.read()
    with Image.open(io.BytesIO(data)) as header:  # reads the size only
        width, height = header.size
    row = ManifestRow(line=index + 1, id=f"{index:016x}", url="", landmark_id=1)
    return DecodedImage(row, data, width, height, width, height, len(data), "")


def pipeline_run(paths: list[str], config: FeatureConfig) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, images with features) for the whole in-process pipeline,
    start-up included."""
    options = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    started, cpu = time.perf_counter(), time.process_time()
    pipeline = beam.Pipeline(options=options)
    _ = (
        pipeline
        | "Images" >> beam.Create(list(enumerate(paths)))
        | "Read" >> beam.Map(_read)
        | "ExtractFeatures" >> ExtractFeatures(config)
    )
    result = pipeline.run()
    result.wait_until_finish()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    query = MetricsFilter().with_namespace("features").with_name("ok")
    return seconds, cpu_seconds, sum(c.committed for c in result.metrics().query(query)["counters"])


def _delf_figures(paths: list[str], model: str, max_features: int) -> dict[str, object]:
    import tensorflow as tf

    config = FeatureConfig(extractor="delf", delf_model=model, max_features=max_features)
    pipeline_run(paths[:2], config)  # load TensorFlow and trace the model outside the timing
    seconds, _, done = pipeline_run(paths, config)
    assert done == len(paths)
    device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return {"delf_images_per_s": round(len(paths) / seconds, 2), "delf_device": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--max-features", type=int, default=FeatureConfig().max_features)
    parser.add_argument("--runs", type=int, default=5, help="alternating runs of each side; medians are reported")
    parser.add_argument("--delf-model", help="also measure the DELF step with this SavedModel / TF-Hub handle")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="bench_features_")
    paths = make_images(folder, args.images, args.width, args.height)
    config = FeatureConfig(max_features=args.max_features)
    pipeline_run(paths[:2], config)  # import and warm-up costs paid once, as on a long-running worker
    rates: dict[str, list[float]] = {"bare": [], "pipeline": [], "bare_cpu": [], "pipeline_cpu": []}
    for run in range(args.runs):
        wall, cpu = bare_loop(paths, args.max_features)
        rates["bare"].append(args.images / wall)
        rates["bare_cpu"].append(args.images / cpu)
        wall, cpu, done = pipeline_run(paths, config)
        assert done == args.images, f"pipeline produced {done} feature records for {args.images} images"
        rates["pipeline"].append(args.images / wall)
        rates["pipeline_cpu"].append(args.images / cpu)
        print(
            f"run {run}: images/s bare {rates['bare'][-1]:.2f}, pipeline {rates['pipeline'][-1]:.2f}; "
            f"per CPU s bare {rates['bare_cpu'][-1]:.2f}, pipeline {rates['pipeline_cpu'][-1]:.2f}",
            flush=True,
        )
    median = {name: statistics.median(values) for name, values in rates.items()}
    result: dict[str, object] = {
        "images": args.images,
        "pipeline_images_per_s": round(median["pipeline"], 2),
        "bare_images_per_s": round(median["bare"], 2),
        "overhead_ratio": round(median["bare"] / median["pipeline"], 3),
        "pipeline_images_per_cpu_s": round(median["pipeline_cpu"], 2),
        "bare_images_per_cpu_s": round(median["bare_cpu"], 2),
        "cpu_overhead_ratio": round(median["bare_cpu"] / median["pipeline_cpu"], 3),
    }
    if args.delf_model:
        result.update(_delf_figures(paths, args.delf_model, args.max_features))
    shutil.rmtree(folder)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
