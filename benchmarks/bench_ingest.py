"""Ingest throughput: `gld ingest` vs img2dataset on the same URL list, in one process.

Generates N photo-sized JPEGs, serves them from a loopback server that adds a per-request
latency (a remote host's), and downloads them with both tools under matched settings: longest
side 1024 (never upscaled), JPEG quality 90, sha256 of the fetched bytes, Parquet output, 2
worker processes/threads of CPU and 16 download threads each. After one untimed warm-up run of
each on 16 images, runs alternate, each tool runs `--repeats` times, and the medians are
compared.

Install the peer first (img2dataset pins opencv < 5, the project uses opencv 5; the calls it
makes are the same in both, so it is installed without its pins):

    .venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/pip install --no-deps -r benchmarks/requirements-nodeps.txt
    .venv/bin/python benchmarks/bench_ingest.py --images 400 --repeats 3

Last line: {"images": N, "ours_images_per_s": ..., "img2dataset_images_per_s": ... (medians),
"ratio": ours/img2dataset (the median of the per-repeat ratios of back-to-back runs)}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.curation.config import build_config
from pipeline.curation.ingest import run_ingest
from pipeline.demo.serve import serve_folder

WORKERS = 2
THREADS = 16
MAX_SIDE = 1024
QUALITY = 90


def make_photo(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A photo-like JPEG: smooth colour fields plus fine texture, so it compresses like a photo."""
    coarse = rng.integers(0, 256, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    detail = rng.normal(0, 18, (height, width, 1)).astype(np.int16)
    pixels = np.clip(smooth + detail, 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def make_dataset(root: Path, count: int, seed: int) -> list[str]:
    """Writes `count` JPEGs in the GLDv2 layout under root/images; returns their ids."""
    rng = np.random.default_rng(seed)
    ids = []
    for n in range(count):
        image_id = f"{n:016x}"
        width, height = (1600, 1200) if n % 3 else (1200, 1600)
        path = root / "images" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make_photo(rng, width, height))
        ids.append(image_id)
    return ids


def write_manifest(path: Path, ids: list[str], base: str) -> None:
    lines = ["id,url,landmark_id"]
    lines += [f"{i},{base}/images/{i[0]}/{i[1]}/{i[2]}/{i}.jpg,{n % 50}" for n, i in enumerate(ids)]
    path.write_text("\n".join(lines) + "\n")


def run_ours(manifest: Path, out: Path) -> float:
    overrides = {
        "fetch": {"allow_private_hosts": True, "threads": THREADS},
        "decode": {"max_side": MAX_SIDE, "jpeg_quality": QUALITY},
    }
    config = build_config(str(manifest), str(out), overrides=overrides, progress=False)
    started = time.perf_counter()
    stats = run_ingest(config, [f"--direct_num_workers={WORKERS}"])
    seconds = time.perf_counter() - started
    assert stats["accounting_ok"] and stats["failed_total"] == 0, stats
    return stats["stored"] / seconds


def run_img2dataset(manifest: Path, out: Path, count: int) -> float:
    from img2dataset import download

    started = time.perf_counter()
    download(
        url_list=str(manifest),
        input_format="csv",
        url_col="url",
        output_folder=str(out),
        output_format="parquet",
        image_size=MAX_SIDE,
        resize_mode="keep_ratio_largest",
        resize_only_if_bigger=True,
        encode_quality=QUALITY,
        encode_format="jpg",
        processes_count=WORKERS,
        thread_count=THREADS,
        number_sample_per_shard=max(1, count // (4 * WORKERS)),
        compute_hash="sha256",
        extract_exif=False,
        timeout=60,
        retries=2,
    )
    seconds = time.perf_counter() - started
    stored = sum(
        json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json") if "successes" in p.read_text()
    )
    assert stored == count, f"img2dataset stored {stored} of {count}"
    return stored / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added to every response")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        ids = make_dataset(root / "data", args.images, args.seed)
        ours: list[float] = []
        peer: list[float] = []
        with serve_folder(str(root / "data"), delay_s=args.latency_ms / 1000) as base:
            manifest = root / "train.csv"
            write_manifest(manifest, ids, base)
            warmup = root / "warmup.csv"  # first runs pay for imports and process start-up
            write_manifest(warmup, ids[:16], base)
            run_ours(warmup, root / "ours-warmup")
            run_img2dataset(warmup, root / "peer-warmup", 16)
            for repeat in range(args.repeats):
                ours.append(run_ours(manifest, root / f"ours-{repeat}"))
                peer.append(run_img2dataset(manifest, root / f"peer-{repeat}", len(ids)))
                print(f"run {repeat}: ours {ours[-1]:.1f} img/s, img2dataset {peer[-1]:.1f} img/s", file=sys.stderr)
        ours_median, peer_median = statistics.median(ours), statistics.median(peer)
        # each pair of runs ran back to back under the same machine load: the median of the
        # paired ratios is steadier than the ratio of the two medians on a shared machine
        ratios = [a / b for a, b in zip(ours, peer, strict=True)]
        print(f"per-run ratios: {', '.join(f'{r:.2f}' for r in ratios)}", file=sys.stderr)
        print(f"ratio of the medians: {ours_median / peer_median:.3f}", file=sys.stderr)
        print(
            json.dumps(
                {
                    "images": len(ids),
                    "ours_images_per_s": round(ours_median, 2),
                    "img2dataset_images_per_s": round(peer_median, 2),
                    "ratio": round(statistics.median(ratios), 3),
                }
            )
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
