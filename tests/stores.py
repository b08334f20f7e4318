"""Test helpers: put images and features into their stores and get their claim checks back."""

from __future__ import annotations

import numpy as np

from schemas.records import DecodedImage, FeatureRef, ImageRef, LocalFeatures, ManifestRow
from schemas.tables import FEATURES_SCHEMA, IMAGES_SCHEMA, FeatureSummary, image_to_row
from transforms.features.global_descriptor import aggregate_local
from transforms.features.stage import Extracted, _store_row, _stored_ref
from transforms.ingest.image_store import write_part
from transforms.ingest.stage import image_ref
from transforms.selection.audit_signatures import descriptor_mean


def store_images(directory: str, images: list[DecodedImage]) -> list[ImageRef]:
    """Write `images` as one part of an image store under `directory`; their ImageRefs, in the
    order given (a part keeps rows sorted by id, one per row group)."""
    path = write_part(directory, [image_to_row(image) for image in images], IMAGES_SCHEMA)
    order = sorted(range(len(images)), key=lambda i: images[i].row.id)
    index = {position: rank for rank, position in enumerate(order)}
    return [image_ref(image, path, index[i]) for i, image in enumerate(images)]


def store_features(directory: str, features: list[LocalFeatures]) -> list[FeatureRef]:
    """Write `features` as one part of a features store (with their offline summaries and an
    empty image hash); their FeatureRefs, in the order given."""
    extracted = [Extracted(_no_image(f), f, _summary(f)) for f in features]
    path = write_part(directory, [_store_row(e) for e in extracted], FEATURES_SCHEMA)
    order = sorted(range(len(features)), key=lambda i: features[i].id)
    index = {position: rank for rank, position in enumerate(order)}
    return [_stored_ref(e, path, index[i]) for i, e in enumerate(extracted)]


def _summary(features: LocalFeatures) -> FeatureSummary:
    mean = descriptor_mean(features.descriptors).astype(np.float32)
    return FeatureSummary("", aggregate_local(features.descriptors), mean, 0)


def _no_image(features: LocalFeatures) -> ImageRef:
    row = ManifestRow(features.line, features.id, "", features.landmark_id)
    return ImageRef(row, "", 0, features.width, features.height, "")


def plan_items(element: tuple) -> list[tuple]:
    """A GeneratePairs round plan as the (key, pair) items and `needs` (id, key) of `plan_class`."""
    _, plan = element
    needs = sorted({(image_id, c.block) for c in plan.candidates for image_id in (c.a, c.b)})
    return [("pair", (c.block, (c.a, c.b))) for c in plan.candidates] + [("need", need) for need in needs]
