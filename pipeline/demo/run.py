"""`gld demo`: generate a landmark-like dataset with known truth, serve it on loopback, curate
it over HTTP and score the clean split against the truth."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.curation.config import build_config
from pipeline.curation.curate import output_paths, run_curation
from pipeline.demo.data import DemoConfig, generate_demo, read_truth
from pipeline.demo.serve import serve_folder
from schemas.gldv2_csv import parse_train_clean
from schemas.vocabulary import Status
from transforms.plumbing.store import read_table


@dataclass(frozen=True)
class TruthScore:
    """Kept images against the truth.

    - precision: kept rows that are true members (`role` member) of the class they are kept
      under, over kept rows;
    - recall: kept members over `members`, the members of classes with >= 2 members (a lone
      image cannot be verified);
    - noise_kept / noise_ids: kept rows whose role is noise;
    - broken_failed: broken rows that ended as failures, over `broken` rows (1.0 when none).
    """

    kept: int
    precision: float
    recall: float
    broken_failed: float
    noise_kept: int
    members: int = 0
    broken: int = 0
    noise_ids: tuple[str, ...] = ()


def score_kept(
    kept: Mapping[str, int], statuses: Mapping[str, str], truth: Mapping[str, tuple[int, str]]
) -> TruthScore:
    """Score the kept rows (id -> landmark_id kept under) and every row's status (id -> kept |
    removed | failed) against the truth (id -> (landmark_id, role)); see `TruthScore`."""
    members_per_class = Counter(lid for lid, role in truth.values() if role == "member")
    verifiable = {i for i, (lid, role) in truth.items() if role == "member" and members_per_class[lid] >= 2}
    true_kept = [i for i, lid in kept.items() if truth.get(i) == (lid, "member")]
    noise = tuple(sorted(i for i in kept if truth.get(i, (0, ""))[1] == "noise"))
    broken = [i for i, (_, role) in truth.items() if role == "broken"]
    return TruthScore(
        kept=len(kept),
        precision=len(true_kept) / len(kept) if kept else 0.0,
        recall=len(verifiable.intersection(true_kept)) / len(verifiable) if verifiable else 0.0,
        broken_failed=sum(statuses.get(i) == Status.FAILED.value for i in broken) / len(broken) if broken else 1.0,
        noise_kept=len(noise),
        members=len(verifiable),
        broken=len(broken),
        noise_ids=noise,
    )


def score_against_truth(train_clean_path: str, decisions_path: str, truth_csv: str) -> TruthScore:
    """`score_kept` of a run's `train_clean.csv` and `decisions.parquet` against a `truth.csv`."""
    with open(train_clean_path, encoding="utf-8") as handle:
        split = parse_train_clean(handle.read())
    kept = {image_id: lid for lid, ids in split.items() for image_id in ids}
    columns = read_table(decisions_path, columns=["id", "status"]).to_pydict()
    statuses = dict(zip(columns["id"], columns["status"], strict=True))
    return score_kept(kept, statuses, read_truth(truth_csv))


def run_demo(output: str, images: int, seed: int, beam_args: list[str] | None = None, port: int = 0) -> dict:
    """Generate, serve (on `port`, 0: a free one), curate and score; returns the run summary
    plus the truth score. The URLs in the generated train.csv name the port, so two runs give
    byte-identical outputs only on the same port."""
    started = time.time()
    data_dir = os.path.join(output, "data")
    curated_dir = os.path.join(output, "curated")
    with serve_folder(data_dir if os.path.isdir(data_dir) else _mkdir(data_dir), port=port) as base_url:
        dataset = generate_demo(data_dir, base_url, DemoConfig(images=images, seed=seed))
        config = build_config(
            dataset.train_csv, curated_dir, overrides={"fetch": {"allow_private_hosts": True, "retries": 0}}
        )
        run = run_curation(config, beam_args)
    out = output_paths(curated_dir)
    score = score_against_truth(out["train_clean"], out["decisions"], dataset.truth_csv)
    return {"run": run, "score": score, "dataset": dataset, "seconds": time.time() - started}


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path
