"""CPU cost of the learned path against the default, on the same real photos in one process.

Takes a folder DIR with `train.csv` (`id,url,landmark_id`) and `images/a/b/c/<id>.jpg` (the
format of `landmarks-dev`). It normalises `--images` of them as the pipeline does (longest side
1024 px) and measures, per image, the default SIFT (4000 RootSIFT) and ALIKED (`aliked-n16`,
640 px) at each `--budgets` keypoint budget; then, on up to `--pairs` same-class pairs, per pair,
nearest-neighbour matching + RANSAC of SIFT (the default), of ALIKED, and LightGlue + RANSAC of
ALIKED. Each extractor and matcher is the project's own (`transforms.features.stage`,
`transforms.matching.verify`); PyTorch runs on one thread, as in a pipeline worker thread, and
freed memory is kept as in a worker process (`transforms.plumbing.allocator`). The peer
`aliked-kornia-<budget>` runs the same extraction through kornia's own `ALIKED.forward` instead
of the project's CPU dense map (`ratio_to_kornia` on the project's line: ours / kornia).

Prints one JSON line per mode (`ms_per_image` or `ms_per_pair`: the median over items,
`ratio_to_default`: against SIFT's median, `verified`: pairs with >= 30 inliers) and a last
line with all of them. Medians and ratios, not absolute times: this machine is shared.

    python benchmarks/bench_learned.py --data ../shared/data/landmarks-dev [--images 40] [--pairs 60] \
        [--working-side 480]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
import time
from collections import defaultdict

import numpy as np
import torch
from kornia.feature import ALIKED

from schemas.records import LocalFeatures
from transforms.features.extractors import learned
from transforms.features.extractors.config import FeatureConfig
from transforms.features.extractors.registry import EXTRACTORS
from transforms.ingest.decode import DecodeConfig, Normalised, normalise
from transforms.matching.verify import VerifyConfig, verify_pair
from transforms.plumbing.allocator import keep_freed_memory


def _images(data: str, count: int) -> dict[str, tuple[int, np.ndarray]]:
    """(landmark_id, RGB pixels normalised as the pipeline does) of the first `count` readable
    rows of classes with at least two rows, in manifest order."""
    with open(os.path.join(data, "train.csv"), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    sizes = defaultdict(int)
    for row in rows:
        sizes[row["landmark_id"]] += 1
    out: dict[str, tuple[int, np.ndarray]] = {}
    for row in rows:
        image_id = row["id"]
        path = os.path.join(data, "images", image_id[0], image_id[1], image_id[2], f"{image_id}.jpg")
        if sizes[row["landmark_id"]] < 2 or not os.path.exists(path):
            continue
        with open(path, "rb") as handle:
            decoded = normalise(handle.read(), DecodeConfig())
        if not isinstance(decoded, Normalised):
            continue
        out[image_id] = (int(row["landmark_id"]), decoded.pixels)
        if len(out) == count:
            break
    return out


def _extract(images: dict, config: FeatureConfig) -> tuple[dict[str, LocalFeatures], list[float]]:
    extractor = EXTRACTORS[config.extractor](config)
    features, times = {}, []
    for image_id, (landmark_id, pixels) in images.items():
        start = time.perf_counter()
        keypoints, descriptors, scales, scores = extractor(pixels)
        times.append(time.perf_counter() - start)
        height, width = pixels.shape[:2]
        features[image_id] = LocalFeatures(
            image_id, landmark_id, 0, keypoints, descriptors, scales, scores, width, height
        )
    return features, times


def _kornia_forward(model: ALIKED, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`learned._aliked_forward` through kornia's own `ALIKED.forward`: the peer row."""
    found = model(image)[0]
    return found.keypoints, found.keypoint_scores, found.descriptors


def _verify(features: dict[str, LocalFeatures], pairs: list, config: VerifyConfig) -> tuple[list[float], int]:
    times, verified = [], 0
    for a, b in pairs:
        start = time.perf_counter()
        inliers = verify_pair(features[a], features[b], config)[1]
        times.append(time.perf_counter() - start)
        verified += inliers >= 30
    return times, verified


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with train.csv and images/")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4096], help="ALIKED keypoint budgets")
    parser.add_argument("--working-side", type=int, default=480, help="ALIKED's working side (the default preset's)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a pipeline worker thread
    keep_freed_memory()
    images = _images(args.data, args.images)
    by_class = defaultdict(list)
    for image_id, (landmark_id, _) in images.items():
        by_class[landmark_id].append(image_id)
    pairs = [p for ids in by_class.values() for p in itertools.combinations(sorted(ids), 2)][: args.pairs]
    results = []

    def report(mode: str, unit: str, times: list[float], baseline: float | None, **extra: object) -> float:
        median = statistics.median(times) * 1000
        line = {"mode": mode, unit: round(median, 1), "items": len(times), **extra}
        line["ratio_to_default"] = round(median / baseline, 2) if baseline else 1.0
        results.append(line)
        print(json.dumps(line), flush=True)
        return median

    sift, sift_times = _extract(images, FeatureConfig())
    sift_ms = report("sift-4000", "ms_per_image", sift_times, None)
    learned_features = {}
    for budget in args.budgets:
        config = FeatureConfig(extractor="aliked", max_features=budget, working_side=args.working_side)
        ours_forward = learned._aliked_forward
        learned._aliked_forward = _kornia_forward
        try:
            _, times = _extract(images, config)
        finally:
            learned._aliked_forward = ours_forward
        kornia_ms = report(f"aliked-kornia-{budget}", "ms_per_image", times, sift_ms)
        learned_features[budget], times = _extract(images, config)
        mean_count = statistics.mean(f.count for f in learned_features[budget].values())
        median = report(f"aliked-{budget}", "ms_per_image", times, sift_ms, mean_keypoints=round(mean_count))
        results[-1]["ratio_to_kornia"] = round(median / kornia_ms, 2)
    times, verified = _verify(sift, pairs, VerifyConfig())
    nn_ms = report("sift-4000+nn", "ms_per_pair", times, None, verified=verified)
    for budget in args.budgets:
        for matcher in ("nn", "lightglue"):
            times, verified = _verify(learned_features[budget], pairs, VerifyConfig(matcher=matcher))
            report(f"aliked-{budget}+{matcher}", "ms_per_pair", times, nn_ms, verified=verified)
    print(json.dumps({"images": len(images), "pairs": len(pairs), "results": results}))


if __name__ == "__main__":
    main()
