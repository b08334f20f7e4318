"""Pairs and memory of large classes through GeneratePairs + VerifyPairs.

For each class size (default: 200 and 2000 images per class, the same 2000 images in all, so
only the class size changes) a fresh process runs the two stages on synthetic feature records
(`--features` random RootSIFT-like descriptors per image, made from the id inside the
pipeline, so the input itself is small) with `--pairs knn
--pairs-k 10` (the offline global descriptor), under Beam's in-process runner with worker
processes (`--direct_running_mode=multi_processing`), and reports:

- `pairs`: verified candidate pairs, against the bound n*k;
- `block_feature_sets_max` / `block_feature_mib_max`: the most feature sets (and MiB) one
  verification call held (Beam distributions `verify/block_feature_sets|bytes`);
- `worker_peak_rss_mib`: the peak resident memory of the worker processes that ran the stages;
- `runner_peak_rss_mib`: the peak of the runner process, which in this local runner also buffers
  every shuffle in memory (on Dataflow the shuffle service holds it), so it grows with the data.

The last line is one JSON object with a row per class size and `pairs_within_nk` /
`worker_rss_ratio` (largest over smallest class: near 1 when memory does not grow with a class).

    python benchmarks/bench_pairs_memory.py [--total 2000] [--class-sizes 200 2000] [--k 10] [--features 100]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.records import LocalFeatures
from transforms.pairs import GeneratePairs, PairConfig
from transforms.verify import VerifyConfig, VerifyPairs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LANDMARK = 7


def synthetic_features(image_id: str, count: int, groups: int, class_size: int) -> LocalFeatures:
    """Deterministic features of one image: uint8 descriptors [count, 128], keypoints in 1024x768;
    images of one of `groups` groups share a third of their descriptors, so knn has real neighbours."""
    seed = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    # the group follows from a hash, not the id's rank: real ids are random, so sorted ids have
    # no locality of their own
    group = seed % groups
    shared = np.random.default_rng(group).integers(0, 256, (count // 3, 128), dtype=np.uint8)
    own = rng.integers(0, 256, (count - len(shared), 128), dtype=np.uint8)
    return LocalFeatures(
        id=image_id,
        landmark_id=LANDMARK + int(image_id, 16) // class_size,
        line=int(image_id, 16),
        keypoints=rng.uniform((0, 0), (1024, 768), size=(count, 2)).astype(np.float32),
        descriptors=np.concatenate([shared, own]),
        scales=np.ones(count, np.float32),
        scores=np.ones(count, np.float32),
        width=1024,
        height=768,
    )


def _distribution_max(result: beam.runners.runner.PipelineResult, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_namespace("verify").with_name(name))["distributions"]
    return max((d.committed or d.attempted).max for d in found)


def run_one(images: int, class_size: int, k: int, features: int) -> dict:
    """Run the two stages on `images` in classes of `class_size` and measure (this process is
    the runner)."""
    options = PipelineOptions(
        ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    )
    started = time.perf_counter()
    pipeline = beam.Pipeline(options=options)
    ids = [f"{i:016x}" for i in range(images)]
    records = (
        pipeline
        | beam.Create(ids)
        | beam.Map(synthetic_features, count=features, groups=max(1, images // 10), class_size=class_size)
    )
    pairs, needs = records | GeneratePairs(PairConfig(mode="knn", k=k))
    _ = {"features": records, "pairs": pairs, "needs": needs} | VerifyPairs(VerifyConfig())
    result = pipeline.run()
    result.wait_until_finish()
    # one verify/<outcome> count per verified pair
    counted = result.metrics().query(MetricsFilter().with_namespace("verify"))["counters"]
    return {
        "images": images,
        "class_size": class_size,
        "pairs": sum(c.committed or c.attempted for c in counted if c.key.metric.name != "busy_ms"),
        "n_times_k": images * k,
        "block_feature_sets_max": _distribution_max(result, "block_feature_sets"),
        "block_feature_mib_max": round(_distribution_max(result, "block_feature_bytes") / 2**20, 2),
        "worker_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "runner_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total", type=int, default=2000, help="images in all")
    parser.add_argument("--class-sizes", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--features", type=int, default=100, help="descriptors per synthetic image")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.total, args.one, args.k, args.features)))
        return
    rows = []
    for size in args.class_sizes:
        options = ["--total", str(args.total), "--k", str(args.k), "--features", str(args.features)]
        command = [sys.executable, __file__, "--one", str(size), *options]
        # the runner starts its workers as fresh interpreters: they find this project by PYTHONPATH
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print("  ".join(f"{key} {value}" for key, value in rows[-1].items()), file=sys.stderr)
    print(
        json.dumps(
            {
                "k": args.k,
                "features_per_image": args.features,
                "sizes": rows,
                "pairs_within_nk": all(r["pairs"] <= r["n_times_k"] for r in rows),
                "worker_rss_ratio": round(rows[-1]["worker_peak_rss_mib"] / rows[0]["worker_peak_rss_mib"], 3),
                "block_sets_ratio": round(rows[-1]["block_feature_sets_max"] / rows[0]["block_feature_sets_max"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
