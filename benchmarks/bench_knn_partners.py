"""How often knn candidate partners are true partners, against random partners.

One class is filed with `--views` generated views of each of `--landmarks` landmarks (a true
partner shows the same landmark). Features are this project's RootSIFT; the global descriptor
is the offline aggregation of `transforms.features.global_descriptor`. For each k, the share of candidate
pairs that are true partners, for `--pairs knn` and `--pairs random`, and the share of each
image's true partners that knn proposes. The last line is the JSON.

    python benchmarks/bench_knn_partners.py [--landmarks 10] [--views 8] [--ks 2 4 7]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.demo.data import _landmark_facade, _render_view
from transforms.features.extractors.config import FeatureConfig
from transforms.features.extractors.sift import SiftExtractor
from transforms.features.global_descriptor import aggregate_local
from transforms.matching.pairs import PairConfig, candidate_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--landmarks", type=int, default=10)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 7])
    parser.add_argument("--size", type=int, default=640, help="longest side of a view")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    extractor = SiftExtractor(FeatureConfig())
    descriptors, subject = {}, {}
    for landmark in range(args.landmarks):
        facade = _landmark_facade(args.seed, landmark)
        for view in range(args.views):
            pixels = _render_view(np.random.default_rng([args.seed, landmark, view]), facade, args.size)
            # ids in no particular relation to the landmark, like GLDv2's
            image_id = hashlib.sha256(f"{args.seed}:{landmark}:{view}".encode()).hexdigest()[:16]
            descriptors[image_id] = aggregate_local(extractor(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB))[1])
            subject[image_id] = landmark
    ids = sorted(descriptors)
    rows = []
    for k in args.ks:
        knn = candidate_pairs(1, ids, PairConfig(mode="knn", k=k), descriptors)
        random = candidate_pairs(1, ids, PairConfig(mode="random", k=k, seed=args.seed))
        true_pairs = len(ids) * (args.views - 1) // 2
        rows.append(
            {
                "k": k,
                "knn_precision": round(float(np.mean([subject[a] == subject[b] for a, b in knn])), 4),
                "random_precision": round(float(np.mean([subject[a] == subject[b] for a, b in random])), 4),
                "knn_recall": round(sum(subject[a] == subject[b] for a, b in knn) / true_pairs, 4),
                "random_recall": round(sum(subject[a] == subject[b] for a, b in random) / true_pairs, 4),
            }
        )
        print("  ".join(f"{key} {value}" for key, value in rows[-1].items()), file=sys.stderr)
    chance = (args.views - 1) / (len(ids) - 1)
    print(json.dumps({"images": len(ids), "chance": round(chance, 4), "by_k": rows}))


if __name__ == "__main__":
    main()
