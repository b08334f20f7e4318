"""Stage 7: choose the clean images of each class from its verified-pair graph.

An edge is a candidate pair with at least `min_inliers` RANSAC inliers. Two policies:

- `components` (this project's default): keep the images of connected components of at least
  `min_component_size` images (optionally only the class's largest component). It behaves like
  "one verified pair is enough" and keeps about 2.5M of GLDv2's 4.1M images. With
  `drop_isolated_components` it also removes an isolated component: at most
  `isolated_max_size` images, beside a larger component of the same class, and linked to the
  rest of the class by no candidate pair of `isolation_inliers` or more. Such a component is
  typically two consecutive frames of one unrelated scene filed under the landmark: they verify
  each other with hundreds of inliers and nothing else in the class at all, so they are no
  evidence of the landmark, while the class's evidence is its larger component.
- `degree` (team smlyaka's rule, which made GLDv2-train-clean): keep an image with at least
  `min_degree` verified pairs.

Then, under either policy, a class keeps its survivors only if it has at least `min_class_size`
of them. With the same pairs, what `degree` keeps is a subset of what `components` keeps
(an image with >= 3 edges sits in a component of >= 4 images).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import networkx as nx

from schemas.records import ImageDecision, PairResult
from schemas.vocabulary import PairReason, Reason, Stage, Status
from transforms.plumbing.metering import meter
from transforms.plumbing.progress import tick

STAGE = Stage.SELECT.value
POLICIES = ("components", "degree")


@dataclass(frozen=True)
class SelectConfig:
    """`policy`: `components` or `degree`; `largest_component_only` and the isolated-component
    rule (`drop_isolated_components`, `isolated_max_size`, `isolation_inliers`; see the module
    docstring) apply to `components`, `min_degree` to `degree`; `min_class_size` (survivors a
    class needs) to both.

    `isolation_inliers` sits between chance and evidence: unrelated photos reach about 10 inliers
    by chance (SIFT 4000, affine 12 px), while the pairs that link a genuine small component to
    the rest of its class, when a high `min_inliers` splits it off, keep 40 or more.

    `reviews`: a reviews.csv (any Beam path; "" for none) whose verdicts apply after the rules
    (`transforms.selection.apply_reviews`, wired by the selection job, not by `SelectClean`)."""

    min_inliers: int = 30
    min_component_size: int = 2
    policy: str = "components"
    largest_component_only: bool = False
    min_degree: int = 3
    min_class_size: int = 2
    drop_isolated_components: bool = False
    isolated_max_size: int = 2
    isolation_inliers: int = 15
    reviews: str = ""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")
        if self.min_inliers < 1:
            raise ValueError("min_inliers must be >= 1")
        if self.min_component_size < 2:
            raise ValueError("min_component_size must be >= 2 (a lone image verifies nothing)")
        if self.min_degree < 1:
            raise ValueError("min_degree must be >= 1")
        if self.min_class_size < 1:
            raise ValueError("min_class_size must be >= 1")
        if self.isolated_max_size < 2:
            raise ValueError("isolated_max_size must be >= 2 (a lone image is not a component the rule judges)")
        if self.isolation_inliers < 1:
            raise ValueError("isolation_inliers must be >= 1")


def isolated_components(
    components: list[list[str]], pairs: Iterable[PairResult], config: SelectConfig
) -> dict[int, str]:
    """{component id: the detail of its removal} for the components of a class (sorted, largest
    first, as `select_class` numbers them) that the isolated-component rule removes: those of 2
    to `isolated_max_size` images, smaller than component 0, whose best candidate pair with an
    image outside the component has fewer than `isolation_inliers` inliers. Empty unless the
    rule is on and the policy is `components`."""
    if not (config.drop_isolated_components and config.policy == "components") or len(components) < 2:
        return {}
    largest = len(components[0])
    judged = {
        cid: set(component)
        for cid, component in enumerate(components)
        if 2 <= len(component) <= config.isolated_max_size and len(component) < largest
    }
    of = {image_id: cid for cid, component in judged.items() for image_id in component}
    link: dict[int, tuple[int, str]] = {}  # cid -> (-inliers, partner outside): min() is the best
    within: dict[int, tuple[int, int]] = {}  # cid -> (-inliers, matches) of its strongest pair
    for pair in pairs:
        cid_a, cid_b = of.get(pair.id_a), of.get(pair.id_b)
        if cid_a is not None and cid_a == cid_b:
            strength = (-pair.inliers, pair.num_matches)
            within[cid_a] = min(within.get(cid_a, strength), strength)
            continue
        for cid, other in ((cid_a, pair.id_b), (cid_b, pair.id_a)):
            if cid is not None:
                candidate = (-pair.inliers, other)
                link[cid] = min(link[cid], candidate) if cid in link else candidate
    details = {}
    for cid, component in judged.items():
        neg_link, partner = link.get(cid, (0, ""))
        if -neg_link >= config.isolation_inliers:
            continue
        neg_inliers, matches = within[cid]
        outside = (
            f"its best pair with the rest of the class has {-neg_link} inliers (with {partner}), "
            f"under {config.isolation_inliers}"
            if partner
            else "it has no candidate pair with the rest of the class"
        )
        details[cid] = (
            f"{len(component)}-image component beside the class's largest ({largest} images), verified only within "
            f"itself (best pair {-neg_inliers} of {matches} matches inliers); {outside}"
        )
    return details


def _image_rule(
    degree: int, component_id: int, size: int, config: SelectConfig, isolated: str | None
) -> tuple[Reason, str]:
    """The policy's verdict on one image: a kept reason, or the removal reason and its detail
    (`isolated`: the detail when the isolated-component rule removes the image's component)."""
    if degree == 0:
        return Reason.NO_VERIFIED_PAIR, ""
    if config.policy == "degree":
        if degree < config.min_degree:
            return Reason.LOW_DEGREE, f"{degree} verified pairs, the rule needs {config.min_degree}"
        return Reason.VERIFIED_DEGREE, ""
    if size < config.min_component_size:
        return Reason.SMALL_COMPONENT, ""
    if config.largest_component_only and component_id != 0:
        return Reason.NOT_LARGEST_COMPONENT, f"component {component_id} of the class; only component 0 is kept"
    if isolated is not None:
        return Reason.ISOLATED_COMPONENT, isolated
    return Reason.VERIFIED_COMPONENT, ""


_KEPT_REASONS = (Reason.VERIFIED_COMPONENT, Reason.VERIFIED_DEGREE)


def select_class(
    landmark_id: int, members: Iterable[tuple[str, int]], pairs: Iterable[PairResult], config: SelectConfig
) -> list[ImageDecision]:
    """One decision per member (id, line) of a class, sorted by id.

    Components are numbered within the class by decreasing size, ties by smallest id, so ids
    are stable across runs. `degree` counts verified edges, `max_inliers`/`best_partner` look
    at every matched candidate pair of the image (best partner ties go to the smaller id); pairs
    that adaptive verification skipped are not evidence, so for an image with skipped pairs
    these three can be lower than exhaustive verification's, while every decision is the same.
    Removal reasons: `no_verified_pair` (no edge at all), `small_component`,
    `not_largest_component` and `isolated_component` (components policy), `low_degree` (degree
    policy) and `class_too_small` (the image passed the rule but too few images of its class did).
    """
    lines = dict(members)
    # a pair adaptive verification skipped was never matched: no evidence either way, and it lies
    # inside a component, where it could change no decision (`transforms.matching.rounds`)
    pairs = [pair for pair in pairs if pair.reason != PairReason.ALREADY_JOINED.value]
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
    isolated = isolated_components(components, pairs, config)
    verdicts = {
        image_id: (
            component_id,
            len(component),
            *_image_rule(graph.degree[image_id], component_id, len(component), config, isolated.get(component_id)),
        )
        for component_id, component in enumerate(components)
        for image_id in component
    }
    survivors = sum(1 for *_, reason, _ in verdicts.values() if reason in _KEPT_REASONS)
    class_too_small = survivors < config.min_class_size
    decisions = []
    for image_id, (component_id, size, reason, detail) in verdicts.items():
        degree = graph.degree[image_id]
        status = Status.KEPT if reason in _KEPT_REASONS else Status.REMOVED
        if status == Status.KEPT and class_too_small:
            status, reason = Status.REMOVED, Reason.CLASS_TOO_SMALL
            detail = f"{survivors} image(s) of the class passed the rule, a class needs {config.min_class_size}"
        neg_inliers, partner = best.get(image_id, (0, ""))
        if not degree and not partner:
            detail = "no candidate pair in class"
        decisions.append(
            ImageDecision(
                line=lines[image_id],
                id=image_id,
                landmark_id=landmark_id,
                status=status,
                reason=reason.value,
                stage=STAGE,
                detail=detail,
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
        pairs_by_class = (
            inputs["pairs"] | "PairsByClass" >> beam.Map(lambda p: (p.landmark_id, p)) | meter("MeterPairs")
        )
        return (
            {"members": inputs["members"] | meter("MeterMembers"), "pairs": pairs_by_class}
            | "JoinClass" >> beam.CoGroupByKey()
            | "Select" >> beam.FlatMapTuple(_select, config=self._config)
        )
