"""The HTTP server on a real loopback port: answers equal ``Florence2.run``, bad input gets 4xx JSON.

One uvicorn server per module (tiny model, dynamic batching on), plus short-lived ones for the API key,
a full queue and timeouts (a slowed-down model makes those deterministic).
"""

from __future__ import annotations

import io
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

httpx = pytest.importorskip("httpx", reason="the server tests need httpx (pip install 'florence2-onnx[dev]')")
pytest.importorskip(
    "fastapi", reason="the server needs the 'serve' extra (pip install 'florence2-onnx[serve]')"
)

from florence2_runtime.server import ServerLimits, create_app
from florence2_runtime.server.background import BackgroundServer
from florence2_runtime.tasks.batch import decoding_options
from tests.helpers.images import b64, encode, noise_image
from tests.helpers.server import IMAGES, NIM, PNG, SlowModel, png_header_only, run_json

LIMITS = ServerLimits(
    max_body_bytes=512 * 1024,
    max_pixels=1_000_000,
    max_new_tokens=64,
    max_num_beams=4,
    max_queue=256,
    max_batch_size=8,
    max_wait_ms=20,
)


def server_gen(gen: dict) -> dict:
    """The server's task-level default: up to 1024 new tokens, capped by its --max-new-tokens (LIMITS: 64)."""
    return {"max_new_tokens": LIMITS.max_new_tokens, **gen}


def expected(tiny_model, data: bytes, task, text=None, region=None, **gen) -> dict:
    """run()'s answer (with the server's length cap) as it looks after a JSON round trip (tuples become lists)."""
    return run_json(tiny_model, data, task, text, region, **server_gen(gen))


# --- servers (server_app, server_url and client: tests/server/conftest.py, with LIMITS) --------------------
def infer(client, image=PNG, task="<OD>", **fields):
    return client.post(
        "/v1/infer", json={"image": b64(image) if isinstance(image, bytes) else image, "task": task, **fields}
    )


# --- answers ---------------------------------------------------------------------------------------------
CASES = [
    ("wide", "<OD>", None, None, {}),
    ("tall", "<CAPTION>", None, None, {"max_new_tokens": 12}),
    ("square", "<OCR_WITH_REGION>", None, None, {"num_beams": 3, "max_new_tokens": 10}),
    ("small", "<CAPTION_TO_PHRASE_GROUNDING>", "a red ball and a dog", None, {}),
    ("wide", "<REFERRING_EXPRESSION_SEGMENTATION>", "the dog", None, {"max_new_tokens": 16}),
    ("tall", "<REGION_TO_CATEGORY>", None, [3, 4, 40, 70], {}),
    ("square", "<REGION_TO_SEGMENTATION>", "<loc_100><loc_200><loc_600><loc_900>", None, {"num_beams": 2}),
    ("small", "<OPEN_VOCABULARY_DETECTION>", "cat", None, {"no_repeat_ngram_size": 3, "max_new_tokens": 20}),
]


@pytest.mark.parametrize("name,task,text,region,gen", CASES, ids=[c[1] for c in CASES])
def test_infer_equals_run(client, tiny_model, name, task, text, region, gen):
    fields = {
        k: v for k, v in {"text": text, "region": region, "generation": gen or None}.items() if v is not None
    }
    r = infer(client, IMAGES[name], task, **fields)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == expected(tiny_model, IMAGES[name], task, text, region, **gen)
    assert set(body["timing_ms"]) >= {"queue", "inference", "total"}


def test_multipart_and_data_url(client, tiny_model):
    want = expected(tiny_model, PNG, "<REGION_TO_DESCRIPTION>", region=[1, 2, 50, 40])
    r = client.post(
        "/v1/infer",
        files={"image": ("x.png", PNG, "image/png")},
        data={"task": "<REGION_TO_DESCRIPTION>", "region": "1,2,50,40"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["result"] == want
    r = infer(client, "data:image/png;base64," + b64(PNG), "<REGION_TO_DESCRIPTION>", region=[1, 2, 50, 40])
    assert r.status_code == 200 and r.json()["result"] == want
    r = client.post(
        "/v1/infer",
        files={"image": ("x.png", PNG, "image/png")},
        data={"task": "<OD>", "generation": json.dumps({"num_beams": 2})},
    )
    assert r.json()["result"] == expected(tiny_model, PNG, "<OD>", num_beams=2)


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_exact(client, tiny_model):
    """Dozens of parallel requests with mixed tasks, sizes and options: every answer equals run()."""
    jobs = [CASES[i % len(CASES)] for i in range(48)]
    with ThreadPoolExecutor(24) as pool:
        responses = list(
            pool.map(
                lambda c: infer(
                    client,
                    IMAGES[c[0]],
                    c[1],
                    **{
                        k: v
                        for k, v in {"text": c[2], "region": c[3], "generation": c[4] or None}.items()
                        if v is not None
                    },
                ),
                jobs,
            )
        )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][
        :3
    ]
    want = [
        expected(tiny_model, IMAGES[name], task, text, region, **gen)
        for name, task, text, region, gen in CASES
    ]
    for i, r in enumerate(responses):
        assert r.json()["result"] == want[i % len(CASES)], jobs[i]
    assert max(r.json()["batch_size"] for r in responses) > 1  # requests really shared batches
    metrics = client.get("/metrics").text
    assert re.search(r'florence2_batch_size_bucket\{le="1"\} (\d+)', metrics)


def test_health_and_metrics(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["providers"] == ["CPUExecutionProvider"]
    assert "queue_depth" in health and health["model"]
    infer(client, task="<NOPE>")
    text = client.get("/metrics").text
    for name in (
        "florence2_requests_total",
        "florence2_errors_total",
        "florence2_request_duration_seconds_bucket",
        "florence2_batch_size_count",
        "florence2_queue_depth",
    ):
        assert name in text
    assert 'florence2_errors_total{kind="invalid_task_input"}' in text


# --- bad input -------------------------------------------------------------------------------------------
def _truncated() -> bytes:
    return IMAGES["tall"][: len(IMAGES["tall"]) // 2]


BAD_JSON = [
    # (id, request fields or raw body, status, kind)
    ("not base64", {"image": "this is not base64 !!", "task": "<OD>"}, 400, "invalid_base64"),
    ("bad data url", {"image": "data:image/png,abc", "task": "<OD>"}, 400, "invalid_base64"),
    ("not an image", {"image": b64(b"hello, world" * 10), "task": "<OD>"}, 400, "not_an_image"),
    ("truncated image", {"image": b64(_truncated()), "task": "<OD>"}, 400, "corrupt_image"),
    (
        "bomb header",
        {"image": b64(png_header_only(100_000, 100_000)), "task": "<OD>"},
        413,
        "image_too_large",
    ),
    (
        "too many pixels",
        {"image": b64(encode(Image.new("RGB", (1100, 1000)))), "task": "<OD>"},
        413,
        "image_too_large",
    ),
    ("url image", {"image": "https://example.com/cat.jpg", "task": "<OD>"}, 400, "invalid_image"),
    ("image not a string", {"image": 12, "task": "<OD>"}, 422, "invalid_image"),
    ("unknown task", {"image": b64(PNG), "task": "<FLY>"}, 422, "invalid_task_input"),
    ("task not a string", {"image": b64(PNG), "task": ["<OD>"]}, 422, "invalid_task_input"),
    ("missing text", {"image": b64(PNG), "task": "<CAPTION_TO_PHRASE_GROUNDING>"}, 422, "invalid_task_input"),
    ("unexpected text", {"image": b64(PNG), "task": "<OD>", "text": "cats"}, 422, "invalid_task_input"),
    (
        "text not a string",
        {"image": b64(PNG), "task": "<OPEN_VOCABULARY_DETECTION>", "text": 5},
        422,
        "invalid_task_input",
    ),
    (
        "text too long",
        {"image": b64(PNG), "task": "<OPEN_VOCABULARY_DETECTION>", "text": "cat " * 400},
        422,
        "text_too_long",
    ),
    (
        "region malformed",
        {"image": b64(PNG), "task": "<REGION_TO_CATEGORY>", "region": "1,2,3,4"},
        422,
        "invalid_task_input",
    ),
    (
        "region three numbers",
        {"image": b64(PNG), "task": "<REGION_TO_CATEGORY>", "region": [1, 2, 3]},
        422,
        "invalid_task_input",
    ),
    (
        "region out of image",
        {"image": b64(PNG), "task": "<REGION_TO_CATEGORY>", "region": [0, 0, 500, 500]},
        422,
        "invalid_task_input",
    ),
    (
        "region reversed",
        {"image": b64(PNG), "task": "<REGION_TO_CATEGORY>", "region": [50, 50, 10, 10]},
        422,
        "invalid_task_input",
    ),
    (
        "region on a text task",
        {"image": b64(PNG), "task": "<OD>", "region": [1, 1, 5, 5]},
        422,
        "invalid_task_input",
    ),
    (
        "max_new_tokens 0",
        {"image": b64(PNG), "task": "<OD>", "generation": {"max_new_tokens": 0}},
        422,
        "invalid_generation",
    ),
    (
        "max_new_tokens too big",
        {"image": b64(PNG), "task": "<OD>", "generation": {"max_new_tokens": 10**9}},
        422,
        "invalid_generation",
    ),
    (
        "num_beams too big",
        {"image": b64(PNG), "task": "<OD>", "generation": {"num_beams": 99}},
        422,
        "invalid_generation",
    ),
    (
        "num_beams not int",
        {"image": b64(PNG), "task": "<OD>", "generation": {"num_beams": "3"}},
        422,
        "invalid_generation",
    ),
    (
        "unknown generation option",
        {"image": b64(PNG), "task": "<OD>", "generation": {"do_sample": True}},
        422,
        "invalid_generation",
    ),
    (
        "min above max",
        {"image": b64(PNG), "task": "<OD>", "generation": {"min_new_tokens": 9, "max_new_tokens": 3}},
        422,
        "invalid_generation",
    ),
    (
        "generation not an object",
        {"image": b64(PNG), "task": "<OD>", "generation": [1]},
        422,
        "invalid_generation",
    ),
    ("missing image", {"task": "<OD>"}, 422, "missing_field"),
    ("missing task", {"image": b64(PNG)}, 422, "missing_field"),
    ("unexpected field", {"image": b64(PNG), "task": "<OD>", "temperature": 0.2}, 422, "unexpected_field"),
]
BAD_RAW = [
    ("malformed json", b'{"image": "abc", "task": ', "application/json", 400, "invalid_json"),
    ("json not an object", b"[1, 2]", "application/json", 400, "invalid_json"),
    ("empty body", b"", "application/json", 400, "invalid_json"),
    ("not utf-8", b'{"task": "\xff\xfe"}', "application/json", 400, "invalid_json"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "invalid_json"),
    ("wrong content type", b"image=abc", "text/plain", 415, "unsupported_media_type"),
    (
        "broken multipart",
        b"--x\r\nContent-Disposition: form-data\r\n\r\n",
        "multipart/form-data; boundary=x",
        400,
        "invalid_multipart",
    ),
]


@pytest.mark.parametrize("fields,status,kind", [c[1:] for c in BAD_JSON], ids=[c[0] for c in BAD_JSON])
def test_bad_json_fields(client, fields, status, kind):
    r = client.post("/v1/infer", json=fields)
    assert r.status_code == status, r.text
    assert r.json()["error"]["kind"] == kind
    assert r.json()["error"]["message"]


@pytest.mark.parametrize(
    "body,content_type,status,kind", [c[1:] for c in BAD_RAW], ids=[c[0] for c in BAD_RAW]
)
def test_bad_bodies(client, body, content_type, status, kind):
    r = client.post("/v1/infer", content=body, headers={"content-type": content_type})
    assert r.status_code == status, r.text
    assert r.json()["error"]["kind"] == kind


MODEL_ERRORS = [
    # (fields changed in a valid <OD> request (None: removed), kind, what the message says)
    ({"generation": {"num_beams": "3"}}, "invalid_generation", "generation.num_beams: "),
    ({"generation": {"early_stopping": 1}}, "invalid_generation", "generation.early_stopping: "),
    ({"task": None, "tasks": ["<OD>", 3]}, "invalid_task_input", "tasks[1]: must be a task token"),
    ({"task": None, "tasks": [{"task": "<OD>", "text": 5}]}, "invalid_task_input", "tasks[0].text: "),
    ({"region_format": "PIXELS"}, "invalid_task_input", "region_format: "),
    ({"image": None}, "missing_field", "image: "),
]


@pytest.mark.parametrize("fields,kind,names", MODEL_ERRORS, ids=[m[2] for m in MODEL_ERRORS])
def test_model_errors_are_422_naming_the_field(client, fields, kind, names):
    """The route's pydantic model refuses the request: one 422 in the server's shape, naming the field by
    its path (never by the name pydantic gives a union's branch)."""
    body = {k: v for k, v in {"image": b64(PNG), "task": "<OD>", **fields}.items() if v is not None}
    r = client.post("/v1/infer", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["kind"] == kind and names in error["message"], error
    assert not re.search(r"TaskEntry|literal\[|\.bool|\.str\b", error["message"]), error
    if "image" not in body:
        return
    form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items() if k != "image"}
    r = client.post("/v1/infer", files={"image": ("x.png", PNG, "image/png")}, data=form)
    assert r.status_code == 422 and r.json()["error"]["kind"] == kind, r.text  # multipart: the same model


def test_many_model_errors_make_one_short_answer(client):
    body = {
        "image": 1,
        "task": 2,
        "text": 3,
        "region": 4,
        "generation": 5,
        **{f"x{i}": "y" * 9000 for i in range(40)},
    }
    r = client.post("/v1/infer", json=body)
    assert r.status_code == 422 and len(r.content) < 2000, r.text[:300]
    error = r.json()["error"]
    assert error["kind"] == "invalid_image" and "more)" in error["message"], error


def test_body_too_large(client):
    big = b64(b"\0" * LIMITS.max_body_bytes)
    r = infer(client, big)
    assert r.status_code == 413 and r.json()["error"]["kind"] == "body_too_large"

    def chunks():  # no Content-Length: refused while streaming
        for _ in range(LIMITS.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    r = client.post("/v1/infer", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_route_and_method(client):
    assert client.get("/v2/whatever").status_code == 404
    r = client.get("/v1/infer")
    assert r.status_code == 405 and r.json()["error"]["kind"] == "method_not_allowed"


def test_server_survives_bad_input(client, tiny_model):
    """After the whole matrix (and junk in parallel with good requests) the worker still answers."""
    junk = [{"image": b64(_truncated()), "task": "<OD>"}, {"image": b64(PNG), "task": "<X>"}, {"task": 1}]
    with ThreadPoolExecutor(8) as pool:
        rs = list(
            pool.map(
                lambda i: client.post("/v1/infer", json=junk[i % 3]) if i % 2 else infer(client), range(24)
            )
        )
    assert all(r.status_code == (200 if i % 2 == 0 else r.status_code) for i, r in enumerate(rs))
    assert all(400 <= r.status_code < 500 for i, r in enumerate(rs) if i % 2)
    assert infer(client).json()["result"] == expected(tiny_model, PNG, "<OD>")


@pytest.mark.slow
def test_memory_is_flat(client):
    """RSS (server and client share this process) stays flat over a few hundred requests."""

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    big = encode(noise_image(400, 400, 9), "JPEG")  # 470 KiB decoded: a leaked image per request would show
    bodies = [
        {"image": b64(data), "task": task, "generation": {"max_new_tokens": 8}}
        for data in [*IMAGES.values(), big]
        for task in ("<OD>", "<CAPTION>")
    ]
    bodies.append({"image": b64(_truncated()), "task": "<OD>"})

    def burst(n: int) -> None:
        with ThreadPoolExecutor(8) as pool:
            for r in pool.map(lambda i: client.post("/v1/infer", json=bodies[i % len(bodies)]), range(n)):
                assert r.status_code in (200, 400)

    burst(80)  # warm-up: arenas, caches, thread pools
    before = rss_mib()
    burst(240)
    growth = rss_mib() - before
    assert growth < 25, f"RSS grew by {growth:.1f} MiB over 240 requests"


# --- NVIDIA-compatible route -----------------------------------------------------------------------------
def nim_body(content: str) -> dict:
    return {"messages": [{"role": "user", "content": content}]}


def img_tag(data: bytes, mime: str = "image/png") -> str:
    return f'<img src="data:{mime};base64,{b64(data)}" />'


JSON_ACCEPT = {
    "Accept": "application/json"
}  # the plain JSON answer (the default is the hosted service's zip)


def test_nim_text_task(client, tiny_model):
    r = client.post(NIM, json=nim_body("<CAPTION>" + img_tag(PNG)), headers=JSON_ACCEPT)
    assert r.status_code == 200, r.text
    body = r.json()
    want = expected(tiny_model, PNG, "<CAPTION>")["<CAPTION>"]
    assert body["content"] == "<CAPTION>" + want and body["entities"] is None
    assert body["choices"][0]["message"]["content"] == body["content"]


@pytest.mark.parametrize(
    "task,text,keys",
    [
        ("<OD>", None, ("bboxes", "labels")),
        (
            "<CAPTION_TO_PHRASE_GROUNDING>",
            "A black and brown dog is laying on a grass field.",
            ("bboxes", "labels"),
        ),
        ("<REGION_TO_SEGMENTATION>", "<loc_312><loc_168><loc_998><loc_846>", ("polygons", "labels")),
        ("<OCR_WITH_REGION>", None, ("quad_boxes", "labels")),
    ],
)
def test_nim_entities(client, tiny_model, task, text, keys):
    image = IMAGES["tall"]
    r = client.post(
        NIM, json=nim_body(task + (text or "") + img_tag(image, "image/jpeg")), headers=JSON_ACCEPT
    )
    assert r.status_code == 200, r.text
    entities = r.json()["entities"]
    want = expected(tiny_model, image, task, text)[task]
    assert {k: entities[k] for k in keys} == {k: want[k] for k in keys}
    assert set(entities) >= {"bboxes", "quad_boxes", "labels", "polygons"}


@pytest.mark.parametrize(
    "body,status,kind",
    [
        ({}, 422, "missing_field"),
        ({"messages": "hi"}, 422, "missing_field"),
        (nim_body("<CAPTION>no image here"), 400, "invalid_content"),
        (nim_body('<CAPTION><img src="data:image/jpeg;asset_id,868f5924-8ef2" />'), 404, "unknown_asset"),
        (nim_body("just text" + img_tag(PNG)), 422, "unknown_task"),
        (nim_body("<FLY>" + img_tag(PNG)), 422, "invalid_task_input"),
        (nim_body("<OD>dogs" + img_tag(PNG)), 422, "invalid_task_input"),
        (nim_body('<OD><img src="data:image/png;base64,@@@" />'), 400, "invalid_base64"),
        (nim_body("<REGION_TO_CATEGORY>1,2,3,4" + img_tag(PNG)), 422, "invalid_task_input"),
    ],
    ids=[
        "empty",
        "messages not a list",
        "no img",
        "asset id",
        "no task",
        "unknown task",
        "unexpected text",
        "bad base64",
        "bad region",
    ],
)
def test_nim_bad_input(client, body, status, kind):
    r = client.post(NIM, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["kind"] == kind


def test_json_routes_refuse_other_content_types(client):
    body = json.dumps(nim_body("<CAPTION>" + img_tag(PNG))).encode()
    r = client.post(NIM, content=body, headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["kind"] == "unsupported_media_type"
    assert "application/json" in r.text and "multipart" not in r.text  # only /v1/infer takes forms
    r = client.post(
        NIM, content=body, headers={**JSON_ACCEPT, "content-type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 200, r.text


# --- API key, full queue, timeout ------------------------------------------------------------------------
def test_api_key(tiny_model):
    app = create_app(tiny_model, ServerLimits(api_key="s3cret"))
    with BackgroundServer(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        assert c.get("/health").status_code == 200  # probes need no key
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"X-API-Key": "s3cre"},
            {"Authorization": "s3cret"},
        ):
            r = c.post("/v1/infer", json={"image": b64(PNG), "task": "<OD>"}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["kind"] == "unauthorized"
            # the key is checked before the body is read: a client without it gets 401 for any body
            r = c.post(NIM, content=b"{", headers={**headers, "content-type": "application/json"})
            assert r.status_code == 401, r.text
        assert c.get("/metrics").status_code == 401
        for headers in ({"Authorization": "Bearer s3cret"}, {"X-API-Key": "s3cret"}):
            r = c.post("/v1/infer", json={"image": b64(PNG), "task": "<OD>"}, headers=headers)
            assert r.status_code == 200, r.text


def test_queue_full_is_503_with_retry_after(tiny_model):
    limits = ServerLimits(max_queue=2, max_batch_size=1, retry_after_s=3)
    with (
        BackgroundServer(create_app(SlowModel(tiny_model, 0.3), limits)) as base,
        httpx.Client(base_url=base, timeout=30) as c,
        ThreadPoolExecutor(10) as pool,
    ):
        rs = list(pool.map(lambda _: infer(c), range(10)))
        codes = sorted(r.status_code for r in rs)
        assert codes.count(200) >= 3 and 503 in codes, codes
        busy = next(r for r in rs if r.status_code == 503)
        assert busy.headers["retry-after"] == "3" and busy.json()["error"]["kind"] == "queue_full"
        assert infer(c).status_code == 200  # and it recovers


def test_timeout_is_504_and_worker_survives(tiny_model):
    limits = ServerLimits(request_timeout_s=0.2)
    with (
        BackgroundServer(create_app(SlowModel(tiny_model, 0.5), limits)) as base,
        httpx.Client(base_url=base, timeout=30) as c,
    ):
        r = infer(c)
        assert r.status_code == 504 and r.json()["error"]["kind"] == "timeout"
        time.sleep(0.6)
        assert c.get("/health").json()["status"] == "ok"


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_batch_size"):
        ServerLimits(max_batch_size=0)
    with pytest.raises(ValueError, match="api_key"):
        ServerLimits(api_key="")


def test_serve_command(tiny_folder):
    """``florence2 serve`` starts uvicorn on loopback, honours the limits it is given, and stops on SIGTERM."""
    import subprocess
    import sys

    from florence2_runtime.cli import build_parser
    from florence2_runtime.server.background import free_port

    args = build_parser().parse_args(["serve", str(tiny_folder)])
    assert args.host == "127.0.0.1" and not args.ray
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "florence2_runtime.cli",
            "serve",
            str(tiny_folder),
            "--port",
            str(port),
            "--max-num-beams",
            "2",
            "--api-key",
            "k",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "florence2 serve did not start"
            time.sleep(0.2)
        headers = {"Authorization": "Bearer k"}
        r = httpx.post(
            url + "/v1/infer",
            headers=headers,
            timeout=30,
            json={"image": b64(PNG), "task": "<OD>", "generation": {"num_beams": 3}},
        )
        assert r.status_code == 422 and "[1, 2]" in r.json()["error"]["message"]
        assert httpx.post(url + "/v1/infer", json={"image": b64(PNG), "task": "<OD>"}).status_code == 401
    finally:
        proc.terminate()
        assert proc.wait(20) in (0, -15)  # recent uvicorn re-raises SIGTERM after its graceful shutdown
        proc.stderr.close()


def test_batcher_groups_by_options_and_bounds_batches(tiny_model):
    """Unit level: a batch never mixes decoding options and never exceeds max_batch_size; order is FIFO."""
    import asyncio

    from florence2_runtime.server.batching import DynamicBatcher, Job

    calls: list[list[str]] = []

    class Recording(SlowModel):
        def starting(self, text_ids, num_beams):
            calls.append([num_beams] * len(text_ids))
            super().starting(text_ids, num_beams)

    image = Image.open(io.BytesIO(PNG)).convert("RGB")
    gens = [{"num_beams": 1 + i % 2, "max_new_tokens": 6} for i in range(11)]
    jobs = [Job(image, "<OD>", "<OD>", g, decoding_options(tiny_model, **g)) for g in gens]

    async def main():
        batcher = DynamicBatcher(Recording(tiny_model, 0.05), max_batch_size=3, max_wait_ms=50)
        outcomes = await asyncio.gather(*(batcher.submit(j) for j in jobs))
        await batcher.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert all(len(c) <= 3 and len(set(c)) == 1 for c in calls), calls
    assert sum(map(len, calls)) == len(jobs) and max(map(len, calls)) == 3
    want = {b: expected(tiny_model, PNG, "<OD>", num_beams=b, max_new_tokens=6) for b in (1, 2)}
    assert [o.result for o in outcomes] == [want[g["num_beams"]] for g in gens]


def test_server_is_torch_free(tiny_folder):
    """The app and the Ray deployment import and build with torch / transformers made unimportable."""
    import subprocess
    import sys
    import textwrap

    from tests.helpers.blocked_imports import source

    script = source() + textwrap.dedent(f"""
        from florence2_runtime import Florence2
        from florence2_runtime.server import create_app
        import florence2_runtime.server.ray_app, florence2_runtime.server.cli
        create_app(Florence2.from_pretrained({str(tiny_folder)!r}))
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# --- several tasks on one image, task-level defaults, max_tokens on the NVIDIA route -----------------------
TASK_LIST = [
    "<CAPTION>",
    {"task": "<REGION_TO_CATEGORY>", "region": [3, 4, 40, 50]},
    {"task": "<OPEN_VOCABULARY_DETECTION>", "text": "cat"},
    "<OD>",
]


def test_infer_tasks_answers_every_task_with_one_vision_encoding(client, tiny_model, monkeypatch):
    calls = []
    original = tiny_model.engine.encode_images
    monkeypatch.setattr(
        tiny_model.engine, "encode_images", lambda pv, **kw: (calls.append(len(pv)), original(pv, **kw))[1]
    )
    r = client.post("/v1/infer", json={"image": b64(PNG), "tasks": TASK_LIST, "generation": {"num_beams": 2}})
    assert r.status_code == 200, r.text
    assert sum(calls) == 1
    want = tiny_model.run_tasks(
        PNG,
        [e if isinstance(e, str) else (e["task"], e.get("text") or e.get("region")) for e in TASK_LIST],
        **server_gen({"num_beams": 2}),
    )
    assert r.json()["result"] == json.loads(json.dumps(want))
    assert want["<CAPTION>"] == tiny_model.run(PNG, "<CAPTION>", **server_gen({"num_beams": 2}))["<CAPTION>"]
    r = client.post(
        "/v1/infer",
        files={"image": ("x.png", PNG, "image/png")},
        data={"tasks": json.dumps(TASK_LIST), "generation": json.dumps({"num_beams": 2})},
    )
    assert r.status_code == 200 and r.json()["result"] == json.loads(json.dumps(want))


@pytest.mark.parametrize(
    "fields",
    [
        {"tasks": ["<CAPTION>", "<NOPE>"]},
        {"tasks": []},
        {"tasks": "<OD>"},
        {"tasks": ["<OD>", "<OD>"]},
        {"tasks": [3]},
        {"tasks": [{"task": "<OD>", "region": [1, 2, 3, 4]}]},
        {"tasks": [{"task": "<REGION_TO_CATEGORY>"}]},
        {"tasks": ["<OD>"], "task": "<OD>"},
        {"tasks": ["<OPEN_VOCABULARY_DETECTION>"], "text": "cat"},
    ],
    ids=[
        "unknown task",
        "empty",
        "not a list",
        "twice",
        "not a task",
        "region for <OD>",
        "missing region",
        "task and tasks",
        "top-level text",
    ],
)
def test_bad_task_lists_are_422(client, fields):
    r = client.post("/v1/infer", json={"image": b64(PNG), **fields})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["kind"] == "invalid_task_input"


def test_server_defaults_reach_1024_tokens_capped_by_limits_and_positions(tiny_model):
    from florence2_runtime.server.jobs import Generation, resolve_generation

    positions = tiny_model.config.max_position_embeddings
    assert resolve_generation(None, ServerLimits(), tiny_model)[1].max_new_tokens == min(1024, positions - 1)
    assert resolve_generation(Generation(), LIMITS, tiny_model)[1].max_new_tokens == LIMITS.max_new_tokens
    five = Generation(max_new_tokens=5)
    assert resolve_generation(five, LIMITS, tiny_model)[1].max_new_tokens == 5
    assert resolve_generation(None, LIMITS, tiny_model)[1].num_beams == decoding_options(tiny_model).num_beams


def test_nim_honours_max_tokens(client, tiny_model):
    body = {**nim_body("<CAPTION>" + img_tag(PNG)), "max_tokens": 5}
    r = client.post(NIM, json=body, headers=JSON_ACCEPT)
    assert r.status_code == 200, r.text
    assert (
        r.json()["content"]
        == "<CAPTION>" + expected(tiny_model, PNG, "<CAPTION>", max_new_tokens=5)["<CAPTION>"]
    )
    for bad in ["5", 0, 10**6, 2.5]:
        r = client.post(NIM, json={**body, "max_tokens": bad}, headers=JSON_ACCEPT)
        assert r.status_code == 422 and r.json()["error"]["kind"] == "invalid_generation", (bad, r.text)
