"""`gld review`: a Flask app on loopback to judge a finished run's decisions by eye.

The page (`static/index.html` + `review.js`, no build step) asks this JSON API:

- `GET /api/queues` — the run, each queue's title, description, size and progress;
- `GET /api/queue/<name>` — its items, each with its current verdict (or null);
- `POST /api/verdict` — `{id, verdict, landmark_id?, note?}`: appended to `reviews.csv`;
- `POST /api/undo` — takes back the last verdict;
- `GET /image/<id>`, `/thumb/<id>`, `/pair/<id_a>/<id_b>` — JPEGs from the run's stores.

Verdicts are accepted for the images the queues show only: a typo cannot write a verdict for an
image the run does not have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, request, send_from_directory
from werkzeug.serving import make_server

from pipeline.curation.run_folder import finished_run
from pipeline.review.pictures import Pictures
from pipeline.review.queues import DEFAULT_PORT, LOOPBACK, QUEUE_LIMIT, Queue, load_queues
from pipeline.review.verdicts import VerdictStore
from schemas.reviews import REVIEWS_NAME, Review
from schemas.vocabulary import Verdict
from transforms.matching.verify import VerifyConfig

STATIC = Path(__file__).with_name("static")


@dataclass(frozen=True)
class ReviewConfig:
    """`output`: a finished run folder (local); `port`: loopback port (0: a free one);
    `limit`: items per queue at most."""

    output: str
    port: int = DEFAULT_PORT
    limit: int = QUEUE_LIMIT

    def __post_init__(self) -> None:
        if "://" in self.output:
            raise ValueError("gld review needs a local run folder: copy it here first (e.g. gsutil -m cp -r)")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0-65535")
        if self.limit < 1:
            raise ValueError("limit must be >= 1")


def review_from_json(body: Any) -> Review:
    """The verdict a POST carries; ValueError with a message the page shows when it is not one."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    try:
        verdict = Verdict(str(body.get("verdict", "")))
    except ValueError:
        raise ValueError(f"verdict must be one of {[v.value for v in Verdict]}") from None
    landmark = body.get("landmark_id")
    if verdict == Verdict.RELABEL:
        text = str(landmark if landmark is not None else "").strip()
        if not text.isdigit():
            raise ValueError("a relabel needs a landmark_id (an integer >= 0)")
        landmark = int(text)
    else:
        landmark = None
    return Review(str(body.get("id", "")), verdict, landmark, str(body.get("note", "") or ""))


def _progress(queues: dict[str, Queue], latest: dict[str, Review]) -> list[dict[str, Any]]:
    return [
        {
            "name": q.name,
            "title": q.title,
            "description": q.description,
            "total": q.total,
            "shown": len(q.items),
            "reviewed": sum(1 for i in q.ids if i in latest),
        }
        for q in queues.values()
    ]


def _jpeg(data: bytes | None) -> Response:
    if data is None:
        abort(404)
    return Response(data, mimetype="image/jpeg", headers={"Cache-Control": "max-age=3600"})


def create_app(config: ReviewConfig) -> Flask:
    """The app for the run folder `config.output`; raises `UnfinishedRun` for a folder without a
    finished run."""
    run = finished_run(config.output, "gld review")
    queues = load_queues(config.output, run, config.limit)
    items = {item.id: item for queue in queues.values() for item in queue.items}
    shown = set(items) | {item.partner for item in items.values() if item.partner}
    outputs = run["outputs"]
    pictures = Pictures(outputs["images"], outputs["features"], shown, VerifyConfig(**run["config"]["verify"]))
    store = VerdictStore(str(Path(config.output) / REVIEWS_NAME))
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")

    @app.before_request
    def local_only() -> tuple[Response, int] | None:
        """Loopback binding keeps other machines out; this keeps other web pages out: a Host
        that is not loopback (DNS rebinding) is refused, and a write must be JSON, which a page
        of another origin cannot send here without a CORS preflight this app never answers."""
        if request.host.rsplit(":", 1)[0] not in (LOOPBACK, "localhost"):
            return jsonify({"error": "gld review answers on 127.0.0.1 only"}), 403
        if request.method == "POST" and not request.is_json:
            return jsonify({"error": "expected a JSON body"}), 415
        return None

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC, "index.html")

    @app.get("/api/queues")
    def queue_list() -> Response:
        return jsonify(
            {
                "output": config.output,
                "reviews": store.path,
                "preset": run["config"].get("preset", ""),
                "min_inliers": run["config"]["select"]["min_inliers"],
                "queues": _progress(queues, store.latest()),
            }
        )

    @app.get("/api/queue/<name>")
    def queue_items(name: str) -> Response:
        if name not in queues:
            abort(404)
        latest = store.latest()
        return jsonify(
            {
                "name": name,
                "items": [
                    {**item.to_json(), "verdict": _verdict_json(latest.get(item.id))} for item in queues[name].items
                ],
            }
        )

    @app.post("/api/verdict")
    def verdict() -> Response | tuple[Response, int]:
        try:
            review = review_from_json(request.get_json(silent=True))
        except ValueError as exc:
            return jsonify({"error": str(exc)}), 400
        if review.id not in items:
            return jsonify({"error": f"{review.id} is in no queue of this run"}), 400
        store.add(review)
        return jsonify({"verdict": _verdict_json(review), "queues": _progress(queues, store.latest())})

    @app.post("/api/undo")
    def undo() -> Response:
        undone = store.undo()
        latest = store.latest()
        return jsonify(
            {
                "undone": _verdict_json(undone),
                "now": _verdict_json(latest.get(undone.id)) if undone else None,
                "queues": _progress(queues, latest),
            }
        )

    @app.get("/image/<image_id>")
    def image(image_id: str) -> Response:
        return _jpeg(pictures.image(image_id))

    @app.get("/thumb/<image_id>")
    def thumb(image_id: str) -> Response:
        return _jpeg(pictures.thumb(image_id))

    @app.get("/pair/<id_a>/<id_b>")
    def pair(id_a: str, id_b: str) -> Response:
        return _jpeg(pictures.pair(id_a, id_b))

    return app


def _verdict_json(review: Review | None) -> dict[str, Any] | None:
    if review is None:
        return None
    return {"id": review.id, "verdict": review.verdict.value, "landmark_id": review.landmark_id, "note": review.note}


def serve(config: ReviewConfig, ready=None) -> None:
    """Serve the app on 127.0.0.1 until interrupted (loopback only: the page writes to the run
    folder, and nothing else should reach it). `ready(url)` is called once it listens."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per picture served
    server = make_server(LOOPBACK, config.port, create_app(config), threaded=True)
    url = f"http://{LOOPBACK}:{server.server_port}/"
    if ready is not None:
        ready(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
