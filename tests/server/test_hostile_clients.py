"""The server under hostile and careless clients (issue #14): one-line requests that used to be 500s,
huge texts, abandoned and timed-out requests, stalled connections, bursts of large images.

Every test runs its own short-lived server on loopback and takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
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
from tests.helpers.images import b64, encode, noise_image
from tests.helpers.server import NIM, PNG, SlowModel, run_json

SHORT = {"max_new_tokens": 20}  # timing tests: the task-level default (1024) may never stop on random weights


class CountingModel(SlowModel):
    """SlowModel that counts the images it was asked to run."""

    def __init__(self, model, delay: float):
        super().__init__(model, delay)
        self.images_run = 0

    def encode_image(self, image):  # the batcher encodes each job's image once
        self.images_run += 1
        return self._model.encode_image(image)


def raw_post(client, path: str, body: str | bytes):
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return client.post(path, content=data, headers={"content-type": "application/json"})


def assert_error(r, status: int | None = None, *, names: str | None = None) -> dict:
    """A JSON error with a 4xx status (``status`` if given) whose message names ``names``; returns it."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if status is not None:
        assert r.status_code == status, r.text[:300]
    error = r.json()["error"]
    assert set(error) >= {"kind", "message"} and len(r.content) < 2000, r.text[:300]
    if names is not None:
        assert names in error["message"], error
    return error


# --- one-line requests that were 500s ------------------------------------------------------------------------
DIGITS = "9" * 400
IMAGE = b64(PNG)
ONE_LINERS = [
    # (id, route, raw JSON body, field the message must name)
    (
        "region with 400 digits",
        "/v1/infer",
        f'{{"image": "{IMAGE}", "task": "<REGION_TO_CATEGORY>", "region": [{DIGITS}, 1, 2, 3]}}',
        "region",
    ),
    (
        "region with a 5000-digit int",
        "/v1/infer",
        f'{{"image": "{IMAGE}", "task": "<REGION_TO_CATEGORY>", "region": [{"9" * 5000}, 1, 2, 3]}}',
        "number",
    ),
    (
        "lone surrogate in text",
        "/v1/infer",
        f'{{"image": "{IMAGE}", "task": "<OPEN_VOCABULARY_DETECTION>", "text": "a\\ud800b"}}',
        "text",
    ),
    (
        "lone surrogate, NVIDIA route",
        NIM,
        json.dumps(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": f"<OPEN_VOCABULARY_DETECTION>a\ud800b"
                        f'<img src="data:image/png;base64,{IMAGE}" />',
                    }
                ]
            }
        ),
        "text",
    ),
    (
        "length_penalty 240 with 3 beams",
        "/v1/infer",
        f'{{"image": "{IMAGE}", "task": "<OD>", "generation": {{"num_beams": 3, "length_penalty": 240}}}}',
        "generation.length_penalty",
    ),
    (
        "length_penalty 1e400",
        "/v1/infer",
        f'{{"image": "{IMAGE}", "task": "<OD>", "generation": {{"length_penalty": 1e400}}}}',
        "generation.length_penalty",
    ),
    (
        "length_penalty with 400 digits",
        "/v1/infer",
        f'{{"image": "{IMAGE}", "task": "<OD>", "generation": {{"length_penalty": {DIGITS}}}}}',
        "generation.length_penalty",
    ),
    (
        "num_beams with 400 digits",
        "/v1/infer",
        f'{{"image": "{IMAGE}", "task": "<OD>", "generation": {{"num_beams": {DIGITS}}}}}',
        "generation.num_beams",
    ),
    (
        "region NaN",
        "/v1/infer",
        f'{{"image": "{IMAGE}", "task": "<REGION_TO_CATEGORY>", "region": [NaN, 1, 2, 3]}}',
        "region",
    ),
]


@pytest.mark.parametrize("route,body,field", [c[1:] for c in ONE_LINERS], ids=[c[0] for c in ONE_LINERS])
def test_one_line_requests_get_4xx_naming_the_field(client, route, body, field):
    assert_error(raw_post(client, route, body), names=field)
    assert client.get("/health").status_code == 200


def test_multipart_region_with_huge_number(client):
    r = client.post(
        "/v1/infer",
        files={"image": ("a.png", PNG)},
        data={"task": "<REGION_TO_CATEGORY>", "region": f"{'9' * 5000},1,2,3"},
    )
    assert_error(r, 422, names="region")


def test_errors_echo_a_short_prefix_only(client):
    task = "<" + "A" * 400_000 + ">"  # under the test server's 512 KiB body limit
    error = assert_error(client.post("/v1/infer", json={"image": IMAGE, "task": task}), 422, names="task")
    assert "400002 characters" in error["message"]
    key = "k" * 300_000
    error = assert_error(client.post("/v1/infer", json={"image": IMAGE, "task": "<OD>", key: 1}), 422)
    assert error["kind"] == "unexpected_field" and "300000 characters" in error["message"]


def test_long_text_is_refused_before_tokenising(tiny_model, monkeypatch):
    """A multi-MB text is refused by its size without reaching the tokenizer, and /health answers meanwhile."""
    limits = ServerLimits(max_body_bytes=32 * 2**20, max_text_bytes=1000)
    calls = []
    real = tiny_model.tokenizer.encode_prompts
    monkeypatch.setattr(tiny_model.tokenizer, "encode_prompts", lambda p: calls.append(len(p[0])) or real(p))
    with (
        BackgroundServer(create_app(tiny_model, limits)) as base,
        httpx.Client(base_url=base, timeout=60) as c,
    ):
        with ThreadPoolExecutor(1) as pool:
            big = pool.submit(
                c.post,
                "/v1/infer",
                json={"image": IMAGE, "task": "<OPEN_VOCABULARY_DETECTION>", "text": "a cat " * 2_500_000},
            )  # 15 MB
            health_ms = []
            while not big.done():
                t0 = time.perf_counter()
                assert c.get("/health").status_code == 200
                health_ms.append((time.perf_counter() - t0) * 1000)
            r = big.result()
        assert_error(r, 422, names="text")
        assert r.json()["error"]["kind"] == "text_too_long"
        assert max(health_ms, default=0) < 1000, health_ms
        assert not calls  # never tokenised
        ok = c.post(
            "/v1/infer", json={"image": IMAGE, "task": "<OPEN_VOCABULARY_DETECTION>", "text": "é" * 400}
        )
        assert_error(ok, 422, names="text")  # 800 bytes passes the byte bound; the token bound still applies
        assert calls


# --- abandoned work ------------------------------------------------------------------------------------------
def test_abandoned_requests_are_dropped_and_counted_as_disconnects(tiny_model):
    model = CountingModel(tiny_model, 0.4)
    limits = ServerLimits(max_batch_size=1, max_queue=64)
    with BackgroundServer(create_app(model, limits)) as base:

        def abandon(_):
            try:
                httpx.post(
                    base + "/v1/infer",
                    json={"image": IMAGE, "task": "<OD>", "generation": SHORT},
                    timeout=0.15,
                )
            except httpx.TimeoutException:
                return True
            return False

        with ThreadPoolExecutor(20) as pool:
            assert all(pool.map(abandon, range(20)))
        time.sleep(0.3)  # the server notices the hang-ups
        with httpx.Client(base_url=base, timeout=30) as c:
            t0 = time.perf_counter()
            r = c.post("/v1/infer", json={"image": IMAGE, "task": "<OD>", "generation": SHORT})
            waited = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            assert waited < 3 * 0.4 + 1.0, f"waited {waited:.1f} s behind abandoned work"
            assert model.images_run <= 4, model.images_run  # at most the batch already running, not 20
            metrics = c.get("/metrics").text
        assert 'florence2_errors_total{kind="client_disconnected"}' in metrics
        assert 'status="499"' in metrics
        assert 'status="500"' not in metrics and "internal" not in metrics


def test_timed_out_requests_never_run(tiny_model):
    model = CountingModel(tiny_model, 0.5)
    limits = ServerLimits(max_batch_size=1, request_timeout_s=0.3)
    with (
        BackgroundServer(create_app(model, limits)) as base,
        httpx.Client(base_url=base, timeout=30) as c,
        ThreadPoolExecutor(8) as pool,
    ):
        codes = [
            r.status_code
            for r in pool.map(
                lambda _: c.post("/v1/infer", json={"image": IMAGE, "task": "<OD>", "generation": SHORT}),
                range(8),
            )
        ]
        assert codes == [504] * 8
        time.sleep(0.6)
        assert model.images_run <= 2, model.images_run  # the first one started; the queued ones were dropped


# --- slow clients --------------------------------------------------------------------------------------------
def _stalled_socket(port: int, payload: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if payload:
        s.sendall(payload)
    return s


def _closed_by_server(s: socket.socket, within_s: float) -> bool:
    s.settimeout(within_s)
    try:
        return s.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_stalled_connections_do_not_lock_out_a_normal_client(tiny_model):
    """300 connections that send half a request head (header deadline far away, cap 100): a normal client
    is still served, and the oldest stalled connections were closed to make room."""
    limits = ServerLimits(header_timeout_s=60, max_connections=100)
    with BackgroundServer(create_app(tiny_model, limits)) as base:
        port = int(base.rsplit(":", 1)[1])
        stalled = [
            _stalled_socket(port, b"POST /v1/infer HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"")
            for i in range(300)
        ]
        try:
            with httpx.Client(base_url=base, timeout=10) as c:
                assert c.get("/health").status_code == 200
                r = c.post("/v1/infer", json={"image": IMAGE, "task": "<OD>", "generation": SHORT})
                assert r.status_code == 200, r.text
            assert _closed_by_server(stalled[0], 2.0)  # the oldest made room
        finally:
            for s in stalled:
                s.close()


def test_header_deadline_closes_silent_and_trickling_connections(tiny_model):
    limits = ServerLimits(header_timeout_s=0.5)
    with BackgroundServer(create_app(tiny_model, limits)) as base:
        port = int(base.rsplit(":", 1)[1])
        silent = _stalled_socket(port, b"")
        trickle = _stalled_socket(port, b"GET /health HTTP/1.1\r\n")
        stop = threading.Event()

        def keep_trickling():
            while not stop.wait(0.1):
                try:
                    trickle.sendall(b"X-A: b\r\n")
                except OSError:
                    return

        threading.Thread(target=keep_trickling, daemon=True).start()
        try:
            assert _closed_by_server(silent, 3.0)
            assert _closed_by_server(trickle, 3.0)
        finally:
            stop.set()
            silent.close()
            trickle.close()
        with httpx.Client(base_url=base, timeout=10) as c:  # a keep-alive client between requests is fine
            assert c.get("/health").status_code == 200
            time.sleep(0.2)
            assert c.get("/health").status_code == 200


def test_slow_body_gets_408(tiny_model):
    limits = ServerLimits(body_timeout_s=0.5)
    with BackgroundServer(create_app(tiny_model, limits)) as base:
        port = int(base.rsplit(":", 1)[1])
        s = _stalled_socket(
            port,
            b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"task": ',
        )
        try:
            s.settimeout(5)
            head = s.recv(4096)
        finally:
            s.close()
        assert head.startswith(b"HTTP/1.1 408"), head[:200]
        assert b"body_timeout" in head


# --- memory --------------------------------------------------------------------------------------------------
def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _large_image_burst(folder: str) -> dict:
    """The burst of :func:`test_large_images_are_kept_at_model_size_and_memory_comes_back`, run in a fresh
    process: the RSS it measures is a server's, not that of a test process which has loaded hundreds of
    models before (whose allocator state decides how much a burst leaves behind)."""
    from florence2_runtime import Florence2

    model = Florence2.from_pretrained(folder)
    images = [
        encode(
            Image.merge(
                "RGB",
                [
                    Image.radial_gradient("L"),
                    Image.linear_gradient("L"),
                    Image.linear_gradient("L").rotate(90),
                ],
            ).resize(size),
            "JPEG",
        )
        for size in ((3000, 3000), (2000, 4000))
    ]
    limits = ServerLimits(max_body_bytes=16 * 2**20, max_pixels=10_000_000, max_batch_size=4)
    with (
        BackgroundServer(create_app(model, limits)) as base,
        httpx.Client(base_url=base, timeout=120) as c,
    ):
        body = lambda i: {"image": b64(images[i % 2]), "task": "<OD>", "generation": {"max_new_tokens": 8}}  # noqa: E731
        warm = c.post("/v1/infer", json=body(0)).status_code
        before = _rss_mib()

        def abandon(i):
            with contextlib.suppress(httpx.TimeoutException):
                httpx.post(base + "/v1/infer", json=body(i), timeout=0.05)

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: c.post("/v1/infer", json=body(i)), range(8)))
            list(pool.map(abandon, range(8)))
        deadline = time.monotonic() + 10
        while c.get("/health").json()["queue_depth"] and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.perf_counter()
        after = c.post("/v1/infer", json={"image": IMAGE, "task": "<OD>", "generation": SHORT}).status_code
        next_seconds = time.perf_counter() - t0
        time.sleep(0.2)
        return {
            "statuses": [warm, *(r.status_code for r in answers), after],
            "equal": answers[1].json()["result"] == run_json(model, images[1], "<OD>", max_new_tokens=8),
            "next_seconds": next_seconds,
            "growth_mib": _rss_mib() - before,
        }


@pytest.mark.slow
def test_large_images_are_kept_at_model_size_and_memory_comes_back(tiny_folder):
    """A burst of 8 concurrent 3000x3000 JPEGs (27 MB decoded each) plus 8 abandoned ones: RSS back within
    64 MB of where it was, answers equal run(), and the next request does not wait on dead work."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        out = pool.apply(_large_image_burst, (str(tiny_folder),))
    assert out["statuses"] == [200] * 10
    assert out["equal"]
    assert out["next_seconds"] < 5
    assert out["growth_mib"] < 64, f"RSS stayed {out['growth_mib']:.0f} MiB above where it was"


def test_decode_for_model_keeps_the_original_size():
    from florence2_runtime.inputs.image_size import ImageSize
    from florence2_runtime.inputs.images import load_image, resize_for_model
    from florence2_runtime.server.images import decode_for_model

    data = encode(noise_image(300, 200, 5), "JPEG")
    model_size = ImageSize(width=48, height=64)
    for draft in (False, True):
        small, size = decode_for_model(data, 10**6, model_size, jpeg_draft=draft)
        assert size == (300, 200) and small.size == (48, 64) and small.mode == "RGB"
    small, _ = decode_for_model(data, 10**6, model_size)
    assert small.tobytes() == resize_for_model(load_image(data), model_size).tobytes()


def test_no_cpu_work_on_the_event_loop_for_big_bodies(tiny_model):
    """A 15 MB NVIDIA-format body with no image tag is parsed off the loop: /health answers meanwhile."""
    limits = ServerLimits(max_body_bytes=32 * 2**20)
    content = "<CAPTION>" + "x" * 15_000_000
    with (
        BackgroundServer(create_app(tiny_model, limits)) as base,
        httpx.Client(base_url=base, timeout=60) as c,
        ThreadPoolExecutor(1) as pool,
    ):
        big = pool.submit(c.post, NIM, json={"messages": [{"role": "user", "content": content}]})
        while not big.done():
            t0 = time.perf_counter()
            assert c.get("/health").status_code == 200
            assert time.perf_counter() - t0 < 1.0
        assert_error(big.result(), 400)


def test_bodies_whose_refusal_would_be_long_work(tiny_model):
    """A body whose every key would be an error, or with 300 000 messages, is refused at once (a JSON
    object has at most 256 keys; a model's lists are bounded), and /health answers meanwhile. (Parsing
    JSON holds the GIL, in a thread or not: a body of many tiny values stalls the loop while json.loads
    runs, bounded only by the body size limit; the 100 000 keys here take a fraction of a second.)"""
    limits = ServerLimits(max_body_bytes=32 * 2**20)
    bodies = [
        (
            "/v1/infer",
            {"image": IMAGE, "task": "<OD>", **{f"k{i}": 1 for i in range(100_000)}},
            400,
            "100002 keys",
        ),
        (
            "/v1/infer",
            {"image": IMAGE, "task": "<OD>", "generation": {f"k{i}": 1 for i in range(257)}},
            400,
            "257",
        ),
        (NIM, {"messages": [{"role": "user", "content": ""}] * 300_000}, 422, "messages"),
    ]
    with (
        BackgroundServer(create_app(tiny_model, limits)) as base,
        httpx.Client(base_url=base, timeout=60) as c,
        ThreadPoolExecutor(1) as pool,
    ):
        for route, body, status, names in bodies:
            big = pool.submit(raw_post, c, route, json.dumps(body))
            while not big.done():
                t0 = time.perf_counter()
                assert c.get("/health").status_code == 200
                assert time.perf_counter() - t0 < 1.0, route
            assert_error(big.result(), status, names=names)


def test_api_key_file_and_warning(tmp_path, capsys):
    from florence2_runtime.cli import build_parser
    from florence2_runtime.server.cli import limits_from_args

    key = tmp_path / "key"
    key.write_text("s3cret\n")
    args = build_parser().parse_args(["serve", "m", "--api-key-file", str(key)])
    assert limits_from_args(args).api_key == "s3cret"
    assert capsys.readouterr().err == ""
    args = build_parser().parse_args(["serve", "m", "--api-key", "s3cret"])
    assert limits_from_args(args).api_key == "s3cret"
    assert "visible to every local user" in capsys.readouterr().err
    key.write_text("\n")
    with pytest.raises(ValueError, match="first line is empty"):
        limits_from_args(build_parser().parse_args(["serve", "m", "--api-key-file", str(key)]))


def test_the_server_returns_freed_memory_unless_the_environment_says_otherwise(monkeypatch):
    """glibc's mmap and trim thresholds are fixed when the app starts (what keeps the burst above within
    its bound); an operator's MALLOC_*_THRESHOLD_ wins."""
    import ctypes

    from florence2_runtime.server import allocator

    glibc = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert allocator.return_freed_memory() is glibc
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert allocator.return_freed_memory() is False
