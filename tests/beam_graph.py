"""The applied transforms of a built Beam pipeline, for tests that inspect its graph."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor


def applied_transforms(pipeline: beam.Pipeline) -> list[AppliedPTransform]:
    """Every applied transform of the pipeline graph (composites and leaves), in visiting order."""
    found: list[AppliedPTransform] = []

    class Collect(PipelineVisitor):
        def enter_composite_transform(self, node: AppliedPTransform) -> None:
            found.append(node)

        def visit_transform(self, node: AppliedPTransform) -> None:
            found.append(node)

    pipeline.visit(Collect())
    return found
