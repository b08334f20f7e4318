"""Shuffle volume of the tar-shard ingest: `gld curate --tar-dir` on generated shards.

Generates the demo's landmark photos, packs them into official-style shards (`images_NNN.tar`
at `a/b/c/<id>.jpg`, with `md5.images_NNN.txt`) together with `--unlisted` extra photos whose
ids the manifest does not name (as a manifest subset of the release would leave), runs a
curation from the shards, and reads the shuffle meter from `run.json`.

    .venv/bin/python benchmarks/bench_tar_shuffle.py --images 60 --shards 3

Last line: {"images", "shards", "unlisted", "shuffle_bytes_per_image", "shuffle_elements",
"tar_unlisted_entries"}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile

from pipeline.curation.config import build_config
from pipeline.curation.curate import run_curation
from pipeline.demo.data import DemoConfig, generate_demo


def _image_files(images_dir: str) -> list[str]:
    """The stored photos (a/b/c/<id>.jpg) under `images_dir`, sorted."""
    found = []
    for folder, _, files in os.walk(images_dir):
        found += [os.path.join(folder, name) for name in files if name.endswith(".jpg")]
    return sorted(found)


def write_shards(files: list[str], images_dir: str, tar_dir: str, shards: int) -> None:
    """Pack `files` round-robin into `shards` tars named like the release, each with its md5 file."""
    os.makedirs(tar_dir, exist_ok=True)
    for number in range(shards):
        path = os.path.join(tar_dir, f"images_{number:03d}.tar")
        with tarfile.open(path, "w") as archive:
            for file in files[number::shards]:
                archive.add(file, arcname=os.path.relpath(file, images_dir))
        with open(path, "rb") as handle:
            digest = hashlib.md5(handle.read(), usedforsecurity=False).hexdigest()
        with open(os.path.join(tar_dir, f"md5.images_{number:03d}.txt"), "w", encoding="ascii") as handle:
            handle.write(f"{digest}  images_{number:03d}.tar\n")


def measure(root: str, images: int, shards: int, unlisted: int) -> dict:
    listed = generate_demo(os.path.join(root, "listed"), "http://127.0.0.1:1", DemoConfig(images=images, seed=5))
    extra = generate_demo(
        os.path.join(root, "extra"), "http://127.0.0.1:1", DemoConfig(images=max(20, unlisted), seed=6)
    )
    staging = os.path.join(root, "staging")  # one tree, so each member is at a/b/c/<id>.jpg
    chosen = {listed.root: None, extra.root: unlisted}
    for dataset, count in chosen.items():
        images_dir = os.path.join(dataset, "images")
        for file in _image_files(images_dir)[:count]:
            target = os.path.join(staging, os.path.relpath(file, images_dir))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(file, target)
    tar_dir = os.path.join(root, "shards")
    write_shards(_image_files(staging), staging, tar_dir, shards)
    config = build_config(
        listed.train_csv, os.path.join(root, "out"), overrides={"fetch": {"tar_dir": tar_dir}}, progress=False
    )
    run = run_curation(config, ["--direct_num_workers=2"])
    return {
        "images": run["counts"]["rows"],
        "shards": shards,
        "unlisted": unlisted,
        "shuffle_bytes_per_image": run["shuffle"]["bytes_per_image"],
        "shuffle_elements": run["shuffle"]["elements"],
        "tar_unlisted_entries": run["ingest"]["tar_unlisted_entries"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=60, help="manifest rows of the generated set")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--unlisted", type=int, default=20, help="photos in the shards the manifest does not name")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="gld-tar-shuffle-")
    try:
        print(json.dumps(measure(root, args.images, args.shards, args.unlisted)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
