"""Stage 7: choose the clean images of each class from its verified-pair graph.

Rule (foundation): connected components of the graph whose edges are pairs with at least
`min_inliers` RANSAC inliers; an image is kept when its component has at least
`min_component_size` images.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import networkx as nx

from schemas.records import ImageDecision, PairResult
from schemas.vocabulary import Reason, Stage, Status
from transforms.progress import tick

STAGE = Stage.SELECT.value


@dataclass(frozen=True)
class SelectConfig:
    min_inliers: int = 30
    min_component_size: int = 2

    def __post_init__(self) -> None:
        if self.min_inliers < 1:
            raise ValueError("min_inliers must be >= 1")
        if self.min_component_size < 2:
            raise ValueError("min_component_size must be >= 2 (a lone image verifies nothing)")


def select_class(
    landmark_id: int, members: Iterable[tuple[str, int]], pairs: Iterable[PairResult], config: SelectConfig
) -> list[ImageDecision]:
    """One decision per member (id, line) of a class, sorted by id.

    Components are numbered within the class by decreasing size, ties by smallest id, so ids
    are stable across runs. `degree` counts verified edges, `max_inliers`/`best_partner` look
    at every candidate pair of the image (best partner ties go to the smaller id).
    """
    lines = dict(members)
    graph = nx.Graph()
    graph.add_nodes_from(lines)
    best: dict[str, tuple[int, str]] = {}  # id -> (-inliers, partner): min() is the best
    for pair in pairs:
        for me, other in ((pair.id_a, pair.id_b), (pair.id_b, pair.id_a)):
            candidate = (-pair.inliers, other)
            if me not in best or candidate < best[me]:
                best[me] = candidate
        if pair.inliers >= config.min_inliers:
            graph.add_edge(pair.id_a, pair.id_b)
    components = sorted((sorted(c) for c in nx.connected_components(graph)), key=lambda c: (-len(c), c[0]))
    decisions = []
    for component_id, component in enumerate(components):
        size = len(component)
        for image_id in component:
            degree = graph.degree[image_id]
            if size >= config.min_component_size:
                status, reason = Status.KEPT, Reason.VERIFIED_COMPONENT
            elif degree == 0:
                status, reason = Status.REMOVED, Reason.NO_VERIFIED_PAIR
            else:
                status, reason = Status.REMOVED, Reason.SMALL_COMPONENT
            neg_inliers, partner = best.get(image_id, (0, ""))
            decisions.append(
                ImageDecision(
                    line=lines[image_id],
                    id=image_id,
                    landmark_id=landmark_id,
                    status=status,
                    reason=reason.value,
                    stage=STAGE,
                    detail="" if degree or partner else "no candidate pair in class",
                    degree=degree,
                    component_id=component_id,
                    component_size=size,
                    max_inliers=-neg_inliers,
                    best_partner=partner,
                )
            )
    return sorted(decisions, key=lambda d: d.id)


def _select(landmark_id: int, grouped: dict, config: SelectConfig = SelectConfig()) -> Iterator[ImageDecision]:
    for decision in select_class(landmark_id, grouped["members"], grouped["pairs"], config):
        tick(STAGE, decision.reason)
        yield decision


class SelectClean(beam.PTransform):
    """{"members": (landmark_id, (id, line)), "pairs": PairResult} -> ImageDecision PCollection."""

    def __init__(self, config: SelectConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        pairs_by_class = inputs["pairs"] | "PairsByClass" >> beam.Map(lambda p: (p.landmark_id, p))
        return (
            {"members": inputs["members"], "pairs": pairs_by_class}
            | "JoinClass" >> beam.CoGroupByKey()
            | "Select" >> beam.FlatMapTuple(_select, config=self._config)
        )
