"""The prompt page (``dsmoe app``): its JSON API against ``model.predict``, bad input, and the page in a real browser.

The checkpoints are saved untrained (no training in these tests): their boxes have near-zero confidence, so detection
runs at conf=0 and every check compares the page's answer with ``model.predict`` on the same image and arguments.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import threading
import urllib.error
import urllib.request
import zipfile
from collections import Counter

import cv2
import numpy as np
import pytest

from dsmoe_yolo.app.server import CLOSED_SET, MAX_PIXELS, App, make_server, parse_prompts
from dsmoe_yolo.cli import main
from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.text.embed import template_prompts

PROMPTS = "crack: a thin dark line across the board\nhole"
DESCRIBED = {"crack": ["a thin dark line across the board"], "hole": template_prompts(["hole"])["hole"]}
BOX = [8.0, 10.0, 72.0, 60.0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Untrained checkpoints: open-vocabulary (classes open, short), closed-set DS-MoE, and a classifier."""
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("app-models")
    ov = YOLO("dsmoe-ov-lite-yolov8n.yaml")
    ov.set_classes(["open", "short"])
    ov.save(root / "ov.pt")
    YOLO("dsmoe-lite-yolov8n.yaml").save(root / "closed.pt")
    YOLO("yolov8n-cls.yaml").save(root / "cls.pt")
    return {name: str(root / f"{name}.pt") for name in ("ov", "closed", "cls")}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 128x96 test board: noise with two dark strokes and a round hole."""
    im = (np.random.default_rng(0).random((96, 128, 3)) * 80 + 120).astype(np.uint8)
    cv2.line(im, (10, 20), (110, 30), (20, 20, 20), 2)
    cv2.circle(im, (40, 70), 8, (10, 10, 10), -1)
    path = tmp_path_factory.mktemp("app-images") / "board.png"
    cv2.imwrite(str(path), im)
    return path


def _start(app: App):
    server = make_server(port=0, app=app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def server():
    srv, url = _start(App())
    yield url
    srv.shutdown()
    srv.server_close()


def call(url: str, path: str, body=None, content_type: str = "application/json"):
    """(status, answer) of one request; JSON answers decoded, files as bytes."""
    data = json.dumps(body).encode() if content_type == "application/json" and body is not None else body
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": content_type} if data is not None else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, raw, kind = e.code, e.read(), e.headers.get("Content-Type", "")
    return status, json.loads(raw) if kind.startswith("application/json") else raw


def upload(url: str, path, name: str | None = None):
    return call(url, f"/api/image?name={name or path.name}", path.read_bytes(), "application/octet-stream")


def reference(checkpoint: str, image_path, spec=None, visual=None, conf: float = 0.0, iou: float = 0.7):
    """What a Python user gets: YOLO(path), set_classes, predict; (names, per-class counts, boxes)."""
    from ultralytics import YOLO

    model = YOLO(checkpoint)
    if spec is not None or visual:
        model.set_classes(spec if spec is not None else [], **({"visual": visual} if visual else {}))
    boxes = model.predict(cv2.imread(str(image_path)), conf=conf, iou=iou, verbose=False)[0].boxes
    names = [model.names[i] for i in range(len(model.names))]
    counts = Counter(names[int(c)] for c in boxes.cls.tolist())
    return names, {n: counts.get(n, 0) for n in names}, boxes.xyxy.numpy()


def page_counts(answer: dict) -> dict:
    return {c["name"]: c["count"] for c in answer["counts"]}


def test_parse_prompts():
    assert parse_prompts("") is None and parse_prompts(" \n\n") is None
    assert parse_prompts("crack\n hole \n") == ["crack", "hole"]
    assert parse_prompts(PROMPTS) == DESCRIBED
    assert parse_prompts("crack: dark line\ncrack: thin seam") == {"crack": ["dark line", "thin seam"]}


def test_page_and_state(server):
    status, html = call(server, "/")
    assert status == 200 and b"<canvas" in html and b'id="detect"' in html and b"http" not in html.split(b"<script>")[1]
    status, state = call(server, "/api/state")
    assert status == 200 and state["max_megapixels"] == MAX_PIXELS / 1e6


def test_load_prompt_detect_matches_predict(server, checkpoints, image):
    status, info = call(server, "/api/load", {"model": checkpoints["ov"]})
    assert status == 200 and info["names"] == ["open", "short"] and info["open_vocabulary"] and not info["prompt_note"]
    status, up = upload(server, image)
    assert status == 200 and (up["width"], up["height"]) == (128, 96)
    status, first = call(server, "/api/detect", {"images": [up["id"]], "prompts": "", "conf": 0.0, "iou": 0.7})
    assert status == 200 and page_counts(first) == reference(checkpoints["ov"], image)[1]
    status, answer = call(server, "/api/detect", {"images": [up["id"]], "prompts": PROMPTS, "conf": 0.0, "iou": 0.7})
    assert status == 200, answer  # new prompts after a first predict: the new classes, not the predictor's old ones
    names, counts, xyxy = reference(
        checkpoints["ov"], image, {"crack": "a thin dark line across the board", "hole": DESCRIBED["hole"]}
    )
    assert answer["names"] == names == ["crack", "hole"]
    assert page_counts(answer) == counts and sum(counts.values()) > 0
    np.testing.assert_allclose([d["box"] for d in answer["images"][0]["detections"]], xyxy, atol=1e-3)
    (layer,) = answer["routing"]  # the lite model has one SparseMoE layer
    assert (
        len(layer["counts"]) == 1 and sum(layer["counts"][0]) == layer["top_k"] and layer["total"] == layer["counts"][0]
    )
    assert layer["summary"].startswith(f"DS-MoE routing, layer {layer['layer']}")

    status, empty = call(server, "/api/detect", {"images": [up["id"]], "prompts": "  \n", "conf": 0.0})
    assert status == 200 and empty["names"] == ["crack", "hole"]  # empty prompt box: the classes stay

    status, table = call(server, "/api/export?format=csv")
    rows = list(csv.reader(io.StringIO(table.decode())))
    assert status == 200 and rows[0] == ["image", "class", "conf", "x1", "y1", "x2", "y2"]
    assert len(rows) - 1 == sum(counts.values()) and rows[1][0] == "board.png"
    status, archive = call(server, "/api/export?format=yolo")
    labels = zipfile.ZipFile(io.BytesIO(archive))
    assert labels.namelist() == ["board.txt"]
    values = np.loadtxt(io.StringIO(labels.read("board.txt").decode()), ndmin=2)
    assert values.shape == (sum(counts.values()), 5) and ((values[:, 1:] >= 0) & (values[:, 1:] <= 1)).all()


def test_visual_prompt_matches_set_classes(server, checkpoints, image):
    call(server, "/api/load", {"model": checkpoints["ov"]})
    _, up = upload(server, image)
    body = {"images": [up["id"]], "prompts": "crack", "visual": [{"image": up["id"], "name": "spur", "box": BOX}]}
    status, answer = call(server, "/api/detect", {**body, "conf": 0.0})
    assert status == 200, answer
    visual = {"spur": {"image": cv2.imread(str(image)), "boxes": [BOX]}}
    names, counts, _ = reference(checkpoints["ov"], image, ["crack"], visual)
    assert answer["names"] == names == ["crack", "spur"] and page_counts(answer) == counts


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"prompts": ": no name"}, 400, "empty or whitespace-only names"),
        ({"prompts": "crack", "visual": [{"image": "?", "name": "spur", "box": BOX}]}, 410, "is gone"),
        ({"prompts": "", "visual": [{"name": "", "box": BOX}]}, 400, "needs a class name"),
        ({"prompts": "crack", "visual": [{"name": "spur", "box": [1, 2]}]}, 400, "is not [x1, y1, x2, y2]"),
        ({"conf": 2}, 400, "conf must be a number from 0 to 1"),
        ({"iou": "x"}, 400, "iou must be a number from 0 to 1"),
        ({"images": []}, 400, "upload at least one image"),
        ({"images": ["?"]}, 410, "upload the images again"),
    ],
)
def test_bad_detect_requests_answer_one_line(server, checkpoints, image, body, status, fragment):
    call(server, "/api/load", {"model": checkpoints["ov"]})
    _, up = upload(server, image)
    visual = [{"image": up["id"], **item} for item in body.get("visual", [])]
    got, answer = call(server, "/api/detect", {"images": [up["id"]], "conf": 0.0, **body, "visual": visual})
    assert got == status and fragment in answer["error"] and "\n" not in answer["error"]


def test_bad_uploads_and_checkpoints(server, checkpoints, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    status, answer = upload(server, text)
    assert status == 415 and "'notes.txt' is not an image" in answer["error"]
    huge = tmp_path / "huge.png"
    cv2.imwrite(str(huge), np.zeros((5000, 8001), np.uint8))  # 40.005 megapixels
    status, answer = upload(server, huge)
    assert status == 413 and "at most 40" in answer["error"] and "resize it first" in answer["error"]
    status, answer = call(server, "/api/image?name=x.png", b"", "application/octet-stream")
    assert status == 400 and "empty" in answer["error"]
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    for path, code, fragment in [
        (str(tmp_path / "missing.pt"), 404, "not found"),
        (checkpoints["cls"], 400, "is a classify model, not a detector"),
        (str(garbage), 400, "cannot be loaded as a checkpoint"),
        (str(text), 400, "is not a PyTorch checkpoint"),
        ("", 400, "type the path"),
    ]:
        status, answer = call(server, "/api/load", {"model": path})
        assert (status, fragment in answer["error"]) == (code, True), answer
    assert call(server, "/api/load", b"{}", "text/plain")[0] == 415  # no cross-site form post
    assert call(server, "/api/nothing", {})[0] == 404
    assert call(server, "/api/export?format=pdf")[0] == 400


def test_closed_set_model_disables_prompts(server, checkpoints, image):
    status, info = call(server, "/api/load", {"model": checkpoints["closed"]})
    assert status == 200 and not info["open_vocabulary"] and info["prompt_note"] == CLOSED_SET
    _, up = upload(server, image)
    status, answer = call(server, "/api/detect", {"images": [up["id"]], "prompts": "crack", "conf": 0.0})
    assert status == 400 and answer["error"] == CLOSED_SET
    status, answer = call(server, "/api/detect", {"images": [up["id"]], "prompts": "", "conf": 0.0})
    names, counts, _ = reference(checkpoints["closed"], image)
    assert status == 200 and answer["names"] == names and page_counts(answer) == counts


def test_cli(capsys):
    assert main(["app", "--help"]) == 0 and capsys.readouterr().out.startswith("usage: dsmoe app model=")
    assert main(["app", "port=http"]) == 2 and "port must be a number" in capsys.readouterr().err
    taken = make_server(port=0)
    try:
        with pytest.raises(ConfigError, match="pick another port"):
            make_server(port=taken.server_address[1])
    finally:
        taken.server_close()


def _browser_or_skip(tmp_path):
    """A headless Chromium driven by Debian's chromedriver, never downloading a driver; skip without them."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
    from selenium.webdriver.chrome.service import Service

    chromium = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if os.path.isfile(p)), None)
    if chromium is None or not os.path.isfile("/usr/bin/chromedriver"):
        pytest.skip(
            "headless Chromium needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1360,1900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


@pytest.mark.slow
def test_page_in_a_browser(checkpoints, image, tmp_path, monkeypatch):
    """Load, type two prompts, draw a box, upload, Detect: boxes drawn, counts as model.predict, a screenshot."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never fetch drivers or browsers
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser_or_skip(tmp_path)
    srv, url = _start(App(checkpoints["ov"]))
    try:
        wait = WebDriverWait(driver, 180)
        find = driver.find_element
        driver.get(url)
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        assert find(By.ID, "model-path").get_attribute("value") == checkpoints["ov"]  # prefilled from model=
        find(By.ID, "load").click()
        wait.until(lambda d: "open-vocabulary" in find(By.ID, "model-info").text and not find(By.ID, "busy").text)
        assert "open, short" in find(By.ID, "model-info").text and find(By.ID, "prompts").is_enabled()
        find(By.ID, "prompts").send_keys(PROMPTS)
        find(By.ID, "images").send_keys(str(image))
        wait.until(lambda d: "board.png (128x96)" in find(By.ID, "image-status").text)
        find(By.ID, "box-class").send_keys("spur")
        editor = find(By.ID, "editor")
        scale = editor.size["width"] / 128  # the canvas is shown at its own size or narrower
        ActionChains(driver).move_to_element_with_offset(
            editor, int(-30 * scale), int(-20 * scale)
        ).click_and_hold().move_by_offset(int(40 * scale), int(30 * scale)).release().perform()
        boxes = driver.execute_script("return state.boxes")
        assert len(boxes) == 1 and boxes[0]["name"] == "spur" and "spur on board.png" in find(By.ID, "box-list").text
        conf = find(By.ID, "conf")
        conf.clear()
        conf.send_keys("0")
        find(By.ID, "detect").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#counts tbody tr") or find(By.ID, "error").text)
        assert not find(By.ID, "error").text
        shown = {
            row.find_element(By.CSS_SELECTOR, ".name").text: int(row.find_element(By.CSS_SELECTOR, ".count").text)
            for row in driver.find_elements(By.CSS_SELECTOR, "#counts tbody tr")
        }
        canvas = find(By.CSS_SELECTOR, "canvas.result")
        visual = {"spur": {"image": cv2.imread(str(image)), "boxes": [boxes[0]["box"]]}}
        names, counts, xyxy = reference(checkpoints["ov"], image, DESCRIBED, visual)
        assert names == ["crack", "hole", "spur"] and shown == counts
        assert int(canvas.get_attribute("data-boxes")) == len(xyxy) > 0
        assert find(By.CSS_SELECTOR, "#routing table.heat") and find(By.ID, "download-csv").is_displayed()
        shot = tmp_path / "app.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("DSMOE_ARTIFACTS"):
            os.makedirs(os.environ["DSMOE_ARTIFACTS"], exist_ok=True)
            shutil.copy(shot, os.path.join(os.environ["DSMOE_ARTIFACTS"], "app.png"))
    finally:
        driver.quit()
        srv.shutdown()
        srv.server_close()
