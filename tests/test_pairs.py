"""Tests of stage 5, candidate pairs and their work blocks (transforms.matching.pairs)."""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import LocalFeatures
from tests.stores import plan_items, store_features
from transforms.features.global_descriptor import aggregate_local
from transforms.matching.pairs import GeneratePairs, PairConfig, candidate_pairs, plan_class


def _beam_options() -> PipelineOptions:
    return PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])


def _ids(n: int, seed: int = 0) -> list[str]:
    """n distinct GLDv2-like ids, in a shuffled order."""
    ids = [f"{i * 7919 + 13:016x}" for i in range(n)]
    random.Random(seed).shuffle(ids)
    return ids


def _descriptors(ids: list[str], seed: int = 0, dimension: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {image_id: rng.standard_normal(dimension).astype(np.float32) for image_id in sorted(ids)}


def _split(planned: list) -> tuple[list, list]:
    """plan_class output -> (main (key, pair) items, `needs` values)."""
    main, needs = [], []
    for item in planned:
        if isinstance(item, beam.pvalue.TaggedOutput):
            assert item.tag == "needs"
            needs.append(item.value)
        else:
            main.append((item.block, (item.a, item.b)))
    return main, needs


def _check_pair_invariants(pairs: list[tuple[str, str]], ids: list[str]) -> None:
    members = set(ids)
    assert pairs == sorted(pairs)
    assert len(set(pairs)) == len(pairs)
    for a, b in pairs:
        assert a < b, (a, b)
        assert a in members and b in members


def test_all_pairs_for_a_small_class() -> None:
    ids = _ids(7)
    pairs = candidate_pairs(3, ids, PairConfig(mode="all", max_class_for_all=7))
    assert len(pairs) == 7 * 6 // 2
    assert pairs == list(itertools.combinations(sorted(ids), 2))
    _check_pair_invariants(pairs, ids)


@pytest.mark.parametrize("ids", [[], ["only"], ["same", "same"]])
def test_fewer_than_two_images_give_no_pairs(ids: list[str]) -> None:
    assert candidate_pairs(1, ids, PairConfig()) == []
    assert candidate_pairs(1, ids, PairConfig(mode="random")) == []


def test_duplicate_ids_are_ignored() -> None:
    assert candidate_pairs(1, ["b", "a", "b", "c", "a"], PairConfig()) == [("a", "b"), ("a", "c"), ("b", "c")]


def test_large_class_falls_back_to_knn() -> None:
    n, k = 100, 5
    ids = _ids(n)
    descriptors = _descriptors(ids)
    config = PairConfig(mode="all", max_class_for_all=40, k=k, seed=3)
    pairs = candidate_pairs(12, ids, config, descriptors)
    _check_pair_invariants(pairs, ids)
    # each image brings its k nearest; a pair can be chosen from both ends at most
    assert n * k // 2 <= len(pairs) <= n * k
    degree = Counter(itertools.chain.from_iterable(pairs))
    assert set(degree) == set(ids), "every image is in at least one pair"
    assert min(degree.values()) >= k
    # "all" above the threshold is exactly "knn" with the same k
    assert pairs == candidate_pairs(12, ids, PairConfig(mode="knn", k=k), descriptors)


def test_knn_needs_descriptors() -> None:
    ids = _ids(50)
    with pytest.raises(ValueError, match="global descriptor"):
        candidate_pairs(1, ids, PairConfig(mode="knn"))
    partial = _descriptors(ids[:49])
    with pytest.raises(ValueError, match="global descriptor"):
        candidate_pairs(1, ids, PairConfig(mode="all", max_class_for_all=40), partial)


def test_knn_pairs_each_image_with_its_nearest_neighbours() -> None:
    # four tight clusters of five ids: with k = 4 every pair stays inside its cluster
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((4, 8)) * 10
    ids = _ids(20)
    descriptors = {
        image_id: (centres[i % 4] + rng.standard_normal(8) * 0.1).astype(np.float32) for i, image_id in enumerate(ids)
    }
    cluster = {image_id: i % 4 for i, image_id in enumerate(ids)}
    pairs = candidate_pairs(1, ids, PairConfig(mode="knn", k=4), descriptors)
    _check_pair_invariants(pairs, ids)
    assert all(cluster[a] == cluster[b] for a, b in pairs)
    # inside a cluster of five, four nearest = all others: every within-cluster pair, once
    assert len(pairs) == 4 * 10


def test_knn_is_deterministic_and_independent_of_input_order() -> None:
    ids = _ids(90)
    descriptors = _descriptors(ids, seed=4)
    config = PairConfig(mode="knn", k=6)
    first = candidate_pairs(2, ids, config, descriptors)
    assert candidate_pairs(2, list(reversed(ids)), config, descriptors) == first
    assert candidate_pairs(2, ids + ids[:5], config, dict(reversed(list(descriptors.items())))) == first


def test_knn_with_k_at_least_class_size_is_complete() -> None:
    ids = _ids(6)
    pairs = candidate_pairs(1, ids, PairConfig(mode="knn", k=10), _descriptors(ids))
    assert pairs == list(itertools.combinations(sorted(ids), 2))


def test_threshold_is_inclusive() -> None:
    ids = _ids(41)
    descriptors = _descriptors(ids)
    at_limit = candidate_pairs(1, ids[:40], PairConfig(max_class_for_all=40, k=2))
    above = candidate_pairs(1, ids, PairConfig(max_class_for_all=40, k=2), descriptors)
    assert len(at_limit) == 40 * 39 // 2
    assert len(above) <= 41 * 2


def test_random_mode_with_k_at_least_class_size_is_complete() -> None:
    ids = _ids(6)
    pairs = candidate_pairs(1, ids, PairConfig(mode="random", k=10))
    assert pairs == list(itertools.combinations(sorted(ids), 2))


def test_random_pairs_deterministic_and_independent_of_input_order() -> None:
    ids = _ids(120)
    config = PairConfig(mode="random", k=4, seed=11)
    first = candidate_pairs(9, ids, config)
    assert candidate_pairs(9, ids, config) == first
    assert candidate_pairs(9, list(reversed(ids)), config) == first
    assert candidate_pairs(9, sorted(ids) + ids[:10], config) == first


def test_random_pairs_depend_on_seed_and_class() -> None:
    ids = _ids(120)
    base = candidate_pairs(9, ids, PairConfig(mode="random", k=4, seed=11))
    assert candidate_pairs(9, ids, PairConfig(mode="random", k=4, seed=12)) != base
    assert candidate_pairs(10, ids, PairConfig(mode="random", k=4, seed=11)) != base


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "exhaustive"},
        {"max_class_for_all": 1},
        {"k": 0},
        {"block_size": 0},
    ],
)
def test_pair_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PairConfig(**kwargs)


def _check_plan(landmark_id: int, members: list, config: PairConfig) -> tuple[list, list]:
    """`members`: ids, or (id, global descriptor) pairs."""
    main, needs = _split(list(plan_class(landmark_id, members, config)))
    descriptors = dict(m if isinstance(m, tuple) else (m, None) for m in members)
    ids = sorted(descriptors)
    block_of = {image_id: i // config.block_size for i, image_id in enumerate(ids)}

    pairs = [pair for _, pair in main]
    assert pairs == candidate_pairs(landmark_id, ids, config, descriptors)
    # every id sits in one block that all its keys name; no block holds more than block_size
    block_choices: dict[str, set[int]] = {}
    for key, (a, b) in main:
        assert key[0] == landmark_id and key[1] <= key[2]
        if config.mode != "knn":  # knn cuts blocks from its locality order instead
            assert key == (landmark_id, block_of[a], block_of[b])
        for image_id in (a, b):
            block_choices[image_id] = block_choices.get(image_id, {key[1], key[2]}) & {key[1], key[2]}
    assert all(block_choices.values())
    assert max(Counter(min(blocks) for blocks in block_choices.values()).values()) <= config.block_size

    expected_needs = {(a, key) for key, (a, _) in main} | {(b, key) for key, (_, b) in main}
    assert needs == sorted(expected_needs), "each (id, block key) exactly once, sorted"
    return main, needs


def test_plan_class_small_blocks() -> None:
    ids = _ids(10)
    main, needs = _check_plan(4, ids, PairConfig(block_size=3))
    assert len(main) == 45
    keys = {key for key, _ in main}
    # 10 ids in blocks of 3 -> blocks 0..3 -> every (i <= j) block pair has a pair, except
    # (3, 3): the last block holds one image, and an image is never paired with itself
    assert keys == {(4, i, j) for i in range(4) for j in range(i, 4)} - {(4, 3, 3)}
    # the image of the last block is needed by every key that pairs it with another block
    last = sorted(ids)[-1]
    assert {key for image_id, key in needs if image_id == last} == {(4, i, 3) for i in range(3)}


def test_plan_class_single_block() -> None:
    ids = _ids(5)
    main, needs = _check_plan(8, ids, PairConfig(block_size=32))
    assert {key for key, _ in main} == {(8, 0, 0)}
    assert needs == [(image_id, (8, 0, 0)) for image_id in sorted(ids)]


def test_plan_class_without_pairs_needs_nothing() -> None:
    assert list(plan_class(8, ["lonely"], PairConfig())) == []


@pytest.mark.parametrize("mode", ["random", "knn"])
def test_plan_large_class_bounds_work_per_block(mode: str) -> None:
    n, k, block_size = 2000, 10, 32
    ids = _ids(n, seed=5)
    config = PairConfig(mode=mode, k=k, block_size=block_size, seed=1)
    main, needs = _check_plan(77, list(_descriptors(ids, dimension=32).items()), config)
    assert n * k // 2 <= len(main) <= n * k

    ids_per_key: dict[tuple, set[str]] = defaultdict(set)
    for key, (a, b) in main:
        ids_per_key[key].update((a, b))
    assert max(len(members) for members in ids_per_key.values()) <= 2 * block_size
    # `needs` ships exactly the ids of each key, so the same bound holds for the shuffle
    needs_per_key: dict[tuple, set[str]] = defaultdict(set)
    for image_id, key in needs:
        needs_per_key[key].add(image_id)
    assert needs_per_key == ids_per_key

    blocks = -(-n // block_size)
    keys_per_image = Counter(image_id for image_id, _ in needs)
    assert set(keys_per_image) == set(ids)
    assert max(keys_per_image.values()) <= blocks
    # every feature set is shuffled far fewer times than there are pairs
    assert len(needs) < 2 * len(main)
    assert np.mean(list(keys_per_image.values())) <= 2 * k


def _features(image_id: str, landmark_id: int, line: int, descriptors: np.ndarray | None = None) -> LocalFeatures:
    descriptors = np.zeros((0, 128), np.uint8) if descriptors is None else descriptors
    n = len(descriptors)
    return LocalFeatures(
        id=image_id,
        landmark_id=landmark_id,
        line=line,
        keypoints=np.zeros((n, 2), np.float32),
        descriptors=descriptors,
        scales=np.zeros((n,), np.float32),
        scores=np.zeros((n,), np.float32),
        width=10,
        height=10,
    )


def test_knn_blocks_follow_neighbourhoods() -> None:
    """64 groups of 8 near-identical descriptors: knn pairs stay inside a group, and blocks cut
    from the locality order keep whole groups together, so every image's features travel to
    one block pair only (in id order they would travel to ~7)."""
    rng = np.random.default_rng(3)
    ids = _ids(512, seed=9)
    centres = rng.standard_normal((64, 16))
    members = [
        (image_id, (centres[i % 64] + rng.normal(0, 0.01, 16)).astype(np.float32)) for i, image_id in enumerate(ids)
    ]
    main, needs = _check_plan(3, members, PairConfig(mode="knn", k=7, block_size=32))
    assert len(main) == 64 * 28, "exactly the pairs inside each group"
    assert {key[1] == key[2] for key, _ in main} == {True}
    assert len(needs) == len(ids)


@pytest.mark.parametrize("mode", ["all", "random"])
def test_generate_pairs_transform(tmp_path, mode: str) -> None:
    # class 6 is above max_class_for_all (knn or random partners); its ids differ from class 5's
    classes = {5: _ids(6, seed=1), 6: [f"z{image_id}" for image_id in _ids(45, seed=2)], 9: ["solo"]}
    config = PairConfig(mode=mode, max_class_for_all=40, k=3, block_size=4, seed=2, verification="exhaustive")
    rng = np.random.default_rng(7)
    features = [
        _features(image_id, lid, i, rng.integers(0, 256, (30, 128), dtype=np.uint8))
        for lid, ids in classes.items()
        for i, image_id in enumerate(ids)
    ]
    expected_main, expected_needs = [], []
    for lid in classes:
        members = [(f.id, aggregate_local(f.descriptors)) for f in features if f.landmark_id == lid]
        main, needs = _split(list(plan_class(lid, members, config)))
        expected_main += main
        expected_needs += needs
    assert len(expected_main) > 15 and len(expected_needs) > 0

    refs = store_features(str(tmp_path / "features"), features)
    with BeamTestPipeline(options=_beam_options()) as pipeline:
        (plans,) = {"features": pipeline | beam.Create(refs)} | GeneratePairs(config)
        items = plans | beam.FlatMap(plan_items)
        pairs = items | "Pairs" >> beam.Filter(lambda i: i[0] == "pair") | "PairValues" >> beam.Values()
        needs = items | "Needs" >> beam.Filter(lambda i: i[0] == "need") | "NeedValues" >> beam.Values()
        assert_that(pairs, equal_to(expected_main), label="CheckPairs")
        assert_that(needs, equal_to(expected_needs), label="CheckNeeds")
        cached = plans | "Cached" >> beam.FlatMap(lambda element: element[1].cached)
        assert_that(cached, equal_to([]), label="NothingStored")
