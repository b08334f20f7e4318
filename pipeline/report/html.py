"""The HTML pieces `report.html`'s sections share: tables, the picture folder beside the page, a
verified pair drawn with its inlier matches (used by `page` and by the `gld overlap` section)."""

from __future__ import annotations

from html import escape

from apache_beam.io.filesystems import FileSystems

from pipeline.report.data import ExamplePair
from pipeline.report.images import draw_matches
from transforms.matching.verify import VerifyConfig, inlier_matches

FILES_DIR = "report_files"


def table(headers: list[str], rows: list[list], left: int = 1) -> str:
    """An HTML table; the first `left` columns are left-aligned (labels), the rest numbers."""

    def cell(tag: str, i: int, value: object) -> str:
        return f"<{tag}{' class=l' if i < left else ''}>{escape(str(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if rows else '<p class="note">none</p>'


class Files:
    """Writes the page's pictures under `<output>/report_files/` and returns their relative src."""

    def __init__(self, output: str) -> None:
        self._dir = FileSystems.join(output, FILES_DIR)
        if not FileSystems.exists(self._dir):
            FileSystems.mkdirs(self._dir)

    def write(self, name: str, data: bytes) -> str:
        with FileSystems.create(FileSystems.join(self._dir, name)) as handle:
            handle.write(data)
        return f"{FILES_DIR}/{name}"


def pair_figure(files: Files, pair: ExamplePair, stores: dict, verify: VerifyConfig) -> str:
    jpegs, features = stores["jpegs"], stores["features"]
    if not all(i in jpegs and i in features for i in (pair.id_a, pair.id_b)):
        return ""
    points_a, points_b = inlier_matches(features[pair.id_a], features[pair.id_b], verify)
    src = files.write(
        f"pair-{pair.id_a}-{pair.id_b}.jpg", draw_matches(jpegs[pair.id_a], jpegs[pair.id_b], points_a, points_b)
    )
    side_b = f"class {pair.landmark_b}" if pair.landmark_b >= 0 else "evaluation image"
    caption = f"{pair.caption}: {pair.id_a} (class {pair.landmark_a}) vs {pair.id_b} ({side_b}), {pair.inliers} inliers"
    return (
        f'<figure class="pair"><img src="{escape(src)}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )
