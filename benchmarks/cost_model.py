"""Cost and time of a full GLDv2 curation on Dataflow, from the per-image and per-pair costs a
measured run recorded in its `run.json` (busy seconds per stage / items of the stage).

    .venv/bin/python benchmarks/cost_model.py --run-json out/run.json
    .venv/bin/python benchmarks/cost_model.py --run-json out/run.json --pairs-per-image 100 --workers 100

Busy seconds are summed over worker threads of one process on this machine's cores, so one busy
second is taken as one vCPU-second (download time is mostly waiting, so the fetch stage is priced
by its measured throughput instead; see docs/performance.md, "Cost of the full GLDv2"). Prices
are Dataflow batch list prices (us-central1) passed as flags; the defaults are those the docs cite.
Last line: one JSON object with the vCPU-hours per stage, the total cost and the wall time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from schemas.vocabulary import PAIR_OUTCOMES, PairReason


def run_cores(run: dict) -> int:
    """The cores the run's jobs ran on, as `run.json` records them."""
    if "cores" not in run:
        raise ValueError("run.json has no cores: an older gld wrote it; run `gld select` on the folder to rewrite it")
    return int(run["cores"])


def per_item_seconds(run: dict) -> dict[str, float]:
    """Busy seconds per image (decode, features) and per matched candidate pair, the share of
    candidates matched (1.0 for exhaustive verification); wall seconds of the selection job per
    input row (what `gld select` costs), times the cores it used."""
    counters, seconds = run["counters"], run["seconds"]
    images = counters["features"]["ok"]
    pairs = sum(counters["verify"].get(k, 0) for k in PAIR_OUTCOMES)
    skipped = counters["verify"].get(PairReason.ALREADY_JOINED.value, 0)
    return {
        "decode_s_per_image": seconds["decode"] / counters["decode"]["ok"],
        "features_s_per_image": seconds["features"] / images,
        # the audit's cross-class matching: a fixed number of candidates per image, whatever k
        # (0 for a run without the audit, or one written before the audit was timed)
        "audit_s_per_image": seconds.get("audit", 0.0) / images,
        "verify_s_per_pair": seconds["verify"] / max(1, pairs),
        # adaptive verification matches this share of the candidates (reused ones count as matched)
        "matched_fraction": (pairs + counters["verify"].get("reused", 0))
        / max(1, pairs + counters["verify"].get("reused", 0) + skipped),
        "select_s_per_row": seconds.get("select_wall", 0.0) * run_cores(run) / max(1, run["counts"]["rows"]),
    }


def volumes_per_image(run: dict) -> dict[str, float]:
    """Shuffled bytes per input row (counter `shuffle/bytes`) and feature-store bytes read by
    verification per image (counter `verify/store_read_bytes`), from the run's counters."""
    counters = run["counters"]
    rows = max(1, run["counts"]["rows"])
    return {
        "shuffle_bytes_per_image": counters.get("shuffle", {}).get("bytes", 0) / rows,
        "store_read_bytes_per_image": counters["verify"].get("store_read_bytes", 0) / rows,
        "store_reads_per_image": counters["verify"].get("store_reads", 0) / rows,
    }


def gpu_stages(run: dict) -> list[str]:
    """The stages a run puts on GPU workers when given `--gpu-accelerator`: learned or DELF
    extraction, and LightGlue matching."""
    config = run.get("config", {})
    stages = []
    if config.get("features", {}).get("extractor", "sift") != "sift":
        stages.append("features")
    if config.get("verify", {}).get("matcher", "nn") in ("lightglue", "cascade"):
        stages.append("verify")
    return stages


def estimate(
    costs: dict[str, float], volumes: dict[str, float], args: argparse.Namespace, on_gpu: list[str] | None = None
) -> dict:
    """vCPU-hours and cost per stage for `args.images`. Stages in `on_gpu` are priced as GPU
    worker hours at the assumed GPU throughputs (`--gpu-images-per-s`, `--gpu-pairs-per-s`)
    instead of the measured CPU seconds: each hour is one GPU plus its worker's vCPUs."""
    on_gpu = on_gpu or []
    candidates = args.images * args.pairs_per_image * args.pair_overlap
    matched_fraction = costs["matched_fraction"] if args.matched_fraction is None else args.matched_fraction
    pairs = candidates * matched_fraction
    vcpu_hours = {
        "ingest": args.images / args.ingest_images_per_vcpu_s / 3600,
        "decode": args.images * costs["decode_s_per_image"] / 3600,
        "features": args.images * costs["features_s_per_image"] / 3600,
        "verify": pairs * costs["verify_s_per_pair"] / 3600,
        "audit": args.images * costs["audit_s_per_image"] / 3600,
    }
    gpu_hours = {
        "features": args.images / args.gpu_images_per_s / 3600,
        "verify": pairs / args.gpu_pairs_per_s / 3600,
    }
    gpu_hours = {stage: hours for stage, hours in gpu_hours.items() if stage in on_gpu}
    for stage in gpu_hours:
        vcpu_hours[stage] = gpu_hours[stage] * args.gpu_worker_vcpus
    total_vcpu_hours = sum(vcpu_hours.values())
    total_gpu_hours = sum(gpu_hours.values())
    per_vcpu_hour = args.vcpu_hour + args.gb_per_vcpu * args.gb_hour
    # the measured run's pairs per image is small (a class of n < 40 has n-1 partners); the
    # per-image shuffle is dominated by fixed per-image records and the kNN descriptor
    shuffle_gb = args.images * volumes["shuffle_bytes_per_image"] / 1e9
    reads_per_image = volumes["store_reads_per_image"] * args.pairs_per_image / max(1.0, args.measured_pairs_per_image)
    store_reads = args.images * reads_per_image
    cost = (
        total_vcpu_hours * per_vcpu_hour
        + total_gpu_hours * args.gpu_hour
        + shuffle_gb * args.shuffle_gb
        + store_reads / 1e4 * args.read_ops_10k
    )
    cpu_hours = sum(hours for stage, hours in vcpu_hours.items() if stage not in gpu_hours)
    wall_hours = cpu_hours / (args.workers * args.vcpus_per_worker) + total_gpu_hours / args.gpu_workers
    reselect_vcpu_hours = args.images * costs["select_s_per_row"] / 3600
    return {
        "images": args.images,
        "candidate_pairs": round(candidates),
        "matched_pairs": round(pairs),
        "measured": {k: round(v, 5) for k, v in costs.items()},
        "vcpu_hours": {k: round(v, 1) for k, v in vcpu_hours.items()},
        "total_vcpu_hours": round(total_vcpu_hours, 1),
        "gpu_hours": {k: round(v, 1) for k, v in gpu_hours.items()},
        "usd_per_vcpu_hour": round(per_vcpu_hour, 5),
        "volumes": {k: round(v, 1) for k, v in volumes.items()},
        "shuffle_gb": round(shuffle_gb),
        "store_reads": round(store_reads),
        "cost_usd": round(cost, 2),
        "wall_hours": round(wall_hours, 2),
        "reselect_vcpu_hours": round(reselect_vcpu_hours, 2),
        "reselect_usd": round(reselect_vcpu_hours * per_vcpu_hour, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-json", required=True, help="run.json of a measured gld curate run")
    parser.add_argument("--images", type=int, default=4_132_914, help="GLDv2 train.csv rows")
    parser.add_argument("--pairs-per-image", type=int, default=100, help="candidate partners per image (k)")
    parser.add_argument("--pair-overlap", type=float, default=1.0, help="share of n*k pairs left after dedupe (<= 1)")
    parser.add_argument(
        "--matched-fraction",
        type=float,
        help="share of candidate pairs matched (default: the measured run's; adaptive verification skips the rest)",
    )
    parser.add_argument("--ingest-images-per-vcpu-s", type=float, default=10.0, help="from bench_ingest.py")
    parser.add_argument("--vcpu-hour", type=float, default=0.056, help="Dataflow batch, USD per vCPU-hour")
    parser.add_argument("--gb-hour", type=float, default=0.003557, help="Dataflow batch, USD per GB-hour")
    parser.add_argument("--gb-per-vcpu", type=float, default=4.0, help="n2-standard: 4 GB per vCPU")
    parser.add_argument("--shuffle-gb", type=float, default=0.011, help="Dataflow Shuffle, USD per GB processed")
    parser.add_argument(
        "--measured-pairs-per-image", type=float, default=10.0, help="candidate pairs per image of the measured run"
    )
    parser.add_argument("--read-ops-10k", type=float, default=0.004, help="GCS class B operations, USD per 10,000")
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--vcpus-per-worker", type=int, default=8)
    parser.add_argument(
        "--gpu", action="store_true", help="price learned/DELF extraction and LightGlue matching on GPU workers"
    )
    # Assumed, not measured here (no GPU on this machine): a T4 with one ALIKED-n16 model at
    # 640 px and LightGlue with its adaptive depth and width, each fed by its worker's CPUs.
    parser.add_argument("--gpu-images-per-s", type=float, default=40.0, help="assumed GPU feature throughput")
    parser.add_argument("--gpu-pairs-per-s", type=float, default=30.0, help="assumed GPU LightGlue throughput")
    parser.add_argument("--gpu-hour", type=float, default=0.35, help="Dataflow, USD per T4 GPU-hour")
    parser.add_argument("--gpu-worker-vcpus", type=int, default=4, help="vCPUs of a GPU worker (n1-standard-4)")
    parser.add_argument("--gpu-workers", type=int, default=20)
    args = parser.parse_args()
    run = json.loads(Path(args.run_json).read_text())
    result = estimate(per_item_seconds(run), volumes_per_image(run), args, gpu_stages(run) if args.gpu else [])
    print(f"candidate pairs {result['candidate_pairs']:,}, matched {result['matched_pairs']:,}")
    for stage, hours in result["vcpu_hours"].items():
        gpu = result["gpu_hours"].get(stage)
        print(f"{stage:9s} {hours:10.1f} vCPU-h" + (f" ({gpu:.1f} GPU-h)" if gpu is not None else ""))
    vcpu_cost = result["total_vcpu_hours"] * result["usd_per_vcpu_hour"]
    print(f"compute {result['total_vcpu_hours']:.1f} vCPU-h x ${result['usd_per_vcpu_hour']:.4f} = ${vcpu_cost:.0f}")
    print(f"shuffle {result['shuffle_gb']} GB x ${args.shuffle_gb} = ${result['shuffle_gb'] * args.shuffle_gb:.0f}")
    print(f"store reads {result['store_reads']:,} x ${args.read_ops_10k} / 10k")
    print(f"re-selection (gld select): {result['reselect_vcpu_hours']} vCPU-h = ${result['reselect_usd']}")
    fleet = f"{args.workers} x {args.vcpus_per_worker} vCPUs"
    print(f"total ${result['cost_usd']:.0f}; {fleet}: {result['wall_hours']:.1f} h")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
