"""Peak memory and wall time of `gld curate` end to end as the input grows.

Generates photo-like landmark classes (800x600 JPEGs of ~100-200 KB: each class is one planar
textured facade of `pipeline.demo.data`, each image a perspective view of it with illumination
change and sensor noise; ~4 % of rows are noise: a view of another class's facade or an unrelated
texture), deterministically from `--seed`, ONCE for the largest size; each size N curates the
first N rows (whole classes in plan order, so every size is of the same kind) with
`gld curate --images-dir ... --no-progress` (SIFT default) in a fresh process tree under
`/usr/bin/time -v`. Per size it records the wall seconds, the exit code, run.json's
`counts.accounting_ok`, `run["shuffle"]["bytes_per_image"]` (null when the pipeline does not write
it) and two peaks of resident memory:

- `peak_rss_mb`: the peak over time of the summed VmRSS of the whole process tree (the time
  process and every descendant, found through /proc/*/stat, sampled every 0.5 s; pages shared
  between processes count once per process);
- `time_rss_mb`: /usr/bin/time's "Maximum resident set size", the peak of the single largest
  process only.

The last stdout line is one JSON object: `{"mode", "sizes", "peak_rss_mb", "seconds",
"rss_ratio" (last / first), "shuffle_bytes_per_image" (last size), "shuffle_bytes_per_image_all",
"time_rss_mb", "accounting_ok", "classes", "per_size", "generate_images_per_s", ...}`.
`--single-class [N]` instead curates one class of N (default 2000) 320x240 views with
`--pairs knn --pairs-k 10`. A run whose tree exceeds `--rss-limit-mb` is killed and reported.

    python benchmarks/bench_scale.py [--sizes 1000 2000 8000] [--classes-of 20] [--seed 0]
        [--work DIR] [--keep] [--gld PATH] [--rss-limit-mb MB] [--extra ARG ...]
    python benchmarks/bench_scale.py --single-class [2000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from typing import Any

import cv2
import numpy as np

from pipeline.demo import data as demo_data

NOISE_FRACTION = 0.04
FIRST_LANDMARK_ID = 1000
PHOTO_FRAME = (800, 600)
SMALL_FRAME = (320, 240)
_STREAM_PLAN, _STREAM_VIEW, _STREAM_DISTRACTOR = 10, 11, 12
_TIME_RSS = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")


@dataclass(frozen=True)
class Row:
    """One manifest row: `shows` is the facade index the image depicts, -1 for a random texture."""

    index: int
    id: str
    label: int
    shows: int


def plan_rows(total: int, classes_of: int, seed: int, single_class: bool = False) -> list[Row]:
    """`total` rows, class by class; class sizes are `classes_of` x 2**U(-1, 1) (at least 2) or one
    class of `total`. A row is noise with probability NOISE_FRACTION: half show a random texture,
    half the facade of a following class (label + 1, + 2, ... within one class, possibly past the
    last class). The plan of a larger total starts with the plan of a smaller one."""
    rng = np.random.default_rng([seed, _STREAM_PLAN])
    ids = demo_data._row_ids(seed, total)
    rows: list[Row] = []
    label = 0
    while len(rows) < total:
        size = total if single_class else max(2, round(classes_of * 2 ** rng.uniform(-1, 1)))
        foreign = 0
        for _ in range(min(size, total - len(rows))):
            shows = label
            if rng.random() < NOISE_FRACTION:
                # each noise view of a class shows a different facade, so no two verify together
                if rng.random() < 0.5:
                    foreign += 1
                    shows = label + foreign
                else:
                    shows = -1
            rows.append(Row(len(rows), ids[len(rows)], label, shows))
        label += 1
    return rows


def image_path(images_dir: str, image_id: str) -> str:
    return os.path.join(images_dir, image_id[0], image_id[1], image_id[2], f"{image_id}.jpg")


def render_view(rng: np.random.Generator, facade: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    """A photo of `facade` from a random viewpoint, shape (height, width, 3) for frame (width, height):
    a 60-100 % crop, zoom 0.7-1.3, in-plane rotation up to 20 degrees, perspective jitter, gain and
    gamma change and sensor noise over a sky-like background."""
    width, height = frame
    src_h, src_w = facade.shape[:2]
    crop_w, crop_h = int(src_w * rng.uniform(0.6, 1.0)), int(src_h * rng.uniform(0.6, 1.0))
    x, y = int(rng.integers(0, src_w - crop_w + 1)), int(rng.integers(0, src_h - crop_h + 1))
    source = facade[y : y + crop_h, x : x + crop_w]
    scale = np.sqrt(width * height / (crop_w * crop_h)) * np.exp(rng.uniform(np.log(0.7), np.log(1.3)))
    if scale * 1.25 < 1:  # shrink first: a strongly minifying warp aliases away the fine features
        size = (max(1, round(crop_w * scale * 1.25)), max(1, round(crop_h * scale * 1.25)))
        source = cv2.resize(source, size, interpolation=cv2.INTER_AREA)
    src_quad = np.float32([[0, 0], [source.shape[1], 0], [source.shape[1], source.shape[0]], [0, source.shape[0]]])
    half = np.array([crop_w, crop_h]) * scale / 2
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half * (1 + rng.uniform(-0.08, 0.08, size=(4, 2)))
    angle = np.deg2rad(rng.uniform(-20, 20))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([width, height]) * (0.5 + rng.uniform(-0.1, 0.1, size=2))
    homography = cv2.getPerspectiveTransform(src_quad, np.float32(corners @ rotation.T + centre))
    view = demo_data._background(rng, width, height)
    cv2.warpPerspective(source, homography, frame, dst=view, borderMode=cv2.BORDER_TRANSPARENT)
    levels = (np.arange(256) / 255.0) ** rng.uniform(0.8, 1.25) * 255.0 * rng.uniform(0.8, 1.15)
    view = cv2.LUT(view, np.clip(levels, 0, 255).astype(np.uint8))
    # OpenCV's generator, seeded from `rng`, is 3x faster than numpy's here
    sigma = float(rng.uniform(2.0, 4.0))
    cv2.setRNGSeed(int(rng.integers(2**31)))
    noise = np.empty(view.shape, np.int16)
    cv2.randn(noise, (0, 0, 0), (sigma, sigma, sigma))
    return cv2.add(view, noise, dtype=cv2.CV_8U)


def encode_jpeg(view: np.ndarray, rng: np.random.Generator) -> bytes:
    ok, encoded = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(88, 96))])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()


def _render_class(task: tuple[int, list[Row], tuple[int, int], str]) -> int:
    """Write the images of one class's rows; returns the bytes written."""
    seed, rows, frame, images_dir = task
    cv2.setNumThreads(1)
    facades: dict[int, np.ndarray] = {}
    written = 0
    for row in rows:
        if row.shows < 0:
            facade = demo_data._texture(
                np.random.default_rng([seed, _STREAM_DISTRACTOR, row.index]), (1024, 768), distractor=True
            )
        else:
            if row.shows not in facades:
                facades[row.shows] = demo_data._landmark_facade(seed, row.shows)
            facade = facades[row.shows]
        rng = np.random.default_rng([seed, _STREAM_VIEW, row.index])
        payload = encode_jpeg(render_view(rng, facade, frame), rng)
        path = image_path(images_dir, row.id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(payload)
        written += len(payload)
    return written


def generate(rows: list[Row], seed: int, frame: tuple[int, int], images_dir: str, processes: int = 2) -> int:
    """Write every row's JPEG under `images_dir/a/b/c/<id>.jpg` (one task per class); returns bytes."""
    by_class: dict[int, list[Row]] = {}
    for row in rows:
        by_class.setdefault(row.label, []).append(row)
    tasks = [(seed, part, frame, images_dir) for part in by_class.values()]
    if processes <= 1:
        return sum(map(_render_class, tasks))
    with Pool(processes) as pool:
        return sum(pool.imap_unordered(_render_class, tasks))


def write_manifest(path: str, rows: list[Row], seed: int) -> None:
    """GLDv2 train.csv of `rows`, in a deterministic shuffled order."""
    order = np.random.default_rng([seed, len(rows)]).permutation(len(rows))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("id", "url", "landmark_id"))
        for i in order:
            row = rows[i]
            url = f"http://images.invalid/{row.id[0]}/{row.id[1]}/{row.id[2]}/{row.id}.jpg"
            writer.writerow((row.id, url, FIRST_LANDMARK_ID + row.label))


def parse_time_rss_kb(stderr: str) -> int | None:
    """/usr/bin/time -v's "Maximum resident set size (kbytes)", or None when absent."""
    found = _TIME_RSS.findall(stderr)
    return int(found[-1]) if found else None


def parse_stat_ppid(stat: str) -> tuple[int, int]:
    """(pid, ppid) from the text of /proc/<pid>/stat; the command name may hold spaces and ')'."""
    head, _, tail = stat.rpartition(")")
    return int(head.split("(", 1)[0]), int(tail.split()[1])


def parse_vmrss_kb(status: str) -> int:
    """VmRSS in kB from the text of /proc/<pid>/status (0 for a zombie or kernel thread)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def descendants(parents: dict[int, int], root: int) -> set[int]:
    """`root` and every process below it, from a pid -> ppid map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, []))
    return found


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:  # the process ended meanwhile
        return None


def tree_rss_kb(root: int) -> tuple[int, int]:
    """(summed VmRSS in kB, process count) of `root` and its descendants, now."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _read(f"/proc/{name}/stat")):
            pid, ppid = parse_stat_ppid(stat)
            parents[pid] = ppid
    tree = descendants(parents, root)
    return sum(parse_vmrss_kb(_read(f"/proc/{pid}/status") or "") for pid in tree), len(tree)


def run_curate(command: list[str], log_path: str, rss_limit_kb: int) -> dict[str, Any]:
    """Run `command` under /usr/bin/time -v in its own session, sampling the tree's RSS every 0.5 s."""
    peak_kb, peak_procs, killed = 0, 0, False
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            ["/usr/bin/time", "-v", *command], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        while process.poll() is None:
            rss_kb, procs = tree_rss_kb(process.pid)
            peak_kb, peak_procs = max(peak_kb, rss_kb), max(peak_procs, procs)
            if rss_limit_kb and rss_kb > rss_limit_kb and not killed:
                killed = True
                os.killpg(process.pid, signal.SIGKILL)
            time.sleep(0.5)
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        time_kb = parse_time_rss_kb(handle.read())
    return {
        "returncode": process.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "time_rss_mb": round(time_kb / 1024, 1) if time_kb is not None else None,
        "max_processes": peak_procs,
        "killed_at_rss_limit": killed,
    }


def _run_json(output: str) -> dict[str, Any]:
    try:
        with open(os.path.join(output, "run.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 8000])
    parser.add_argument("--single-class", type=int, nargs="?", const=2000, help="one class of N 320x240 views")
    parser.add_argument("--classes-of", type=int, default=20, help="median images per class (sizes vary x0.5-x2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="folder for images and outputs (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the curated outputs (and a temporary --work)")
    parser.add_argument("--gld", default=os.path.join(os.path.dirname(sys.executable), "gld"))
    meminfo = _read("/proc/meminfo") or "MemTotal: 0 kB"
    total_mb = int(re.search(r"MemTotal:\s*(\d+)", meminfo).group(1)) // 1024  # type: ignore[union-attr]
    parser.add_argument("--rss-limit-mb", type=int, default=total_mb * 3 // 4, help="kill a run above it; 0: never")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="(last) arguments for gld curate")
    args = parser.parse_args()

    single = args.single_class is not None
    sizes = [args.single_class] if single else sorted(args.sizes)
    frame = SMALL_FRAME if single else PHOTO_FRAME
    extra = (["--pairs", "knn", "--pairs-k", "10"] if single else []) + args.extra
    work = args.work or tempfile.mkdtemp(prefix="bench_scale_")
    images_dir = os.path.join(work, "images")
    os.makedirs(work, exist_ok=True)
    rows = plan_rows(sizes[-1], args.classes_of, args.seed, single_class=single)

    # images depend only on (seed, plan, frame): a --work that holds them already is reused
    stamp = {"seed": args.seed, "rows": len(rows), "classes_of": args.classes_of, "single": single, "frame": frame}
    stamp_path = os.path.join(work, "images.json")
    previous = json.loads(_read(stamp_path) or "{}")
    started = time.perf_counter()
    if previous.get("stamp") != json.loads(json.dumps(stamp)):
        written = generate(rows, args.seed, frame, images_dir)
        with open(stamp_path, "w") as handle:
            json.dump({"stamp": stamp, "bytes": written, "seconds": time.perf_counter() - started}, handle)
        previous = json.loads(_read(stamp_path) or "{}")
    gen_seconds, gen_bytes = previous["seconds"], previous["bytes"]
    _log(
        f"generated {len(rows)} images {frame[0]}x{frame[1]}, mean {gen_bytes / len(rows) / 1e3:.0f} kB, "
        f"{len(rows) / gen_seconds:.1f} images/s, in {images_dir}"
    )

    per_size: list[dict[str, Any]] = []
    for size in sizes:
        subset = rows[:size]
        manifest = os.path.join(work, f"train-{size}.csv")
        write_manifest(manifest, subset, args.seed)
        output = os.path.join(work, f"out-{size}")
        shutil.rmtree(output, ignore_errors=True)
        command = [args.gld, "curate", "--train-csv", manifest, "--images-dir", images_dir, "--output", output]
        measured = run_curate(
            [*command, "--no-progress", *extra], os.path.join(work, f"log-{size}.txt"), args.rss_limit_mb * 1024
        )
        run = _run_json(output)
        counts = run.get("counts", {})
        result = {
            "images": size,
            "classes": len({row.label for row in subset}),
            **measured,
            "accounting_ok": bool(counts.get("accounting_ok")),
            "by_status": counts.get("by_status"),
            "shuffle_bytes_per_image": (run.get("shuffle") or {}).get("bytes_per_image"),
        }
        per_size.append(result)
        _log("  ".join(f"{key} {value}" for key, value in result.items()))
        if measured["returncode"] != 0:
            _log(f"gld curate failed; log: {os.path.join(work, f'log-{size}.txt')}")
        if not args.keep:
            shutil.rmtree(output, ignore_errors=True)

    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    first, last = per_size[0]["peak_rss_mb"], per_size[-1]["peak_rss_mb"]
    shuffle = [r["shuffle_bytes_per_image"] for r in per_size]
    summary = {
        "mode": "single-class" if single else "scale",
        "sizes": sizes,
        "peak_rss_mb": [r["peak_rss_mb"] for r in per_size],
        "seconds": [r["seconds"] for r in per_size],
        "rss_ratio": round(last / first, 3) if first else None,
        "shuffle_bytes_per_image": shuffle[-1],
        "shuffle_bytes_per_image_all": shuffle,
        "time_rss_mb": [r["time_rss_mb"] for r in per_size],
        "accounting_ok": [r["accounting_ok"] for r in per_size],
        "classes": [r["classes"] for r in per_size],
        "frame": list(frame),
        "extra": extra,
        "generate_images_per_s": round(len(rows) / gen_seconds, 1),
        "mean_jpeg_kb": round(gen_bytes / len(rows) / 1e3, 1),
        "per_size": per_size,
    }
    print(json.dumps(summary))
    return 0 if all(r["returncode"] == 0 and r["accounting_ok"] for r in per_size) else 1


if __name__ == "__main__":
    sys.exit(main())
