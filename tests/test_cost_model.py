"""The GLDv2 cost model (benchmarks/cost_model.py): which stages go to GPU workers, and how they
are priced there."""

from __future__ import annotations

import argparse

import pytest

from tests.benchmark_modules import load_benchmark

cost_model = load_benchmark("cost_model")

COSTS = {
    "decode_s_per_image": 0.02,
    "features_s_per_image": 1.0,
    "audit_s_per_image": 0.0,
    "verify_s_per_pair": 0.5,
    "matched_fraction": 1.0,
    "select_s_per_row": 0.0,
}
VOLUMES = {"shuffle_bytes_per_image": 0.0, "store_read_bytes_per_image": 0.0, "store_reads_per_image": 0.0}


def _args(**changes: float) -> argparse.Namespace:
    values = dict(
        images=3600,
        pairs_per_image=10,
        pair_overlap=1.0,
        ingest_images_per_vcpu_s=10.0,
        vcpu_hour=0.05,
        gb_hour=0.0,
        gb_per_vcpu=4.0,
        shuffle_gb=0.0,
        measured_pairs_per_image=10.0,
        read_ops_10k=0.0,
        workers=1,
        vcpus_per_worker=1,
        gpu_images_per_s=40.0,
        gpu_pairs_per_s=30.0,
        gpu_hour=0.35,
        gpu_worker_vcpus=4,
        gpu_workers=1,
        matched_fraction=None,
    )
    return argparse.Namespace(**{**values, **changes})


@pytest.mark.parametrize(
    ("config", "stages"),
    [
        ({}, []),
        ({"features": {"extractor": "sift"}, "verify": {"matcher": "nn"}}, []),
        ({"features": {"extractor": "delf"}}, ["features"]),
        ({"features": {"extractor": "aliked"}, "verify": {"matcher": "lightglue"}}, ["features", "verify"]),
        ({"features": {"extractor": "aliked"}, "verify": {"matcher": "cascade"}}, ["features", "verify"]),
    ],
)
def test_gpu_stages_are_the_learned_steps(config: dict, stages: list[str]) -> None:
    assert cost_model.gpu_stages({"config": config}) == stages


def test_gpu_stages_are_priced_as_gpu_worker_hours() -> None:
    cpu = cost_model.estimate(COSTS, VOLUMES, _args())
    assert cpu["vcpu_hours"]["features"] == 1.0 and cpu["vcpu_hours"]["verify"] == 5.0 and cpu["gpu_hours"] == {}
    gpu = cost_model.estimate(COSTS, VOLUMES, _args(), ["features", "verify"])
    # 3600 images at 40/s = 0.025 h; 36,000 pairs at 30/s = 0.333 h; each hour also holds 4 vCPUs
    assert gpu["gpu_hours"] == {"features": 0.0, "verify": 0.3}
    assert gpu["vcpu_hours"]["verify"] == round(36000 / 30 / 3600 * 4, 1)
    expected = (gpu["total_vcpu_hours"] * 0.05) + (3600 / 40 + 36000 / 30) / 3600 * 0.35
    assert gpu["cost_usd"] == pytest.approx(expected, abs=0.01)
    assert gpu["cost_usd"] < cpu["cost_usd"] or gpu["wall_hours"] < cpu["wall_hours"]


def test_adaptive_verification_prices_the_matched_share_of_the_candidates() -> None:
    measured = cost_model.estimate({**COSTS, "matched_fraction": 0.4}, VOLUMES, _args())
    assert (measured["candidate_pairs"], measured["matched_pairs"]) == (36000, 14400)
    assert measured["vcpu_hours"]["verify"] == 2.0
    assumed = cost_model.estimate({**COSTS, "matched_fraction": 0.4}, VOLUMES, _args(matched_fraction=0.5))
    assert assumed["vcpu_hours"]["verify"] == 2.5


def test_per_item_seconds_reads_the_matched_share_from_the_counters() -> None:
    run = {
        "counters": {
            "features": {"ok": 10},
            "decode": {"ok": 10},
            "verify": {"verified": 30, "too_few_matches": 10, "reused": 20, "already_joined": 40},
        },
        "seconds": {"decode": 1.0, "features": 5.0, "verify": 8.0, "select_wall": 1.0},
        "counts": {"rows": 10},
        "cores": 2,
    }
    costs = cost_model.per_item_seconds(run)
    assert costs["verify_s_per_pair"] == 0.2 and costs["matched_fraction"] == 0.6


def _run(cores: int | None) -> dict:
    counters = {"features": {"ok": 10}, "decode": {"ok": 10}, "verify": {"verified": 20}}
    run = {"counters": counters, "seconds": {"decode": 1.0, "features": 5.0, "verify": 2.0, "select_wall": 3.0}}
    run["counts"] = {"rows": 12}
    return run if cores is None else {**run, "cores": cores}


def test_selection_is_priced_with_the_cores_the_run_recorded() -> None:
    assert cost_model.per_item_seconds(_run(8))["select_s_per_row"] == pytest.approx(3.0 * 8 / 12)
    assert cost_model.per_item_seconds(_run(1))["select_s_per_row"] == pytest.approx(3.0 / 12)
    with pytest.raises(ValueError, match="no cores"):
        cost_model.per_item_seconds(_run(None))


def test_the_audit_is_priced_per_image_whatever_the_partners() -> None:
    run = _run(2)
    assert cost_model.per_item_seconds(run)["audit_s_per_image"] == 0.0
    run["seconds"]["audit"] = 4.0
    costs = cost_model.per_item_seconds(run)
    assert costs["audit_s_per_image"] == pytest.approx(0.4)
    for k in (10, 100):
        assert cost_model.estimate(costs, VOLUMES, _args(pairs_per_image=k))["vcpu_hours"]["audit"] == pytest.approx(
            0.4
        )
