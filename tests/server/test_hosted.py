"""NVIDIA's hosted Florence-2 as a drop-in: zip answers, the NVCF asset store, NVIDIA's own example client;
and the OpenAPI document / docs page / try-it page routes.

Answers are compared with ``Florence2.run`` on the same bytes; NVIDIA's example client
(``tests/data/nvidia_florence2_client.py``, checked against the hosted API's page,
``tests/data/nvidia_florence2_page.md``) runs as a subprocess with only its two URLs changed.
"""

from __future__ import annotations

import base64
import io
import json
import re
import runpy
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx", reason="the server tests need httpx (pip install 'florence2-onnx[dev]')")
pytest.importorskip(
    "fastapi", reason="the server needs the 'serve' extra (pip install 'florence2-onnx[serve]')"
)

from florence2_runtime.server import ServerLimits, create_app
from florence2_runtime.server.background import BackgroundServer
from florence2_runtime.server.handlers import ErrorResponse
from florence2_runtime.server.health import HealthResponse
from florence2_runtime.server.hosted.assets import AssetStore
from florence2_runtime.server.hosted.routes import AssetCreated, HostedResponse
from florence2_runtime.server.inference import InferRequest, InferResponse
from florence2_runtime.server.page import STATIC, SWAGGER_FILES
from florence2_runtime.tasks.prompts import TASKS
from florence2_runtime.tasks.results import Florence2Result
from tests.helpers.images import encode, noise_image
from tests.helpers.paths import DATA, ROOT

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
NIM = "/v1/vlm/microsoft/florence-2"
CLIENT = DATA / "nvidia_florence2_client.py"
PAGE = DATA / "nvidia_florence2_page.md"  # the page's Python example, verbatim


def plain(value):
    return json.loads(json.dumps(value))


@pytest.fixture(scope="module")
def boxes_jpeg(tiny_model) -> bytes:
    """A JPEG on which the tiny random model finds at least one box for <OD> (searched, not assumed)."""
    for seed in range(40):
        data = encode(noise_image(128, 96, seed), "JPEG", quality=92)
        if tiny_model.run(data, "<OD>")["<OD>"]["bboxes"]:
            return data
    pytest.fail("no noise image gives <OD> boxes with the tiny model")


LIMITS = ServerLimits(  # the module's server (server_app, server_url, client: tests/server/conftest.py)
    api_key=KEY,
    max_body_bytes=2 * 1024 * 1024,
    max_pixels=1_000_000,
    max_assets=32,
    max_asset_bytes=256 * 1024,
    asset_ttl_s=60,
)
CLIENT_HEADERS = AUTH


def upload(client, data: bytes, content_type: str = "image/jpeg") -> str:
    r = client.post("/v2/nvcf/assets", json={"contentType": content_type, "description": "test"})
    assert r.status_code == 200, r.text
    created = AssetCreated.model_validate(r.json())
    put = httpx.put(created.uploadUrl, content=data, headers={"content-type": content_type}, timeout=30)
    assert put.status_code == 200, put.text
    return created.assetId


def nim_body(content: str) -> dict:
    return {"messages": [{"role": "user", "content": content}]}


def unzip(data: bytes) -> tuple[dict, Image.Image | None]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        response = [n for n in names if n.endswith(".response")]
        assert len(response) == 1, names
        body = json.loads(z.read(response[0]))
        assert response[0] == f"{body['id']}.response"
        images = [n for n in names if n != response[0]]
        assert images in ([], [f"{body['id']}.jpg"]), names
        return body, (Image.open(io.BytesIO(z.read(images[0]))) if images else None)


def check_answer(body: dict, task: str, answer, image_size) -> None:
    """A .response JSON says what run() says."""
    HostedResponse.model_validate(body)
    if isinstance(answer, str):
        assert body["content"] == task + answer and body["entities"] is None
    else:
        assert body["content"] == task
        assert {k: body["entities"][k] for k in answer} == plain(answer)
    assert body["choices"][0]["message"]["content"] == body["content"]


# --- the zip answer --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_zip_with_overlay_for_boxes(client, tiny_model, boxes_jpeg):
    want = tiny_model.run(boxes_jpeg, "<OD>")["<OD>"]
    r = client.post(
        NIM,
        json=nim_body(f'<OD><img src="data:image/jpeg;base64,{base64.b64encode(boxes_jpeg).decode()}" />'),
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    body, overlay = unzip(r.content)
    check_answer(body, "<OD>", want, (128, 96))
    assert overlay is not None and overlay.size == (128, 96)
    image = Image.open(io.BytesIO(boxes_jpeg)).convert("RGB")
    drawn = Florence2Result.from_answer("<OD>", want, image.size).draw(image)
    got, drawn, plain_image = (np.asarray(a, np.int16) for a in (overlay, drawn, image))
    shapes = np.any(drawn != plain_image, axis=-1)  # where the boxes and labels are
    assert shapes.any()  # on those pixels the overlay is the drawing, not the photo (up to JPEG loss)
    assert np.abs(got - drawn)[shapes].mean() * 2 < np.abs(got - plain_image)[shapes].mean()


@pytest.mark.slow
def test_text_task_zip_has_no_overlay_and_json_on_request(client, tiny_model, boxes_jpeg):
    asset = upload(client, boxes_jpeg)
    content = f'<CAPTION><img src="data:image/jpeg;asset_id,{asset}" />'
    want = tiny_model.run(boxes_jpeg, "<CAPTION>")["<CAPTION>"]
    body, overlay = unzip(client.post(NIM, json=nim_body(content)).content)
    check_answer(body, "<CAPTION>", want, None)
    assert overlay is None
    # JSON: ?format=json, or Accept: application/json without NVCF asset headers (as before this route zipped)
    for kwargs in ({"params": {"format": "json"}}, {"headers": {"Accept": "application/json"}}):
        r = client.post(NIM, json=nim_body(content), **kwargs)
        assert r.headers["content-type"] == "application/json", kwargs
        check_answer(r.json(), "<CAPTION>", want, None)
    # ... but what the hosted service's clients send (Accept: application/json + asset headers) gets the zip
    r = client.post(
        NIM,
        json=nim_body(content),
        headers={"Accept": "application/json", "NVCF-INPUT-ASSET-REFERENCES": asset},
    )
    assert r.headers["content-type"] == "application/zip"
    r = client.post(NIM, json=nim_body(content), params={"format": "xml"})
    assert r.status_code == 422 and r.json()["error"]["kind"] == "invalid_format"


# --- NVIDIA's example client, unmodified ------------------------------------------------------------------
def test_client_copy_is_the_seed():
    """Our copy equals the client on the hosted API's page (an excerpt of it: tests/data), whitespace aside."""
    text = PAGE.read_text("utf-8")
    start = text.index("```python\n") + len("```python\n")
    block = text[start : text.index("\n```\n", start)]
    ours = [line.strip() for line in CLIENT.read_text("utf-8").splitlines() if line.strip()][
        3:
    ]  # 3 lines: ours
    assert ours == [line.strip() for line in block.splitlines() if line.strip()]


CLIENT_TASKS = [
    0,
    3,
    6,
    8,
    9,
    10,
    13,
]  # CAPTION, OD, PHRASE_GROUNDING, REGION_TO_SEGMENTATION, OVD, R2C, OCR_W_R


@pytest.fixture(scope="module")
def client_script(server_url, tmp_path_factory) -> Path:
    code = CLIENT.read_text("utf-8")
    for hosted in ("https://ai.api.nvidia.com", "https://api.nvcf.nvidia.com"):
        assert code.count(hosted) == 1
        code = code.replace(hosted, server_url)
    path = tmp_path_factory.mktemp("client") / "test.py"
    path.write_text(code, "utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("task_id", CLIENT_TASKS)
def test_nvidia_example_client(client_script, tiny_model, boxes_jpeg, tmp_path, task_id):
    image = tmp_path / "car.jpg"
    image.write_bytes(boxes_jpeg)
    out = tmp_path / "result_dir"
    env = {
        "PATH": "/usr/bin:/bin",
        "API_KEY_REQUIRED_IF_EXECUTING_OUTSIDE_NGC": KEY,
        "NO_PROXY": "*",
        "PYTHONPATH": "",
    }
    done = subprocess.run(
        [sys.executable, str(client_script), str(image), str(out), str(task_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Response saved to path" in done.stdout
    files = sorted(p.name for p in out.iterdir())
    body = json.loads(next(out.glob("*.response")).read_text())
    prompt = runpy.run_path(str(CLIENT), run_name="client")["prompts"][task_id]
    task, text = re.match(r"(<[A-Z_]+>)(.*)", prompt).groups()
    answer = tiny_model.run(boxes_jpeg, task, text=text or None)[task]
    check_answer(body, task, answer, (128, 96))
    shapes = not isinstance(answer, str) and len(Florence2Result.from_answer(task, answer, (128, 96))) > 0
    assert files == sorted([f"{body['id']}.response"] + ([f"{body['id']}.jpg"] if shapes else [])), files


# --- the asset store -------------------------------------------------------------------------------------
def test_asset_errors(client, boxes_jpeg):
    nim = lambda asset: client.post(NIM, json=nim_body(f'<OD><img src="data:image/jpeg;asset_id,{asset}" />'))  # noqa
    r = nim("0b5e-not-there")
    assert (
        r.status_code == 404 and r.json()["error"]["kind"] == "unknown_asset" and "0b5e-not-there" in r.text
    )
    created = client.post("/v2/nvcf/assets", json={"contentType": "image/jpeg"}).json()
    r = nim(created["assetId"])
    assert r.status_code == 409 and r.json()["error"]["kind"] == "asset_not_uploaded"
    bad = [
        (b"hello, world" * 10, 400, "not_an_image"),
        (b"\xff" * (300 * 1024), 413, "asset_too_large"),
        (b"", 422, "empty_asset"),
    ]
    for data, status, kind in bad:
        r = httpx.put(created["uploadUrl"], content=data, timeout=30)
        assert r.status_code == status and r.json()["error"]["kind"] == kind, (kind, r.text)
        assert created["assetId"] in r.json()["error"]["message"]
    wrong = created["uploadUrl"].replace("token=", "token=x")
    r = httpx.put(wrong, content=boxes_jpeg, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["kind"] == "unauthorized"
    r = client.post("/v2/nvcf/assets", json={"contentType": "application/pdf"})
    assert r.status_code == 422 and r.json()["error"]["kind"] == "unsupported_asset_type"
    for headers in ({}, {"Authorization": "Bearer nope"}):  # creating and deleting need the key
        assert (
            httpx.post(
                client.base_url.join("/v2/nvcf/assets"), json={"contentType": "image/jpeg"}, headers=headers
            ).status_code
            == 401
        )
        assert (
            httpx.delete(
                client.base_url.join(f"/v2/nvcf/assets/{created['assetId']}"), headers=headers
            ).status_code
            == 401
        )
    assert client.delete(f"/v2/nvcf/assets/{created['assetId']}").status_code == 204
    assert nim(created["assetId"]).status_code == 404


def test_assets_are_bounded_and_expire(tiny_model, boxes_jpeg):
    limits = ServerLimits(
        max_assets=2,
        max_asset_bytes=64 * 1024,
        max_assets_total_bytes=len(boxes_jpeg) * 2 - 1,
        asset_ttl_s=0.6,
    )
    app = create_app(tiny_model, limits)
    with BackgroundServer(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        first = upload(c, boxes_jpeg)
        created = c.post("/v2/nvcf/assets", json={"contentType": "image/png"}).json()
        r = httpx.put(
            created["uploadUrl"], content=boxes_jpeg
        )  # total bytes would pass max_assets_total_bytes
        assert r.status_code == 507 and r.json()["error"]["kind"] == "asset_storage_full"
        r = c.post("/v2/nvcf/assets", json={"contentType": "image/png"})  # a third one
        assert (
            r.status_code == 429
            and r.json()["error"]["kind"] == "too_many_assets"
            and r.headers["retry-after"]
        )
        content = f'<OD><img src="data:image/jpeg;asset_id,{first}" />'
        assert c.post(NIM, json=nim_body(content)).status_code == 200
        time.sleep(1.2)  # past the ttl and a sweep: deleted without anyone asking
        assert app.state.server.assets._assets == {}
        r = c.post(NIM, json=nim_body(content))
        assert r.status_code == 410 and r.json()["error"]["kind"] == "asset_expired" and first in r.text
        assert c.post("/v2/nvcf/assets", json={"contentType": "image/png"}).status_code == 200  # room again


def test_asset_store_unit():
    now = [0.0]
    store = AssetStore(ServerLimits(max_assets=1, asset_ttl_s=10), clock=lambda: now[0])
    asset = store.create("image/png", None)
    with pytest.raises(Exception) as e:
        store.create("image/png", None)
    assert e.value.status == 429
    store.upload(asset.asset_id, asset.token, b"x")
    assert store.resolve(asset.asset_id) == b"x" and store.total_bytes == 1
    now[0] = 10.0
    assert store.purge() == 1 and len(store) == 0
    with pytest.raises(Exception) as e:
        store.resolve(asset.asset_id)
    assert e.value.status == 410
    with pytest.raises(ValueError, match="asset_ttl_s"):
        ServerLimits(asset_ttl_s=0)


# --- OpenAPI, /docs, the page ----------------------------------------------------------------------------
def _routes(routes) -> list:
    """The app's routes, those of included routers too (FastAPI keeps those as one entry per router)."""
    found = []
    for r in routes:
        inner = getattr(r, "original_router", None)
        found += _routes(inner.routes) if inner is not None else [r]
    return found


def test_openapi_describes_every_route(server_app, server_url, client, tiny_model, boxes_jpeg):
    doc = httpx.get(server_url + "/openapi.json").json()  # no key needed
    validator = pytest.importorskip("openapi_spec_validator", reason="pip install openapi-spec-validator")
    validator.validate(doc)
    api = [
        (r.path, m.lower())
        for r in _routes(server_app.routes)
        for m in (getattr(r, "methods", None) or ())
        if m != "HEAD" and not r.path.startswith(("/docs", "/ui", "/openapi")) and r.path != "/"
    ]
    assert sorted(api) == sorted((p, m) for p, ops in doc["paths"].items() for m in ops)
    for path, method in api:
        op = doc["paths"][path][method]
        assert op["responses"], path
        for content in [
            *op.get("requestBody", {}).get("content", {}).values(),
            *(c for r in op["responses"].values() for c in r.get("content", {}).values()),
        ]:
            ref = content["schema"].get("$ref")
            assert ref is None or ref.split("/")[-1] in doc["components"]["schemas"], (path, ref)
    # the models are the answers: real responses validate against them
    r = client.post("/v1/infer", json={"image": base64.b64encode(boxes_jpeg).decode(), "task": "<OD>"})
    InferResponse.model_validate(r.json())
    assert r.json()["result"] == plain(tiny_model.run(boxes_jpeg, "<OD>"))
    HealthResponse.model_validate(httpx.get(server_url + "/health").json())
    ErrorResponse.model_validate(client.post("/v1/infer", json={"task": "<OD>"}).json())
    InferRequest.model_validate(
        {"image": "x", "task": "<REGION_TO_CATEGORY>", "region": [1, 2, 3, 4], "generation": {"num_beams": 2}}
    )


def test_docs_page_is_offline(server_url):
    page = httpx.get(server_url + "/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    if SWAGGER_FILES is None:
        pytest.skip("fastapi-offline is not installed: /docs uses the CDN")
    assert "cdn" not in page.text.lower()
    for src in re.findall(r'(?:src|href)="(docs/static/[^"]+)"', page.text):
        r = httpx.get(f"{server_url}/{src}")
        assert r.status_code == 200 and len(r.content) > 100, src


def test_page_and_its_files(server_url):
    page = httpx.get(server_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    refs = re.findall(r'(?:src|href)="(ui/[^"]+)"', page.text)
    assert sorted(refs) == ["ui/app.js", "ui/style.css"]
    for ref in refs:
        assert httpx.get(f"{server_url}/{ref}").status_code == 200
    assert not re.search(
        r"https?://", httpx.get(server_url + "/ui/app.js").text.replace("http://www.w3.org/2000/svg", "")
    )
    config = httpx.get(server_url + "/ui/config.json").json()
    assert [t["task"] for t in config["tasks"]] == list(TASKS)
    assert config["api_key_required"] is True
    r = httpx.get(server_url + "/ui/../app.py")
    assert r.status_code == 404
    assert httpx.get(server_url + "/ui/nope.js").json()["error"]["kind"] == "not_found"


def test_ui_and_docs_can_be_switched_off(tiny_model, tiny_folder):
    app = create_app(tiny_model, ui=False, docs=False)
    with BackgroundServer(app) as base:
        for path in ("/", "/ui/app.js", "/docs", "/openapi.json"):
            assert httpx.get(base + path).status_code == 404, path
        assert httpx.get(base + "/health").status_code == 200
    from florence2_runtime.cli import build_parser
    from florence2_runtime.server.cli import app_options

    args = build_parser().parse_args(["serve", str(tiny_folder), "--no-ui", "--no-docs"])
    options = app_options(args)
    assert options["ui"] is False and options["docs"] is False
    args = build_parser().parse_args(["serve", str(tiny_folder)])
    assert app_options(args)["ui"] and app_options(args)["docs"]


def test_static_files_ship_in_the_wheel():
    """pyproject's package data names the page's files (so a wheel carries them)."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["florence2_runtime.server"]
    for f in STATIC.iterdir():
        assert any(f.match(p.split("/")[-1]) and p.startswith("static/") for p in patterns), f.name
