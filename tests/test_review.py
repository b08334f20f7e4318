"""`gld review` on one small finished run: its queues, the Flask app through its test client, the
verdict store, the export, `gld select --reviews` (and `gld curate --reviews`), the report's links,
and the page end to end in headless Chromium driven by keyboard."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.cli.main import main
from pipeline.curation.run_folder import UnfinishedRun, finished_run
from pipeline.demo.data import DemoConfig, generate_demo
from pipeline.review.app import ReviewConfig, create_app, review_from_json
from pipeline.review.queues import load_queues
from pipeline.review.verdicts import VerdictStore
from schemas.gldv2_csv import parse_train_clean
from schemas.reviews import HEADER_LINE, Review
from schemas.vocabulary import Verdict

BEAM = ["--direct_num_workers=2", "--no-progress"]
SELECTION_FILES = ("train_clean.csv", "decisions.parquet", "c2x_rejected.csv", "c2x_scores.parquet", "audit.parquet")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished curation of 120 generated views (320 px: seconds to match), read from disk."""
    root = tmp_path_factory.mktemp("review")
    data = str(root / "data")
    os.makedirs(data)
    dataset = generate_demo(data, "http://127.0.0.1:9", DemoConfig(images=120, seed=5, broken_rows=1, image_size=320))
    out = str(root / "run")
    images = os.path.join(data, "images")
    assert main(["curate", "--train-csv", dataset.train_csv, "--output", out, "--images-dir", images, *BEAM]) == 0
    return out


def _copy(run_folder: str, tmp_path: Path, name: str = "copy") -> str:
    target = str(tmp_path / name)
    shutil.copytree(run_folder, target)
    return target


def _decisions(out: str) -> dict[str, dict]:
    return {row["id"]: row for row in pq.read_table(os.path.join(out, "decisions.parquet")).to_pylist()}


def test_queues_hold_what_their_titles_say(run_folder: str) -> None:
    queues = load_queues(run_folder, finished_run(run_folder, "test"))
    assert list(queues) == ["findings", "removed", "weak", "isolated"]
    decisions = _decisions(run_folder)
    kept_classes = {d["landmark_id"] for d in decisions.values() if d["status"] == "kept"}
    removed = queues["removed"].items
    assert removed and all(decisions[i.id]["status"] == "removed" and i.landmark_id in kept_classes for i in removed)
    assert [i.inliers for i in removed] == sorted((i.inliers for i in removed), reverse=True)
    weak = queues["weak"].items
    assert len(weak) == sum(d["status"] == "kept" for d in decisions.values())
    assert [i.inliers for i in weak] == sorted(i.inliers for i in weak)
    assert all(i.partner and decisions[i.partner]["landmark_id"] == i.landmark_id for i in weak)
    findings = queues["findings"].items
    assert findings and all(
        i.partner_landmark != i.landmark_id and i.partner_landmark in i.suggestions for i in findings
    )
    isolated = queues["isolated"].items
    assert all(decisions[i.id]["component_id"] > 0 for i in isolated)


def test_a_folder_without_a_finished_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnfinishedRun, match="gld review"):
        create_app(ReviewConfig(str(tmp_path)))
    assert main(["review", "--output", str(tmp_path), "--port", "0"]) == 2
    with pytest.raises(ValueError, match="local run folder"):
        ReviewConfig("gs://bucket/run")


def test_the_app_serves_queues_pictures_and_takes_verdicts(run_folder: str, tmp_path: Path) -> None:
    out = _copy(run_folder, tmp_path)
    client = create_app(ReviewConfig(out, port=0)).test_client()
    assert b"review.js" in client.get("/").data
    assert client.get("/static/review.js").status_code == 200
    queues = client.get("/api/queues").get_json()["queues"]
    assert [q["name"] for q in queues] == ["findings", "removed", "weak", "isolated"]
    assert all(q["reviewed"] == 0 for q in queues)
    finding = client.get("/api/queue/findings").get_json()["items"][0]
    removed = client.get("/api/queue/removed").get_json()["items"][0]
    assert finding["verdict"] is None and finding["suggestions"]

    thumb = client.get(f"/thumb/{finding['id']}")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg" and thumb.data[:2] == b"\xff\xd8"
    full = client.get(f"/image/{finding['id']}")
    assert full.status_code == 200 and len(full.data) > len(thumb.data) // 4
    assert client.get(f"/pair/{removed['id']}/{removed['partner']}").data[:2] == b"\xff\xd8"
    assert client.get("/image/0000000000000000").status_code == 404
    assert client.get("/api/queue/nonsense").status_code == 404

    relabel = {"id": finding["id"], "verdict": "relabel", "landmark_id": finding["suggestions"][0], "note": "a\nb"}
    answer = client.post("/api/verdict", json=relabel).get_json()
    assert answer["verdict"] == {**relabel, "note": "a\nb"}
    assert client.post("/api/verdict", json={"id": removed["id"], "verdict": "keep"}).status_code == 200
    assert client.post("/api/verdict", json={"id": removed["id"], "verdict": "maybe"}).status_code == 400
    assert client.post("/api/verdict", json={"id": removed["id"], "verdict": "relabel"}).status_code == 400
    assert client.post("/api/verdict", json={"id": "not-shown", "verdict": "keep"}).status_code == 400
    reviewed = {q["name"]: q["reviewed"] for q in client.get("/api/queues").get_json()["queues"]}
    assert reviewed["findings"] >= 1 and reviewed["removed"] >= 1

    assert client.post("/api/undo", data="x", content_type="text/plain").status_code == 415  # not from a form
    assert client.get("/api/queues", headers={"Host": "evil.example:8765"}).status_code == 403  # DNS rebinding
    undone = client.post("/api/undo", json={}).get_json()
    assert undone["undone"]["id"] == removed["id"] and undone["now"] is None
    lines = Path(out, "reviews.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines == [HEADER_LINE, f"{finding['id']},relabel,{finding['suggestions'][0]},a b\n"]
    # a restart reads the verdicts back
    again = create_app(ReviewConfig(out, port=0)).test_client()
    item = next(i for i in again.get("/api/queue/findings").get_json()["items"] if i["id"] == finding["id"])
    assert item["verdict"]["verdict"] == "relabel"


def test_review_from_json_needs_a_landmark_only_for_a_relabel() -> None:
    assert review_from_json({"id": "a", "verdict": "keep", "landmark_id": 4}) == Review("a", Verdict.KEEP)
    assert review_from_json({"id": "a", "verdict": "relabel", "landmark_id": "12"}).landmark_id == 12
    for body in (None, [], {"id": "a", "verdict": "relabel", "landmark_id": "-1"}, {"id": "", "verdict": "keep"}):
        with pytest.raises(ValueError):
            review_from_json(body)


def test_the_verdict_store_appends_undoes_and_keeps_hand_edits(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(HEADER_LINE + "x1,keep,,by hand\nnot a verdict")  # a hand edit, no final newline
    store = VerdictStore(str(path))
    store.add(Review("x2", Verdict.REMOVE))
    store.add(Review("x1", Verdict.RELABEL, 3))
    assert store.latest() == {"x2": Review("x2", Verdict.REMOVE), "x1": Review("x1", Verdict.RELABEL, 3)}
    assert store.undo() == Review("x1", Verdict.RELABEL, 3)
    assert store.latest()["x1"] == Review("x1", Verdict.KEEP, note="by hand")
    assert path.read_text() == HEADER_LINE + "x1,keep,,by hand\nnot a verdict\nx2,remove,,\n"
    assert store.undo() == Review("x2", Verdict.REMOVE)
    assert store.undo() == Review("x1", Verdict.KEEP, note="by hand")
    assert store.undo() is None
    assert path.read_text() == HEADER_LINE + "not a verdict\n"
    assert [p.name for p in tmp_path.iterdir()] == ["reviews.csv"]  # no temporary file left behind


def _write_reviews(out: str, lines: list[str]) -> str:
    path = os.path.join(out, "reviews.csv")
    Path(path).write_text(HEADER_LINE + "".join(lines), encoding="utf-8")
    return path


def test_select_applies_reviews_after_the_rules_byte_identically(run_folder: str, tmp_path: Path) -> None:
    before = _decisions(run_folder)
    kept = sorted(i for i, d in before.items() if d["status"] == "kept")
    removed = sorted(i for i, d in before.items() if d["status"] == "removed")
    failed = sorted(i for i, d in before.items() if d["status"] == "failed")
    lines = [
        f"{kept[0]},remove,,looks like a car park\n",
        f"{removed[0]},keep,,\n",
        f"{kept[1]},relabel,424242,\n",
        "0123456789abcdef,remove,,\n",  # no such image
        f"{failed[0]},keep,,\n",  # failed: nothing to keep
        "half a line\n",
    ]
    outs = []
    for name in ("a", "b"):
        out = _copy(run_folder, tmp_path, name)
        reviews = _write_reviews(out, lines)
        assert main(["select", "--output", out, "--reviews", reviews, "--no-progress"]) == 0
        outs.append(out)
    for name in SELECTION_FILES:
        assert Path(outs[0], name).read_bytes() == Path(outs[1], name).read_bytes(), name
    after = _decisions(outs[0])
    assert len(after) == len(before)
    assert (after[kept[0]]["status"], after[kept[0]]["reason"]) == ("removed", "reviewed_remove")
    assert "note: looks like a car park" in after[kept[0]]["detail"]
    assert (after[removed[0]]["status"], after[removed[0]]["reason"]) == ("kept", "reviewed_keep")
    assert (after[kept[1]]["landmark_id"], after[kept[1]]["reason"]) == (424242, "reviewed_relabel")
    assert after[failed[0]] == before[failed[0]]
    with open(os.path.join(outs[0], "train_clean.csv"), encoding="utf-8") as handle:
        split = parse_train_clean(handle.read())
    assert split[424242] == [kept[1]] and removed[0] in split[before[removed[0]]["landmark_id"]]
    assert kept[0] not in split.get(before[kept[0]]["landmark_id"], [])
    run = json.loads(Path(outs[0], "run.json").read_text())
    assert run["counts"]["accounting_ok"] and run["config"]["select"]["reviews"].endswith("reviews.csv")
    review = run["counters"]["review"]
    assert review == {
        "keep": 1,
        "remove": 1,
        "relabel": 1,
        "changed": 3,
        "unknown_id": 1,
        "not_reviewable": 1,
        "malformed_line": 1,
    }
    assert run["counts"]["by_reason"]["kept/reviewed_keep"] == 1
    # the report counts the reviewed items and links to them
    report = Path(outs[0], "report.html").read_text(encoding="utf-8")
    assert "Review by eye" in report and "http://127.0.0.1:8765/#queue=weak&amp;id=" in report


def test_a_missing_reviews_file_stops_select_and_curate(run_folder: str, tmp_path: Path) -> None:
    out = _copy(run_folder, tmp_path)
    missing = str(tmp_path / "nowhere.csv")
    assert main(["select", "--output", out, "--reviews", missing, "--no-progress"]) == 2
    train_csv = str(tmp_path / "train.csv")
    Path(train_csv).write_text("id,url,landmark_id\n")
    assert main(["curate", "--train-csv", train_csv, "--output", str(tmp_path / "c"), "--reviews", missing]) == 2


def test_export_writes_the_verdicts_with_their_images(run_folder: str, tmp_path: Path, capsys) -> None:
    out = _copy(run_folder, tmp_path)
    some = sorted(_decisions(out))[:2]
    _write_reviews(out, [f"{some[0]},remove,,blurred\n", f"{some[1]},relabel,7,\n", "ffffffffffffffff,keep,,\n"])
    dest = tmp_path / "export"
    assert main(["review", "--output", out, "--export", str(dest)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"export": str(dest), "verdicts": 3, "images": 2, "unknown_ids": 1, "unreadable_lines": 0}
    assert sorted(p.name for p in (dest / "images").iterdir()) == sorted(f"{i}.jpg" for i in some)
    verdicts = (dest / "verdicts.csv").read_text().splitlines()
    assert verdicts[0] == "id,verdict,landmark_id,note,rule_landmark_id,rule_status,rule_reason,image"
    assert verdicts[1].startswith(f"{some[0]},remove,,blurred,")
    assert f'src="images/{some[0]}.jpg"' in (dest / "index.html").read_text()


def _browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


REVIEWED_BY_KEYBOARD = 100


def test_the_page_in_chromium_reviews_by_keyboard_and_keeps_verdicts(run_folder: str, tmp_path: Path) -> None:
    """Open the page, judge 100 items with the keyboard, undo one, reload and see the verdicts,
    then apply them with `gld select --reviews`."""
    found = _browser()
    if found is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    out = _copy(run_folder, tmp_path)
    server = make_server("127.0.0.1", 0, create_app(ReviewConfig(out, port=0)), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    wait = WebDriverWait(driver, 60, poll_frequency=0.05)

    def reviewed(queue: str) -> int:
        """The count the queue's tab shows ("Weakest kept edges: 12/104 reviewed"), read in one
        script call: the tabs are redrawn after every verdict."""
        tab = driver.execute_script(f"return document.querySelector('nav button[data-queue=\"{queue}\"]').textContent")
        return int(tab.split(": ")[1].split("/")[0])

    def open_page(hash_part: str) -> None:
        driver.get("about:blank")  # a change of the hash alone would not load the page again
        driver.get(base + hash_part)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")

    try:
        open_page("#queue=weak")
        weak_ids = [i.id for i in load_queues(out, finished_run(out, "test"))["weak"].items]
        count = min(REVIEWED_BY_KEYBOARD, len(weak_ids))
        assert driver.find_element(By.ID, "item").get_attribute("data-id") == weak_ids[0]
        body = driver.find_element(By.TAG_NAME, "body")
        keys = "".join("x" if n % 10 == 9 else "k" for n in range(count))
        started = time.perf_counter()
        body.send_keys(keys)
        wait.until(lambda d: reviewed("weak") == count)
        seconds = time.perf_counter() - started
        print(f"reviewed {count} items by keyboard in {seconds:.2f} s")
        body.send_keys("u")  # take back the last verdict: the page goes back to that item
        wait.until(lambda d: reviewed("weak") == count - 1)
        assert driver.find_element(By.ID, "item").get_attribute("data-id") == weak_ids[count - 1]
        body.send_keys(keys[-1])  # and give it again
        wait.until(lambda d: reviewed("weak") == count)

        open_page("#queue=findings")
        finding = driver.find_element(By.ID, "item").get_attribute("data-id")
        suggestion = driver.find_element(By.ID, "landmark").get_attribute("value")
        assert suggestion.isdigit()
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("1r")  # pick the first suggestion, relabel
        wait.until(lambda d: reviewed("findings") >= 1)

        open_page(f"#queue=weak&id={weak_ids[9]}")  # reload: the verdicts are still there
        assert reviewed("weak") == count
        assert driver.find_element(By.ID, "item").get_attribute("data-id") == weak_ids[9]
        assert driver.find_element(By.ID, "verdict").text == "remove"
        shown = "return [...document.querySelectorAll('#item img')].filter(i => i.offsetParent)"
        wait.until(lambda d: all(d.execute_script(shown + ".map(i => i.complete)")))  # the pair is drawn on request
        widths = driver.execute_script(shown + ".map(i => i.naturalWidth)")
        assert len(widths) == 3 and all(widths)  # this image, its partner, the drawn pair
        driver.save_screenshot(str(tmp_path / "review.png"))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors
    finally:
        driver.quit()
        server.shutdown()

    reviews = os.path.join(out, "reviews.csv")
    assert main(["select", "--output", out, "--reviews", reviews, "--no-progress"]) == 0
    after = _decisions(out)
    assert sum(after[i]["reason"] == "reviewed_remove" for i in weak_ids[:count]) == count // 10
    assert sum(after[i]["reason"] == "reviewed_keep" for i in weak_ids[:count]) == count - count // 10
    assert (after[finding]["landmark_id"], after[finding]["reason"]) == (int(suggestion), "reviewed_relabel")
