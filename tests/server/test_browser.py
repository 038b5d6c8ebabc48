"""The try-it page in a real browser: headless Chromium (the system's, driven by playwright) against the tiny model.

It uploads an image, runs <OD>, a region task whose region is dragged on the image, a text task and
<OCR_WITH_REGION>, and checks that the JSON the page shows equals the API's answer to the same request
(and ``Florence2.run``) and that the shapes were drawn; then drops a file on the drop zone. Skipped, saying why, only where no Chromium binary or no playwright is installed
(``scripts/setup.sh`` installs both where it can). ``FLORENCE2_UI_SCREENSHOT=path.png`` saves a
screenshot of the page after the <OD> run (how ``docs/ui.png`` is made).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

httpx = pytest.importorskip("httpx", reason="the server tests need httpx (pip install 'florence2-onnx[dev]')")
pytest.importorskip(
    "fastapi", reason="the server needs the 'serve' extra (pip install 'florence2-onnx[serve]')"
)

from florence2_runtime.server import ServerLimits
from florence2_runtime.tasks.batch import task_decoding_options
from tests.helpers.images import encode

pytestmark = pytest.mark.browser

KEY = "browser-key"
LIMITS = ServerLimits(
    api_key=KEY, max_batch_size=1
)  # the module's server (server_url: tests/server/conftest.py)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_binary() -> str | None:
    """The system's Chromium: $FLORENCE2_CHROMIUM, else chromium / chromium-browser / google-chrome on PATH."""
    explicit = os.environ.get("FLORENCE2_CHROMIUM")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def scene(seed: int, size=(320, 240)) -> Image.Image:
    """A little picture (sky, ground, sun, boxes) with a seeded layout and some noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.new("RGB", size, (120, 170, 230))
    d = ImageDraw.Draw(im)
    d.rectangle([0, int(h * 0.62), w, h], fill=(70, 140, 60))
    r = int(rng.integers(14, 26))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h // 3))
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(250, 210, 60))
    for _ in range(3):
        x, y = int(rng.integers(10, w - 90)), int(rng.integers(h // 3, h - 70))
        colour = tuple(int(c) for c in rng.integers(40, 230, 3))
        d.rectangle([x, y, x + int(rng.integers(40, 90)), y + int(rng.integers(30, 70))], fill=colour)
    pixels = np.asarray(im, np.int16) + rng.integers(-12, 13, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def browser():
    binary = chromium_binary()
    if binary is None:
        pytest.skip(
            "no Chromium binary found (apt-get install chromium, or set FLORENCE2_CHROMIUM); "
            "the page is not tested in a browser here"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def od_image(tiny_model, tmp_path_factory):
    """A picture on which the tiny random model finds a box of some size with the page's default settings,
    which are run()'s (searched: random weights mostly give no box, or boxes with x2 < x1)."""
    for seed in range(100):
        data = encode(scene(seed))
        boxes = tiny_model.run(data, "<OD>")["<OD>"]["bboxes"]
        if any(x2 - x1 >= 4 and y2 - y1 >= 4 for x1, y1, x2, y2 in boxes):
            path = tmp_path_factory.mktemp("page") / "scene.png"
            path.write_bytes(data)
            return path
    pytest.fail("no scene gives <OD> boxes with the tiny model")


def run_on_page(page) -> dict:
    """Click Run, wait for the answer; returns the /v1/infer request body the page sent."""
    with page.expect_request("**/v1/infer") as request:
        page.click("#run")
    page.wait_for_function(
        "document.getElementById('status').textContent.includes('done')"
        " || document.getElementById('status').classList.contains('error')",
        timeout=60_000,
    )
    assert "error" not in (page.get_attribute("#status", "class") or ""), page.text_content("#status")
    return request.value.post_data_json


def api_answer(server_url: str, body: dict) -> dict:
    r = httpx.post(
        server_url + "/v1/infer", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    )
    assert r.status_code == 200, r.text
    return r.json()["result"]


def shown_json(page) -> dict:
    return json.loads(page.text_content("#json"))


@pytest.mark.slow
def test_page_runs_od_and_a_dragged_region(browser, server_url, tiny_model, od_image):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    outside = []
    page.on(
        "request", lambda r: outside.append(r.url) if not r.url.startswith((server_url, "data:")) else None
    )
    page.goto(server_url + "/")
    page.wait_for_function("document.getElementById('task').options.length === 15")
    page.fill("#api-key", KEY)
    page.set_input_files("#file", str(od_image))
    page.wait_for_selector("#stage:not([hidden])")
    assert page.is_enabled("#run")

    # <OD>
    page.select_option("#task", "<OD>")
    sent = run_on_page(page)
    assert sent["task"] == "<OD>" and sent["image"].startswith("data:image/png;base64,")
    shown = shown_json(page)
    assert shown == api_answer(server_url, sent)
    gen = sent["generation"]
    assert sent["scores"] is True  # the page asks for scores by default
    defaults = task_decoding_options(tiny_model)  # the page asks for what a bare API request and run() get
    assert gen == {"max_new_tokens": defaults.max_new_tokens, "num_beams": defaults.num_beams}
    want = json.loads(json.dumps(tiny_model.run(od_image.read_bytes(), "<OD>", scores=sent["scores"], **gen)))
    assert shown == want and want["<OD>"]["bboxes"]
    assert page.locator("#overlay rect.box").count() == len(want["<OD>"]["bboxes"]) > 0
    assert "ms" in page.text_content("#timing")
    if os.environ.get("FLORENCE2_UI_SCREENSHOT"):
        page.screenshot(path=os.environ["FLORENCE2_UI_SCREENSHOT"], full_page=True)

    # a region task: drag a box on the image
    page.select_option("#task", "<REGION_TO_SEGMENTATION>")
    assert page.is_visible("#region-row") and not page.is_visible("#text-row")
    box = page.locator("#overlay").bounding_box()
    start, end = (
        (box["x"] + 0.2 * box["width"], box["y"] + 0.25 * box["height"]),
        (box["x"] + 0.7 * box["width"], box["y"] + 0.8 * box["height"]),
    )
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()
    assert page.is_visible("#region")
    sent = run_on_page(page)
    width, height = Image.open(od_image).size
    expect = [0.2 * width, 0.25 * height, 0.7 * width, 0.8 * height]
    assert sent["task"] == "<REGION_TO_SEGMENTATION>" and len(sent["region"]) == 4
    assert all(abs(a - b) <= 2 for a, b in zip(sent["region"], expect)), (sent["region"], expect)
    shown = shown_json(page)
    assert shown == api_answer(server_url, sent)
    want = json.loads(
        json.dumps(
            tiny_model.run(
                od_image.read_bytes(),
                "<REGION_TO_SEGMENTATION>",
                region=sent["region"],
                scores=sent["scores"],
                **sent["generation"],
            )
        )
    )
    assert shown == want
    polygons = want["<REGION_TO_SEGMENTATION>"]["polygons"]
    assert page.locator("#overlay polygon.polygon").count() == sum(len(parts) for parts in polygons)

    # a task that takes text, and one answered with quad boxes
    page.select_option("#task", "<OPEN_VOCABULARY_DETECTION>")
    assert (
        page.is_visible("#text-row") and not page.is_visible("#region-row") and not page.is_visible("#region")
    )
    page.fill("#text", "a yellow sun")
    sent = run_on_page(page)
    assert sent["text"] == "a yellow sun" and "region" not in sent
    assert shown_json(page) == api_answer(server_url, sent)
    page.select_option("#task", "<OCR_WITH_REGION>")
    sent = run_on_page(page)
    shown = shown_json(page)
    assert shown == api_answer(server_url, sent)
    assert page.locator("#overlay polygon.quad").count() == len(shown["<OCR_WITH_REGION>"]["quad_boxes"])

    # dropping an image file on the drop zone loads it
    dropped = encode(scene(1, (200, 150)))
    page.evaluate(
        """(bytes) => {
        const file = new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"});
        const data = new DataTransfer();
        data.items.add(file);
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
    }""",
        list(dropped),
    )
    page.wait_for_function("document.getElementById('status').textContent.includes('dropped.png')")
    assert "200 × 150" in page.text_content("#status") and page.locator("#overlay .shape").count() == 0

    # a wrong key is shown as the server's error
    page.fill("#api-key", "wrong")
    page.click("#run")
    page.wait_for_function("document.getElementById('status').classList.contains('error')", timeout=30_000)
    assert "401" in page.text_content("#status") and "unauthorized" in page.text_content("#status")
    assert not errors, errors
    assert not outside, outside  # nothing but this server
    page.close()


def test_docs_render_offline(browser, server_url):
    """/docs (Swagger UI) renders every operation of /openapi.json, with nothing fetched from elsewhere."""
    from florence2_runtime.server.page import SWAGGER_FILES

    if SWAGGER_FILES is None:
        pytest.skip("fastapi-offline is not installed: /docs uses the CDN")
    doc = httpx.get(server_url + "/openapi.json").json()
    page = browser.new_page()
    outside = []
    page.on(
        "request", lambda r: outside.append(r.url) if not r.url.startswith((server_url, "data:")) else None
    )
    page.goto(server_url + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_text_contents()
    assert sorted(paths) == sorted(p for p, ops in doc["paths"].items() for _ in ops)
    assert not outside, outside
    page.close()


def test_page_shows_scores_and_the_threshold_hides_objects(browser, server_url, od_image):
    """Scores after each label on the image and in the object list; the slider hides what scores below it."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server_url + "/")
    page.wait_for_function("document.getElementById('task').options.length === 15")
    page.fill("#api-key", KEY)
    page.set_input_files("#file", str(od_image))
    page.wait_for_selector("#stage:not([hidden])")
    page.select_option("#task", "<OD>")
    sent = run_on_page(page)
    answer = shown_json(page)["<OD>"]
    scores, labels = answer["scores"], answer["labels"]
    assert len(scores) == len(answer["bboxes"]) > 0
    items = page.locator("#objects li").all_text_contents()
    assert items == [f"box{': ' * bool(label)}{label}{score:.2f}" for label, score in zip(labels, scores)]
    captions = page.locator("#overlay text.label").all_text_contents()
    assert sorted(captions) == sorted(f"{label} {score:.2f}".strip() for label, score in zip(labels, scores))

    def set_threshold(value: float) -> None:
        page.evaluate(
            """(v) => { const s = document.getElementById("threshold");
            s.value = v; s.dispatchEvent(new Event("input", {bubbles: true})); }""",
            value,
        )

    for threshold in (0.0, round(sorted(scores)[len(scores) // 2], 2), 1.0):
        set_threshold(threshold)
        kept = sum(s >= threshold for s in scores)
        assert page.locator("#overlay rect.box:visible").count() == kept, threshold
        assert page.locator("#objects li:visible").count() == kept, threshold
        assert page.text_content("#threshold-value") == f"{threshold:.2f}"
    assert page.locator("#overlay rect.box:visible").count() == 0 < len(scores)  # 1.0 hides them all
    assert shown_json(page)["<OD>"] == answer  # the JSON is the whole answer: filtering is the page's only

    # without scores: the request asks for none and nothing is hidden
    set_threshold(0.5)
    page.uncheck("#scores")
    assert page.is_disabled("#threshold")
    sent = run_on_page(page)
    assert "scores" not in sent and "scores" not in shown_json(page)["<OD>"]
    assert page.locator("#overlay rect.box:visible").count() == len(answer["bboxes"])
    assert page.locator("#objects .score").count() == 0
    assert not errors, errors
    page.close()
