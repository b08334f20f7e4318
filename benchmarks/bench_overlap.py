"""`gld overlap` on real photos: split landmarks-dev into training and evaluation landmarks,
plant views of evaluation landmarks among training classes, curate the training part, run
`gld overlap`, and count what was found.

    python benchmarks/bench_overlap.py --data ../shared/data/landmarks-dev [--work /tmp/ov-bench]

Evaluation landmarks (`--eval-landmarks`): their two first members (by source name, i.e.
neighbouring views of a sequence) are filed under a training class (`--hosts`), the rest
form the evaluation list; every other row (members, noise, broken rows) of the other classes
is the training part. Truth of a verified pair: the training image is a planted view of the
landmark (site, see SITES) the evaluation image shows. The last line is one JSON object: planted / found
figures and the time per image of a first run (evaluation features extracted) and of a
re-run (every feature reused).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq

#: 7005, 7007 and 7008 (Strecha fountain, castle, entry) are one site (Ettlingen castle: its
#: views verify across the three classes with up to ~1,000 inliers): they stay on one side, and
#: a pair counts as true when the planted view and the evaluation image show the same site.
SITES = {7005: "ettlingen", 7007: "ettlingen", 7008: "ettlingen"}
EVAL_LANDMARKS = (7001, 7005, 7007, 7008, 7013)
HOSTS = (7002, 7006, 7009, 7003, 7010)


def _rows(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _gld(*args: str) -> tuple[dict, float]:
    """Run `gld` (this venv), return its last stdout line as JSON and its wall seconds."""
    started = time.time()
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "gld"), *args, "--no-progress"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="landmarks-dev folder (train.csv, truth.csv, images/)")
    parser.add_argument("--work", default="/tmp/ov-bench", help="scratch folder (emptied first)")
    parser.add_argument("--eval-landmarks", type=int, nargs="+", default=list(EVAL_LANDMARKS))
    parser.add_argument("--hosts", type=int, nargs="+", default=list(HOSTS), help="training class of each")
    parser.add_argument("--planted-per-landmark", type=int, default=2)
    args = parser.parse_args()
    if len(args.hosts) != len(args.eval_landmarks):
        parser.error("one host class per evaluation landmark")
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)

    train = {r["id"]: r for r in _rows(os.path.join(args.data, "train.csv"))}
    truth = {r["id"]: r for r in _rows(os.path.join(args.data, "truth.csv"))}
    host_of = dict(zip(args.eval_landmarks, args.hosts, strict=True))
    training, evaluation, planted = [], [], {}
    for landmark, host in host_of.items():
        members = sorted(
            (i for i, t in truth.items() if int(t["landmark_id"]) == landmark and t["role"] == "member"),
            key=lambda i: truth[i]["source"],
        )
        for image_id in members[: args.planted_per_landmark]:
            planted[image_id] = landmark
            training.append({**train[image_id], "landmark_id": str(host)})
        evaluation += [(image_id, landmark) for image_id in members[args.planted_per_landmark :]]
    training += [r for i, r in train.items() if int(r["landmark_id"]) not in host_of]
    train_csv = os.path.join(args.work, "train.csv")
    with open(train_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["id", "url", "landmark_id"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(training, key=lambda r: r["id"]))
    eval_csv = os.path.join(args.work, "eval.csv")
    with open(eval_csv, "w", encoding="utf-8") as handle:
        handle.write("id,url\n" + "".join(f"{i},\n" for i, _ in sorted(evaluation)))

    out = os.path.join(args.work, "curated")
    images = os.path.join(args.data, "images")
    # two planted views verify each other and nothing of their host class: an isolated component,
    # which the default selection removes; keep it so that the clean split holds the planted leaks
    inputs = ["--train-csv", train_csv, "--images-dir", images, "--output", out]
    curated, curate_s = _gld("curate", *inputs, "--no-drop-isolated-components")
    overlap = ["overlap", "--output", out, "--eval-images", eval_csv, "--eval-dir", images, "--exclude", "images"]
    first, first_s = _gld(*overlap)
    again, again_s = _gld(*overlap)
    rows = pq.read_table(os.path.join(out, "overlap", "eval", "overlap.parquet")).to_pylist()
    shows = dict(evaluation)

    def site(landmark: int | None) -> object:
        return SITES.get(landmark, landmark) if landmark is not None else None

    true_pairs = [
        r for r in rows if r["train_id"] in planted and site(planted[r["train_id"]]) == site(shows.get(r["eval_id"]))
    ]
    found = {r["train_id"] for r in true_pairs}
    in_splits = set()
    for name in ("train_clean.csv", "c2x_rejected.csv"):
        with open(os.path.join(out, name), encoding="utf-8") as handle:
            in_splits |= {i for line in handle.read().splitlines()[1:] for i in line.split(",", 1)[1].split()}
    images_checked = first["train_images"] + first["eval_extracted"]
    for row in rows:
        if row not in true_pairs:
            print(
                f"false: {row['train_id']} ({truth[row['train_id']]['source']}) ~ {row['eval_id']} "
                f"({truth[row['eval_id']]['source']}) {row['inliers']} inliers",
                file=sys.stderr,
            )
    result = {
        "planted": len(planted),
        "planted_in_splits": len(set(planted) & in_splits),
        "planted_found": len(found),
        "planted_landmarks_found": len({planted[i] for i in found}),
        "eval_landmarks": len(host_of),
        "eval_images": first["eval_images"],
        "eval_found": len({r["eval_id"] for r in true_pairs}),
        "true_pairs": len(true_pairs),
        "false_pairs": len(rows) - len(true_pairs),
        "candidate_pairs": first["candidate_pairs"],
        "train_images": first["train_images"],
        "excluded_images": first["excluded_images"],
        "curate_kept": curated["by_status"].get("kept", 0),
        "curate_seconds": round(curate_s, 1),
        "seconds_first": round(first_s, 1),
        "seconds_rerun": round(again_s, 1),
        "ms_per_image_first": round(1000 * first_s / images_checked, 1),
        "ms_per_image_rerun": round(1000 * again_s / images_checked, 1),
        "rerun_identical": first["verified_pairs"] == again["verified_pairs"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
