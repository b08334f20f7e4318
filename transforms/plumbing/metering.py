"""What crosses a shuffle, counted: Beam counters `shuffle/bytes` and `shuffle/elements`.

Every grouping step of the curation (GroupByKey, CoGroupByKey, Reshuffle) is fed through
`meter(label)`, which adds the pickled size of each element: the volume a runner moves between
workers (Dataflow's shuffle bill) and what an in-process runner holds between stages. Heavy data
stays in the stores, so this stays at a few KiB per image; `run.json` reports it per image.
"""

from __future__ import annotations

import pickle
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

STAGE = "shuffle"


def _count(element: Any) -> Any:
    Metrics.counter(STAGE, "bytes").inc(len(pickle.dumps(element, protocol=pickle.HIGHEST_PROTOCOL)))
    Metrics.counter(STAGE, "elements").inc()
    return element


def meter(label: str) -> beam.PTransform:
    """A pass-through step named `label` that counts the bytes of what goes on to a shuffle."""
    return label >> beam.Map(_count)
