"""Keypoint budget, working side and LightGlue's adaptive depth/width against recall and cost,
on real photos with known truth, in one process.

Takes a folder DIR in the format of `landmarks-dev` (`train.csv` `id,url,landmark_id`,
`images/a/b/c/<id>.jpg`, `truth.csv` `id,landmark_id,role,source`). Every readable image is
normalised as the pipeline does (longest side 1024 px), then, interleaved image by image:
SIFT (the default: 4000 RootSIFT) and ALIKED once per `--sides` working side at the largest
`--budgets` budget. Smaller budgets are the top K of that list: the extractor runs ALIKED with no
budget and cuts its score-ordered list itself (`AlikedExtractor`), so the top K equal an
extraction with `max_features=K`. Then ALL same-class pairs, in a seeded shuffled order, each
through every setting in turn (so load changes hit all settings alike): SIFT + nearest
neighbours (the default `VerifyConfig()`), ALIKED + nearest neighbours, and ALIKED + LightGlue
at each `--lightglue DEPTH:WIDTH` (`depth_confidence`, `width_confidence`; -1 disables), each
followed by the project's RANSAC (`transforms.matching.verify`).

Writes every image's and pair's measurements to `--out` (JSON lines, appended as they come, so
a killed run keeps what it measured) and prints, per setting: median CPU ms per image
(extraction) and per pair (matching + RANSAC) with their ratio to SIFT's, member-member pairs
with >= `--min-inliers`, the most inliers of any pair with a noise image, and the precision and
recall of "kept = in a connected component of >= 2 images of the >= min-inliers graph of its
class" (the components rule without its isolated-component exception). `--summarise FILE...`
prints the table of earlier (or running) `--out` files, on their common pairs, without measuring;
`--pairs-csv` also writes each pair's inliers per setting as CSV. CPU time
(`time.process_time`), medians and ratios: this machine is shared.

    python benchmarks/bench_learned_sweep.py --data ../shared/data/landmarks-dev --out sweep.jsonl \\
        [--sides 640] [--budgets 1024 2048 4096] [--lightglue 0.95:0.99 0.9:0.95]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np

from schemas.records import LocalFeatures
from transforms.features.extractors.config import FeatureConfig
from transforms.features.extractors.registry import EXTRACTORS, learned_module
from transforms.ingest.decode import DecodeConfig, Normalised, normalise
from transforms.matching.verify import VerifyConfig, ransac_mask, verify_pair
from transforms.plumbing.threads import one_blas_thread

SIFT = "sift-4000"


def read_images(data: str) -> tuple[dict[str, tuple[int, str, np.ndarray]], dict[str, str]]:
    """({id: (landmark_id, role, RGB pixels normalised as the pipeline does)} of the readable
    rows, in manifest order; {id: role} of every row of truth.csv)."""
    with open(os.path.join(data, "truth.csv"), newline="", encoding="utf-8") as handle:
        roles = {row["id"]: row["role"] for row in csv.DictReader(handle)}
    with open(os.path.join(data, "train.csv"), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    images = {}
    for row in rows:
        image_id = row["id"]
        path = os.path.join(data, "images", image_id[0], image_id[1], image_id[2], f"{image_id}.jpg")
        if not os.path.exists(path):
            continue
        with open(path, "rb") as handle:
            decoded = normalise(handle.read(), DecodeConfig())
        if isinstance(decoded, Normalised):
            images[image_id] = (int(row["landmark_id"]), roles[image_id], decoded.pixels)
    return images, roles


def top(features: LocalFeatures, budget: int) -> LocalFeatures:
    """The `budget` strongest features (the extractor orders them strongest first)."""
    return dataclasses.replace(
        features,
        keypoints=features.keypoints[:budget],
        descriptors=features.descriptors[:budget],
        scales=features.scales[:budget],
        scores=features.scores[:budget],
    )


def _timed(call, *args):  # any callable and its arguments
    start = time.process_time()
    result = call(*args)
    return result, (time.process_time() - start) * 1000


def _lightglue_verify(a: LocalFeatures, b: LocalFeatures, depth: float, width: float) -> int:
    """Inliers of `verify_pair(a, b, VerifyConfig(matcher="lightglue"))` with LightGlue at
    adaptive depth/width (`depth`, `width`): the same two steps, correspondences then RANSAC."""
    config = VerifyConfig(matcher="lightglue")
    if a.count == 0 or b.count == 0:
        return 0
    (idx_a, idx_b) = learned_module().lightglue_match_batch([(a, b)], config.lightglue_min_confidence, depth, width)[0]
    return int(np.count_nonzero(ransac_mask(a.keypoints[idx_a], b.keypoints[idx_b], config)[0]))


def measure(args: argparse.Namespace) -> None:
    """Extract and verify as the module docstring says, appending JSON lines to `args.out`."""
    import torch  # the learned extra; one thread, as in a pipeline worker thread

    torch.set_num_threads(1)
    one_blas_thread()  # numpy's too, as in a pipeline worker thread
    images, roles = read_images(args.data)
    largest = max(args.budgets)
    sift = EXTRACTORS["sift"](FeatureConfig())
    aliked = {side: EXTRACTORS["aliked"](FeatureConfig("aliked", largest, working_side=side)) for side in args.sides}
    features: dict[str, dict[str, LocalFeatures]] = defaultdict(dict)
    with open(args.out, "a", encoding="utf-8") as out:
        out.write(json.dumps({"kind": "run", "roles": roles, "min_inliers": args.min_inliers}) + "\n")
        for image_id, (landmark_id, role, pixels) in images.items():
            cpu_ms, counts = {}, {}
            height, width = pixels.shape[:2]
            for name, extractor in [(SIFT, sift)] + [(f"aliked{side}", aliked[side]) for side in args.sides]:
                arrays, cpu_ms[name] = _timed(extractor, pixels)
                features[name][image_id] = LocalFeatures(image_id, landmark_id, 0, *arrays, width, height)
                counts[name] = len(arrays[0])
            line = {"kind": "image", "id": image_id, "landmark_id": landmark_id, "role": role}
            out.write(json.dumps({**line, "cpu_ms": cpu_ms, "keypoints": counts}) + "\n")
            out.flush()
        by_class = defaultdict(list)
        for image_id, (landmark_id, _, _) in images.items():
            by_class[landmark_id].append(image_id)
        pairs = [p for ids in by_class.values() for p in itertools.combinations(sorted(ids), 2)]
        random.Random(0).shuffle(pairs)
        lightglue = [tuple(float(x) for x in spec.split(":")) for spec in args.lightglue]
        for a, b in pairs[: args.pairs or None]:
            inliers, cpu_ms = {}, {}
            (_, inliers[f"{SIFT}+nn"], _), cpu_ms[f"{SIFT}+nn"] = _timed(
                verify_pair, features[SIFT][a], features[SIFT][b], VerifyConfig()
            )
            for side, budget in itertools.product(args.sides, args.budgets):
                fa, fb = top(features[f"aliked{side}"][a], budget), top(features[f"aliked{side}"][b], budget)
                name = f"aliked{side}-{budget}"
                (_, inliers[f"{name}+nn"], _), cpu_ms[f"{name}+nn"] = _timed(verify_pair, fa, fb, VerifyConfig())
                for depth, width in lightglue:
                    setting = f"{name}+lg{depth:g}:{width:g}"
                    inliers[setting], cpu_ms[setting] = _timed(_lightglue_verify, fa, fb, depth, width)
            line = {"kind": "pair", "a": a, "b": b, "landmark_id": images[a][0], "roles": [images[a][1], images[b][1]]}
            out.write(json.dumps({**line, "inliers": inliers, "cpu_ms": cpu_ms}) + "\n")
            out.flush()


def _components_kept(nodes: list[str], edges: list[tuple[str, str]]) -> set[str]:
    """Nodes in a connected component of >= 2 nodes of the graph (union-find)."""
    parent = {node: node for node in nodes}

    def root(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in edges:
        parent[root(a)] = root(b)
    sizes = defaultdict(int)
    for node in nodes:
        sizes[root(node)] += 1
    return {node for node in nodes if sizes[root(node)] >= 2}


def _read_runs(paths: list[str]) -> tuple[dict[str, str], int, list[dict], list[dict]]:
    """(roles, min_inliers, image lines, pair lines) of the `--out` files at `paths`, merged:
    each image's and pair's settings of all files, for the pairs every file has measured (the
    runs verify pairs in the same seeded order, so a shorter run's pairs are a longer one's)."""
    roles, min_inliers = {}, 30
    images: dict[str, dict] = {}
    pairs: list[dict[tuple[str, str], dict]] = []
    for path in paths:
        pairs.append({})
        with open(path, encoding="utf-8") as handle:
            for text in handle:
                line = json.loads(text)
                if line["kind"] == "run":
                    roles, min_inliers = line["roles"], line["min_inliers"]
                elif line["kind"] == "image":
                    merged = images.setdefault(line["id"], {**line, "cpu_ms": {}, "keypoints": {}})
                    merged["cpu_ms"].update(line["cpu_ms"])
                    merged["keypoints"].update(line["keypoints"])
                else:
                    pairs[-1][line["a"], line["b"]] = line
    common = set.intersection(*(set(run) for run in pairs))
    merged_pairs = []
    for key in sorted(common):
        line = {**pairs[0][key], "inliers": {}, "cpu_ms": {}}
        for run in pairs:
            line["inliers"].update(run[key]["inliers"])
            line["cpu_ms"].update(run[key]["cpu_ms"])
        merged_pairs.append(line)
    return roles, min_inliers, list(images.values()), merged_pairs


def summarise(paths: list[str]) -> list[dict]:
    """One row per setting of the JSON lines at `paths` (see the module docstring and
    `_read_runs`). Recall and precision count the images of the readable rows' classes, so
    they are only comparable between summaries of the same pairs."""
    roles, min_inliers, images, pairs = _read_runs(paths)
    members = {i for i, role in roles.items() if role == "member"}
    nodes = defaultdict(list)
    for image in images:
        nodes[image["landmark_id"]].append(image["id"])
    image_ms = {name: statistics.median(i["cpu_ms"][name] for i in images) for name in images[0]["cpu_ms"]}
    member_pairs = [p for p in pairs if p["roles"] == ["member", "member"]]
    rows = []
    for setting in pairs[0]["inliers"]:
        extraction = setting.split("-")[0] if setting.startswith("aliked") else SIFT
        budget = int(setting.split("-")[1].split("+")[0])
        edges = defaultdict(list)
        for p in pairs:
            if p["inliers"][setting] >= min_inliers:
                edges[p["landmark_id"]].append((p["a"], p["b"]))
        kept = set().union(*(_components_kept(ids, edges[c]) for c, ids in nodes.items()))
        pair_ms = statistics.median(p["cpu_ms"][setting] for p in pairs)
        row = {
            "setting": setting,
            "ms_image": round(image_ms[extraction], 1),
            "keypoints": round(statistics.mean(min(i["keypoints"][extraction], budget) for i in images)),
            "ms_pair": round(pair_ms, 1),
            "pair_ratio": round(pair_ms / statistics.median(p["cpu_ms"][f"{SIFT}+nn"] for p in pairs), 2),
            "image_ratio": round(image_ms[extraction] / image_ms[SIFT], 2),
            "member_pairs_verified": sum(p["inliers"][setting] >= min_inliers for p in member_pairs),
            "member_pairs": len(member_pairs),
            "noise_max_inliers": max((p["inliers"][setting] for p in pairs if "noise" in p["roles"]), default=0),
            "kept": len(kept),
            "precision": round(len(kept & members) / len(kept), 3) if kept else 1.0,
            "recall": round(len(kept & members) / len(members), 3),
        }
        rows.append(row)
    return rows


def write_pairs_csv(paths: list[str], target: str) -> None:
    """Every common pair of the `--out` files at `paths` as one CSV row: a, b, landmark_id,
    role_a, role_b, then the inliers of each setting (for selection rules run elsewhere)."""
    _, _, _, pairs = _read_runs(paths)
    settings = list(pairs[0]["inliers"]) if pairs else []
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "landmark_id", "role_a", "role_b", *settings])
        for p in pairs:
            writer.writerow([p["a"], p["b"], p["landmark_id"], *p["roles"], *(p["inliers"][s] for s in settings)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder with train.csv, truth.csv and images/")
    parser.add_argument("--out", help="JSON lines file the measurements are appended to")
    parser.add_argument("--sides", type=int, nargs="+", default=[640], help="ALIKED working sides")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1024, 2048, 4096], help="ALIKED keypoint budgets")
    parser.add_argument(
        "--lightglue", nargs="+", default=["0.95:0.99"], help="DEPTH:WIDTH confidences of LightGlue (-1 disables)"
    )
    parser.add_argument("--pairs", type=int, default=0, help="verify only the first N shuffled pairs (0: all)")
    parser.add_argument("--min-inliers", type=int, default=30)
    parser.add_argument(
        "--summarise", metavar="FILE", nargs="+", help="print the table of --out files (their common pairs) and stop"
    )
    parser.add_argument("--pairs-csv", metavar="FILE", help="also write every pair's inliers per setting as CSV")
    args = parser.parse_args()
    if not args.summarise:
        if not (args.data and args.out):
            parser.error("--data and --out are needed to measure")
        measure(args)
    runs = args.summarise or [args.out]
    for row in summarise(runs):
        print(json.dumps(row))
    if args.pairs_csv:
        write_pairs_csv(runs, args.pairs_csv)


if __name__ == "__main__":
    main()
