"""Synthetic, landmark-like image dataset with known truth, for demos and tests.

`generate_demo` writes a small folder that mimics a noisy Google Landmarks
Dataset v2 class set, fully offline and deterministically from a seed:

* ``train.csv`` in GLDv2 format (``id,url,landmark_id``), rows shuffled;
* ``truth.csv`` (``id,landmark_id,role,source``) saying what each row really is;
* ``images/<a>/<b>/<c>/<id>.jpg``, the files that ``url`` points to once
  ``root`` is served over HTTP at ``base_url``.

Each landmark is a planar "facade": a 1024x768 texture dense in distinctive,
well-localised corners and blobs at several scales. A view of it is a random
perspective warp (out-of-plane rotation, in-plane rotation, zoom, partial
crop) composited over a sky-like background, with illumination change, blur,
sensor noise and JPEG compression. Views of one landmark therefore share many
features that a SIFT + RANSAC verifier can match, while different landmarks and
distractor scenes come from independent random streams and do not match.

Roles in ``truth.csv``:

* ``member``: a real view of the landmark it is filed under
  (``source`` = ``landmark:<lid>``); singleton classes are members too;
* ``noise``: filed under a class but showing another landmark of the set
  (``source`` = ``other_landmark:<lid>``) or an unrelated scene
  (``source`` = ``distractor``);
* ``broken``: ``http_404`` (no file), ``truncated`` (a JPEG cut to about half
  its bytes) or ``not_an_image`` (an HTML error page saved as ``.jpg``).

``landmark_id`` in ``truth.csv`` is always the label the row is filed under in
``train.csv``; ``source`` carries what the image actually shows.

Image arrays are ``uint8`` of shape ``(height, width, 3)`` in OpenCV's BGR
channel order; points are ``(x, y)`` pixel coordinates.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass

import cv2
import numpy as np

from schemas.vocabulary import Reason

_FACADE_SIZE = (1024, 768)  # (width, height) of a landmark texture
_DISTRACTOR_SIZE = (960, 720)
_FIRST_LANDMARK_ID = 1000
_ASPECTS = ((4, 3), (3, 4), (16, 9))
_BROKEN_SOURCES = (Reason.HTTP_404.value, Reason.TRUNCATED.value, Reason.NOT_AN_IMAGE.value)
_TEXT_ALPHABET = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"))
_NOT_AN_IMAGE = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested URL was not found on this "
    b"server.</p></body></html>\n"
)
# Stream tags keep the random streams of different purposes independent: a
# facade depends only on (seed, landmark index), a view only on (seed, row
# position), so neither depends on how many draws other parts made.
_STREAM_LAYOUT, _STREAM_LANDMARK, _STREAM_DISTRACTOR, _STREAM_VIEW, _STREAM_EXTRA_VIEW = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class DemoConfig:
    """Shape of the generated dataset.

    Attributes:
        images: total manifest rows, broken rows included (>= 20).
        seed: seed of every random choice (>= 0); same seed + config => same
            bytes.
        landmarks: number of landmark classes; 0 derives it from ``images``
            (about ``images / 12``, at least 4).
        noise_fraction: share of rows that are label noise, in ``[0, 0.5)``.
        broken_rows: rows whose download fails, cycling through 404,
            truncated JPEG and non-image body (>= 0).
        image_size: longest side in pixels of the generated views (>= 64).
    """

    images: int = 240
    seed: int = 0
    landmarks: int = 0
    noise_fraction: float = 0.12
    broken_rows: int = 3
    image_size: int = 640


@dataclass(frozen=True)
class DemoDataset:
    """Where a generated dataset lives.

    Attributes:
        root: folder to serve over HTTP; images are ``root/images/a/b/c/<id>.jpg``.
        train_csv: path of ``train.csv`` (header ``id,url,landmark_id``).
        truth_csv: path of ``truth.csv`` (header ``id,landmark_id,role,source``).
        rows: number of rows in both CSV files.
    """

    root: str
    train_csv: str
    truth_csv: str
    rows: int


@dataclass(frozen=True)
class _Row:
    """One manifest row before ids are assigned.

    ``shows`` is the landmark index the image depicts, or -1 when it shows a
    distractor scene or is broken.
    """

    label: int
    role: str
    source: str
    shows: int


def generate_demo(out_dir: str, base_url: str, config: DemoConfig = DemoConfig()) -> DemoDataset:
    """Write the demo dataset under ``out_dir`` and describe it.

    Existing files of other ids are left alone; the file of an ``http_404``
    row is removed if a previous run left one there.

    Args:
        out_dir: folder to create or reuse; becomes ``DemoDataset.root``.
        base_url: URL at which ``out_dir`` will be served; ``train.csv`` urls
            are ``<base_url>/images/a/b/c/<id>.jpg``.
        config: dataset shape and seed.

    Returns:
        The paths of the root folder and both CSV files, and the row count.

    Raises:
        ValueError: if ``config`` is out of range.
    """
    rows = _plan_rows(config)
    ids = _row_ids(config.seed, len(rows))
    os.makedirs(out_dir, exist_ok=True)
    by_subject: dict[int, list[int]] = {}
    for index, row in enumerate(rows):
        by_subject.setdefault(row.shows, []).append(index)
    # One facade in memory at a time keeps big configs cheap; every view has
    # its own stream, so the rendering order does not affect any bytes.
    for subject in sorted(by_subject):
        facade = _landmark_facade(config.seed, subject) if subject >= 0 else None
        for index in by_subject[subject]:
            path = _image_path(out_dir, ids[index])
            payload = _row_payload(config, index, rows[index], facade)
            if payload is None:
                if os.path.exists(path):
                    os.remove(path)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(payload)
    train_csv = os.path.join(out_dir, "train.csv")
    truth_csv = os.path.join(out_dir, "truth.csv")
    prefix = base_url.rstrip("/")
    _write_csv(
        train_csv,
        ("id", "url", "landmark_id"),
        [
            (i, f"{prefix}/images/{i[0]}/{i[1]}/{i[2]}/{i}.jpg", _lid(row.label))
            for i, row in zip(ids, rows, strict=True)
        ],
    )
    _write_csv(
        truth_csv,
        ("id", "landmark_id", "role", "source"),
        [(i, _lid(row.label), row.role, row.source) for i, row in zip(ids, rows, strict=True)],
    )
    return DemoDataset(out_dir, train_csv, truth_csv, len(rows))


def read_truth(truth_csv: str) -> dict[str, tuple[int, str]]:
    """Map each id of a ``truth.csv`` to ``(landmark_id, role)``."""
    with open(truth_csv, newline="", encoding="utf-8") as handle:
        return {r["id"]: (int(r["landmark_id"]), r["role"]) for r in csv.DictReader(handle)}


def landmark_views(seed: int, landmark: int, count: int, image_size: int = 640, stream: int = 0) -> list[bytes]:
    """``count`` JPEG views of generated landmark ``landmark`` (the facade ``generate_demo``
    draws for landmark index ``landmark`` with this ``seed``), each from its own random stream
    ``(seed, landmark, stream, i)``: extra views of a landmark, e.g. an evaluation set whose
    landmarks are (or are not) among a generated training set's."""
    facade = _landmark_facade(seed, landmark)
    views = []
    for i in range(count):
        rng = np.random.default_rng([seed, _STREAM_EXTRA_VIEW, landmark, stream, i])
        views.append(_encode_jpeg(_render_view(rng, facade, image_size), rng))
    return views


def _validate(config: DemoConfig) -> None:
    if config.seed < 0:
        raise ValueError(f"seed must be >= 0, got {config.seed}")
    if config.images < 20:
        raise ValueError(f"images must be >= 20, got {config.images}")
    if not 0 <= config.noise_fraction < 0.5:
        raise ValueError(f"noise_fraction must be in [0, 0.5), got {config.noise_fraction}")
    if config.broken_rows < 0:
        raise ValueError(f"broken_rows must be >= 0, got {config.broken_rows}")
    if config.landmarks < 0 or config.landmarks == 1:
        raise ValueError(f"landmarks must be 0 or >= 2, got {config.landmarks}")
    if config.image_size < 64:
        raise ValueError(f"image_size must be >= 64, got {config.image_size}")


def _plan_rows(config: DemoConfig) -> list[_Row]:
    """Decide every row's label and content, in final (shuffled) order."""
    _validate(config)
    landmarks = config.landmarks or max(4, round(config.images / 12))
    noise = round(config.noise_fraction * config.images)
    members = config.images - noise - config.broken_rows
    if members < 2 * landmarks:
        raise ValueError(
            f"{config.images} images leave {members} member rows for {landmarks} "
            "landmarks; need at least two per landmark"
        )
    rng = np.random.default_rng([config.seed, _STREAM_LAYOUT])
    # Which landmark gets which class size is random, so ids carry no hint.
    sizes = _class_sizes(members, landmarks)[rng.permutation(landmarks)]
    rows = [_Row(k, "member", f"landmark:{_lid(k)}", k) for k in range(landmarks) for _ in range(sizes[k])]
    # Noise and broken rows go to classes in proportion to their size, never
    # to singletons, which must stay single rows to be unverifiable.
    weights = np.where(sizes > 1, sizes, 0).astype(np.float64)
    weights /= weights.sum()
    for _ in range(noise):
        label = int(rng.choice(landmarks, p=weights))
        if rng.random() < 0.5:
            shown = int(rng.integers(landmarks - 1))
            shown += shown >= label
            rows.append(_Row(label, "noise", f"other_landmark:{_lid(shown)}", shown))
        else:
            rows.append(_Row(label, "noise", "distractor", -1))
    for b in range(config.broken_rows):
        label = int(rng.choice(landmarks, p=weights))
        rows.append(_Row(label, "broken", _BROKEN_SOURCES[b % 3], -1))
    return [rows[i] for i in rng.permutation(len(rows))]


def _class_sizes(members: int, landmarks: int) -> np.ndarray:
    """Split ``members`` rows into a long-tailed list of class sizes.

    About one class in ten is a singleton; the rest get at least 3 (or 2 when
    rows are scarce) plus a Zipf (1/rank) share of what is left, so a few big
    classes hold a large part of the rows, as in GLDv2. Returns int64 of
    shape ``(landmarks,)``, summing to ``members``, singletons last.
    """
    singles = landmarks // 10
    multi = landmarks - singles
    floor = 3 if members - singles >= 3 * multi else 2
    spare = members - singles - floor * multi
    share = spare / np.arange(1, multi + 1) / np.sum(1 / np.arange(1, multi + 1))
    extra = np.floor(share).astype(np.int64)
    # Largest-remainder rounding keeps the total exact.
    extra[np.argsort(extra - share, kind="stable")[: spare - extra.sum()]] += 1
    return np.concatenate([floor + extra, np.ones(singles, dtype=np.int64)])


def _row_ids(seed: int, count: int) -> list[str]:
    """First ``count`` distinct 16-hex ids of the seed's id sequence."""
    ids: list[str] = []
    seen: set[str] = set()
    index = 0
    while len(ids) < count:
        candidate = hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()[:16]
        index += 1
        if candidate not in seen:
            seen.add(candidate)
            ids.append(candidate)
    return ids


def _lid(label: int) -> int:
    return _FIRST_LANDMARK_ID + label


def _image_path(root: str, image_id: str) -> str:
    return os.path.join(root, "images", image_id[0], image_id[1], image_id[2], f"{image_id}.jpg")


def _write_csv(path: str, header: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _row_payload(config: DemoConfig, index: int, row: _Row, facade: np.ndarray | None) -> bytes | None:
    """File bytes for a row, or None when no file must exist (HTTP 404)."""
    if row.source == Reason.HTTP_404.value:
        return None
    if row.source == Reason.NOT_AN_IMAGE.value:
        return _NOT_AN_IMAGE
    rng = np.random.default_rng([config.seed, _STREAM_VIEW, index])
    if facade is None:
        scene_rng = np.random.default_rng([config.seed, _STREAM_DISTRACTOR, index])
        facade = _texture(scene_rng, _DISTRACTOR_SIZE, distractor=True)
    jpeg = _encode_jpeg(_render_view(rng, facade, config.image_size), rng)
    if row.source == Reason.TRUNCATED.value:
        return jpeg[: len(jpeg) // 2]
    return jpeg


def _landmark_facade(seed: int, landmark: int) -> np.ndarray:
    """The landmark's planar texture, shape ``(768, 1024, 3)``."""
    return _texture(
        np.random.default_rng([seed, _STREAM_LANDMARK, landmark]),
        _FACADE_SIZE,
        distractor=False,
    )


def _texture(rng: np.random.Generator, size: tuple[int, int], distractor: bool) -> np.ndarray:
    """Draw a random texture of ``size = (width, height)``, shape ``(h, w, 3)``.

    Layers, back to front: a smooth colour field, large polygons, (landmarks
    only) window grids, ellipses, strokes, small dots, (landmarks only) signs.
    Distractors skip windows and signs and are slightly blurred, so they look
    like unrelated scenes rather than more buildings.
    """
    width, height = size
    image = _smooth_field(rng, width, height, cells=int(rng.integers(3, 7)), contrast=90)
    _polygons(rng, image, count=int(rng.integers(14, 24)), radius=(40, 260))
    if not distractor:
        for _ in range(int(rng.integers(1, 4))):
            _window_block(rng, image)
    _ellipses(rng, image, count=int(rng.integers(50, 90)), axes=(4, 70))
    _strokes(rng, image, count=int(rng.integers(25, 50)))
    _ellipses(rng, image, count=int(rng.integers(150, 260)), axes=(2, 7))
    if distractor:
        image = cv2.GaussianBlur(image, (0, 0), 1.2)
    else:
        _text(rng, image, count=int(rng.integers(2, 5)))
    return image


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    b, g, r = rng.integers(0, 256, size=3)
    return int(b), int(g), int(r)


def _smooth_field(rng: np.random.Generator, width: int, height: int, cells: int, contrast: float) -> np.ndarray:
    """Low-frequency colour field around a random base colour."""
    base = rng.uniform(40, 215, size=3)
    grid = base + rng.uniform(-contrast, contrast, size=(cells, cells, 3))
    grid = np.clip(grid, 0, 255).astype(np.float32)
    return np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def _polygons(rng: np.random.Generator, image: np.ndarray, count: int, radius: tuple[int, int]) -> None:
    height, width = image.shape[:2]
    for _ in range(count):
        centre = rng.uniform((0, 0), (width, height))
        sides = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, sides))
        radii = rng.uniform(*radius, size=1) * rng.uniform(0.5, 1.0, size=sides)
        points = centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
        points = points.astype(np.int32).reshape(-1, 1, 2)
        if rng.random() < 0.7:
            cv2.fillPoly(image, [points], _color(rng), cv2.LINE_AA)
        else:
            cv2.polylines(image, [points], True, _color(rng), int(rng.integers(2, 7)), cv2.LINE_AA)


def _window_block(rng: np.random.Generator, image: np.ndarray) -> None:
    """An irregular grid of framed windows with individually varied colours.

    Jittered positions, sizes and colours keep neighbouring windows from
    having identical descriptors, which Lowe's ratio test would discard.
    """
    height, width = image.shape[:2]
    rows, cols = int(rng.integers(2, 5)), int(rng.integers(3, 7))
    cell_w, cell_h = rng.uniform(30, 70), rng.uniform(35, 90)
    x0 = rng.uniform(0, max(1.0, width - cols * cell_w))
    y0 = rng.uniform(0, max(1.0, height - rows * cell_h))
    for r in range(rows):
        for c in range(cols):
            if rng.random() < 0.15:
                continue
            w = cell_w * rng.uniform(0.45, 0.8)
            h = cell_h * rng.uniform(0.45, 0.8)
            x = x0 + c * cell_w + rng.uniform(-4, 4)
            y = y0 + r * cell_h + rng.uniform(-4, 4)
            top_left, bottom_right = (int(x), int(y)), (int(x + w), int(y + h))
            cv2.rectangle(image, top_left, bottom_right, _color(rng), -1)
            frame = _color(rng)
            cv2.rectangle(image, top_left, bottom_right, frame, int(rng.integers(1, 4)))
            if rng.random() < 0.4:
                mid = int(x + w * rng.uniform(0.3, 0.7))
                cv2.line(image, (mid, int(y)), (mid, int(y + h)), frame, 1)


def _ellipses(rng: np.random.Generator, image: np.ndarray, count: int, axes: tuple[int, int]) -> None:
    height, width = image.shape[:2]
    for _ in range(count):
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        size = (int(rng.integers(*axes)), int(rng.integers(*axes)))
        thickness = -1 if rng.random() < 0.6 else int(rng.integers(1, 4))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(image, centre, size, angle, 0, 360, _color(rng), thickness, cv2.LINE_AA)


def _strokes(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    height, width = image.shape[:2]
    for _ in range(count):
        start = rng.uniform((0, 0), (width, height))
        end = start + rng.uniform(-180, 180, size=2)
        cv2.line(
            image,
            (int(start[0]), int(start[1])),
            (int(end[0]), int(end[1])),
            _color(rng),
            int(rng.integers(1, 6)),
            cv2.LINE_AA,
        )


def _text(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """A few signs of random letters; font, scale and weight vary per sign so
    that glyphs do not become a motif shared by every landmark."""
    height, width = image.shape[:2]
    for _ in range(count):
        label = "".join(rng.choice(_TEXT_ALPHABET, size=int(rng.integers(3, 8))))
        origin = (int(rng.integers(0, width - 150)), int(rng.integers(40, height)))
        font = int(rng.integers(0, 8))
        scale = float(rng.uniform(0.9, 2.6))
        cv2.putText(
            image,
            label,
            origin,
            font,
            scale,
            _color(rng),
            int(rng.integers(1, 5)),
            cv2.LINE_AA,
        )


def _render_view(rng: np.random.Generator, facade: np.ndarray, size: int) -> np.ndarray:
    """Photograph ``facade`` from a random viewpoint; longest side ``size``.

    The visible part is a random crop of 50-100 % of the facade area, zoomed
    by 0.6-1.4 relative to the crop filling the frame's area (so parts may
    fall outside the frame), rotated in-plane up to 25
    degrees and foreshortened as if seen from up to about 25 degrees off-axis.
    """
    aspect = _ASPECTS[int(rng.integers(len(_ASPECTS)))]
    longest = max(aspect)
    width = size * aspect[0] // longest
    height = size * aspect[1] // longest
    src_h, src_w = facade.shape[:2]
    crop_w = int(src_w * rng.uniform(0.7, 1.0))
    crop_h = int(src_h * rng.uniform(0.7, 1.0))
    crop_x = int(rng.integers(0, src_w - crop_w + 1))
    crop_y = int(rng.integers(0, src_h - crop_h + 1))
    source = facade[crop_y : crop_y + crop_h, crop_x : crop_x + crop_w]
    # Zoom is relative to the crop covering the frame's area, so portrait and
    # panoramic frames do not shrink the landmark more than landscape ones.
    fit = np.sqrt(width * height / (crop_w * crop_h))
    scale = fit * np.exp(rng.uniform(np.log(0.6), np.log(1.4)))
    # Shrinking the crop first avoids the aliasing of a strongly minifying
    # warp, which would destroy the fine features views must share.
    prescale = scale * 1.25
    if prescale < 1:
        shrunk = (max(1, round(crop_w * prescale)), max(1, round(crop_h * prescale)))
        source = cv2.resize(source, shrunk, interpolation=cv2.INTER_AREA)
    src_quad = np.float32(
        [
            [0, 0],
            [source.shape[1], 0],
            [source.shape[1], source.shape[0]],
            [0, source.shape[0]],
        ]
    )
    half = np.array([crop_w, crop_h]) * scale / 2
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    # Off-axis viewing: one side of the facade recedes (shorter), the other
    # approaches (taller); tilt does the same vertically.
    yaw, tilt = rng.uniform(-0.22, 0.22), rng.uniform(-0.12, 0.12)
    corners[:, 1] *= 1 + yaw * np.sign(corners[:, 0])
    corners[:, 0] *= 1 + tilt * np.sign(corners[:, 1])
    corners += rng.uniform(-0.03, 0.03, size=(4, 2)) * half * 2
    angle = np.deg2rad(rng.uniform(-25, 25))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([width, height]) / 2 + rng.uniform(-0.12, 0.12, size=2) * (
        width,
        height,
    )
    dst_quad = np.float32(corners @ rotation.T + centre)
    homography = cv2.getPerspectiveTransform(src_quad, dst_quad)
    view = _background(rng, width, height)
    cv2.warpPerspective(
        source,
        homography,
        (width, height),
        dst=view,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    return _photometric(rng, view)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Sky-like vertical gradient with soft clouds; deliberately feature-poor
    so that the detector spends its keypoint budget on the landmark."""
    top = rng.uniform(120, 250, size=3).astype(np.float32)
    bottom = rng.uniform(60, 230, size=3).astype(np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = top * (1 - ramp) + bottom * ramp
    clouds = rng.uniform(-25, 25, size=(4, 6, 1)).astype(np.float32)
    clouds = cv2.resize(clouds, (width, height), interpolation=cv2.INTER_CUBIC)[:, :, None]
    return np.clip(sky + clouds, 0, 255).astype(np.uint8)


def _photometric(rng: np.random.Generator, view: np.ndarray) -> np.ndarray:
    """Exposure (gain, gamma, slight white balance), blur and sensor noise."""
    gamma = rng.uniform(0.75, 1.35)
    gains = rng.uniform(0.75, 1.2) * rng.uniform(0.94, 1.06, size=3)
    levels = (np.arange(256, dtype=np.float64) / 255.0) ** gamma * 255.0
    table = np.clip(levels[:, None] * gains[None, :], 0, 255).astype(np.uint8)
    view = cv2.LUT(view, table.reshape(256, 1, 3))
    if rng.random() < 0.5:
        view = cv2.GaussianBlur(view, (0, 0), rng.uniform(0.3, 1.5))
    if rng.random() < 0.5:
        sigma = rng.uniform(1, 5)
        noise = rng.standard_normal(view.shape, dtype=np.float32) * sigma
        view = np.clip(view + noise, 0, 255).astype(np.uint8)
    return view


def _encode_jpeg(view: np.ndarray, rng: np.random.Generator) -> bytes:
    quality = int(rng.integers(70, 96))
    ok, encoded = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()
