"""Every grouping step of `gld curate` goes through the shuffle meter (transforms/plumbing/metering.py), so
`run.json` `shuffle.bytes_per_image` and the cost model count all that a runner shuffles."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.pipeline import AppliedPTransform

from pipeline.curation.config import build_config
from pipeline.curation.curate import build_curation, build_selection
from pipeline.curation.preflight import Preflight
from schemas.gldv2_csv import TRAIN_COLUMNS
from tests.beam_graph import applied_transforms
from transforms.ingest.stage import StoreListing

#: Combines whose accumulator is a few numbers: a runner combines before the shuffle, so what
#: crosses it is one accumulator per bundle, not the elements (counting those would overstate).
LIFTED = (beam.combiners.Count.Globally, beam.CombineGlobally)


def _beam_step(node: AppliedPTransform) -> bool:
    return node.transform is not None and type(node.transform).__module__.startswith("apache_beam")


def grouping_steps(pipeline: beam.Pipeline) -> list[AppliedPTransform]:
    """The outermost Beam transform around each GroupByKey (a CoGroupByKey, Reshuffle,
    Distinct, combine, Parquet read, ...): where a step of this project hands data to a shuffle."""
    steps = {}
    for node in applied_transforms(pipeline):
        if type(node.transform).__name__ == "GroupByKey" and not node.parts:
            while node.parent is not None and _beam_step(node.parent):
                node = node.parent
            steps[node.full_label] = node
    return list(steps.values())


def _pipelines(tar_dir: str) -> list[beam.Pipeline]:
    config = build_config("train.csv", "/out", overrides={"fetch": {"tar_dir": tar_dir}} if tar_dir else None)
    # a store to resume from: the resume join is wired too
    listing = StoreListing(("/out/images/part-1.parquet",), ((1, "/out/ingest_failures/part-2.parquet"),), "/log")
    heavy, selection = beam.Pipeline(), beam.Pipeline()
    build_curation(heavy, config, Preflight(TRAIN_COLUMNS, listing))
    build_selection(selection, config)
    return [heavy, selection]


@pytest.mark.parametrize("tar_dir", ["", "/shards"])
def test_every_grouping_step_is_fed_by_its_own_meter(tar_dir: str) -> None:
    fed: list[str] = []
    for pipeline in _pipelines(tar_dir):
        steps = grouping_steps(pipeline)
        assert len(steps) > 10
        for step in steps:
            if isinstance(step.transform, LIFTED):
                continue
            for pcoll in step.inputs:
                producer = pcoll.producer.full_label
                assert producer.rsplit("/", 1)[-1].startswith("Meter"), f"{step.full_label} <- {producer}"
                fed.append(producer)
    # a metered collection feeding two shuffles would be counted once for both
    assert len(fed) == len(set(fed)), sorted(p for p in fed if fed.count(p) > 1)


def test_tar_image_bytes_go_from_the_shard_reader_to_the_store_without_a_shuffle() -> None:
    """Downstream of the shard reader, every step up to the image store is fused with it (no
    grouping between), so a JPEG never crosses a shuffle; after the store only references go on."""
    heavy, _ = _pipelines("/shards")
    nodes = applied_transforms(heavy)
    consumers: dict[int, list[AppliedPTransform]] = {}
    for node in nodes:
        if not node.parts:
            for pcoll in node.inputs:
                consumers.setdefault(id(pcoll), []).append(node)
    [reader] = [n for n in nodes if n.full_label == "Ingest/ReadShards/ReadShard"]
    seen, frontier, reached_store = set(), [reader], False
    while frontier:
        node = frontier.pop()
        if node.full_label.startswith("Ingest/StoreImages"):
            reached_store = True
            continue  # what the store emits are references
        assert type(node.transform).__name__ != "GroupByKey", node.full_label
        for tag, pcoll in node.outputs.items():
            if tag == "reports":  # the shard summaries, not images
                continue
            for consumer in consumers.get(id(pcoll), []):
                if consumer.full_label not in seen and not consumer.full_label.startswith("Ingest/MatchCopies/"):
                    seen.add(consumer.full_label)
                    frontier.append(consumer)
    assert reached_store
