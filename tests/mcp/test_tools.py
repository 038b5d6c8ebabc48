"""``florence2 mcp`` with the MCP SDK's own client, over stdio (a subprocess) and streamable HTTP.

Every tool is called on the trained toy model (``shapes_model``'s folder) and its structured answer
compared with ``Florence2.run()`` (``detect_objects`` for detection by class names) on the same file.
Bad input of every kind is an ``isError`` result naming the argument, and the next call still answers.
Traffic stays on loopback: ``loopback_guard`` in this process and, through ``python -c``, in the stdio
server's; URL tools here fetch through a stub resolver and a connector that serves from loopback.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

mcp = pytest.importorskip("mcp")
httpx2 = pytest.importorskip("httpx2")

import anyio
import uvicorn
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

from florence2_export.toy.shapes import make_shapes_scene, make_words_scene
from florence2_runtime import Florence2Result
from florence2_runtime.errors import install_hint
from florence2_runtime.mcp.app import create_server, http_app
from florence2_runtime.mcp.settings import McpSettings
from florence2_runtime.mcp.tools import TOOL_NAMES, Florence2Tools
from tests.helpers.loopback_guard import PUBLIC_IP, ImageServer, StubNetwork
from tests.helpers.paths import ROOT

KEY = "test-key-0123"
REGION = [20.0, 24.0, 120.0, 130.0]

# (tool, arguments besides image, image name, what run() is given: (task, text, region) or classes)
CASES = [
    ("caption", {}, "shapes.png", ("<CAPTION>", None, None)),
    ("caption", {"detail": "detailed"}, "shapes.png", ("<DETAILED_CAPTION>", None, None)),
    ("caption", {"detail": "paragraph"}, "shapes.png", ("<MORE_DETAILED_CAPTION>", None, None)),
    ("detect", {}, "shapes.png", ("<OD>", None, None)),
    ("detect", {"classes": ["circle", "star"]}, "shapes.png", ["circle", "star"]),
    ("ocr", {}, "words.png", ("<OCR>", None, None)),
    ("ocr", {"with_regions": True}, "words.png", ("<OCR_WITH_REGION>", None, None)),
    (
        "ground",
        {"phrase": "a circle and a star"},
        "shapes.png",
        ("<CAPTION_TO_PHRASE_GROUNDING>", "a circle and a star", None),
    ),
    (
        "segment",
        {"expression": "the star"},
        "shapes.png",
        ("<REFERRING_EXPRESSION_SEGMENTATION>", "the star", None),
    ),
    ("segment", {"region": REGION}, "shapes.png", ("<REGION_TO_SEGMENTATION>", None, REGION)),
    (
        "describe_region",
        {"region": REGION, "what": "category"},
        "shapes.png",
        ("<REGION_TO_CATEGORY>", None, REGION),
    ),
    ("describe_region", {"region": REGION}, "shapes.png", ("<REGION_TO_DESCRIPTION>", None, REGION)),
    ("describe_region", {"region": REGION, "what": "text"}, "words.png", ("<REGION_TO_OCR>", None, REGION)),
    ("run_task", {"task": "<DENSE_REGION_CAPTION>"}, "shapes.png", ("<DENSE_REGION_CAPTION>", None, None)),
    ("run_task", {"task": "region_proposal"}, "shapes.png", ("<REGION_PROPOSAL>", None, None)),
    (
        "run_task",
        {"task": "<OPEN_VOCABULARY_DETECTION>", "text": "circle"},
        "shapes.png",
        ("<OPEN_VOCABULARY_DETECTION>", "circle", None),
    ),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path]:
    """(root, outside): a root with a shapes and a words picture, a corrupt file and an escaping symlink."""
    base = tmp_path_factory.mktemp("mcp")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    make_shapes_scene(np.random.default_rng(3), size=160).image.save(root / "shapes.png")
    make_words_scene(np.random.default_rng(4), size=160).image.save(root / "words.png")
    (root / "corrupt.png").write_bytes((root / "shapes.png").read_bytes()[:200])  # a truncated PNG
    make_shapes_scene(np.random.default_rng(5), size=96).image.save(outside / "secret.png")
    (root / "escape.png").symlink_to(outside / "secret.png")
    return root, outside


def expected(model, path: Path, given) -> dict:
    """What the tool must answer: run()'s answer with scores as a Florence2Result's JSON, without its
    version, with the scores of its objects (and text)."""
    if isinstance(given, list):
        result = model.detect_objects(str(path), classes=given, scores=True)
    else:
        task, text, region = given
        with Image.open(path) as im:
            size = im.size
        result = Florence2Result.from_dict(model.run(str(path), task, text, region, scores=True), size)
    answer = result.to_json_dict()
    del answer["version"]
    answer["scores"] = list(result.scores)
    return answer


async def check_every_tool(client, model, root: Path) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert sorted(tools) == sorted(TOOL_NAMES)
    for name, tool in tools.items():
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", name
        assert tool.description, name
        if name != "list_tasks":
            assert "image" in tool.input_schema["required"], name
    for name, arguments, image, given in CASES:
        result = await client.call_tool(name, {"image": image, **arguments})
        assert not result.is_error, (name, arguments, result.content)
        want = expected(model, root / image, given)
        assert result.structured_content == want, (name, arguments)
        summary = result.content[0]
        assert summary.type == "text" and summary.text.startswith(want["task"]) and "\n" not in summary.text
    listed = await client.call_tool("list_tasks", {})
    tasks = listed.structured_content["tasks"]
    assert len(tasks) == 15 and {t["input"] for t in tasks} == {"none", "text", "region"}
    assert {t["tool"] for t in tasks} <= set(TOOL_NAMES)


async def check_errors(client, root: Path, outside: Path, url_to_loopback: str) -> None:
    """Each bad input is an isError result naming the argument and the reason; the next call answers."""
    bad = [
        ("caption", {"image": str(outside / "secret.png")}, "image: ", "outside the folders"),
        ("caption", {"image": "../outside/secret.png"}, "image: ", "'..' is not allowed"),
        ("caption", {"image": "escape.png"}, "image: ", "outside the folders"),  # a symlink out of the root
        ("caption", {"image": url_to_loopback}, "image: ", "loopback address"),
        ("caption", {"image": "corrupt.png"}, "image: ", "corrupt"),
        ("caption", {"image": "missing.png"}, "image: ", "no such file"),
        ("caption", {"image": "data:image/png;base64,!!!"}, "image: ", "base64"),
        ("run_task", {"image": "shapes.png", "task": "<FOO>"}, "task: ", "unknown task"),
        ("run_task", {"image": "shapes.png", "task": "<OD>", "text": "x"}, "<OD>", "takes no input"),
        ("describe_region", {"image": "shapes.png", "region": [1, 2, 3]}, "region", "at least 4 items"),
        ("describe_region", {"image": "shapes.png", "region": [100, 100, 10, 10]}, "region", ""),
        ("segment", {"image": "shapes.png"}, "expression, region: ", "exactly one"),
        ("ground", {"image": "shapes.png", "phrase": "  "}, "phrase: ", "empty"),
        ("caption", {"image": "shapes.png", "detail": "long"}, "detail", "brief"),
        ("detect", {"image": "shapes.png", "classes": ["circle", ""]}, "classes: ", "non-empty"),
    ]
    for name, arguments, names, reason in bad:
        result = await client.call_tool(name, arguments)
        assert result.is_error, (name, arguments)
        text = result.content[0].text
        assert names in text and reason in text, (name, arguments, text)
        after = await client.call_tool("caption", {"image": "shapes.png"})
        assert not after.is_error and after.structured_content["task"] == "<CAPTION>"


# --- stdio: the command as an agent's client starts it -------------------------------------------------
BOOT = (
    "import sys; from tests.helpers import loopback_guard\n"
    "loopback_guard.install_from_env()\n"
    "from florence2_runtime.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _env(guard_log: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "runtime"), str(ROOT / "export"), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path, "LOOPBACK_GUARD_LOG": str(guard_log), **extra}


@pytest.mark.slow
def test_stdio_every_tool_answers_as_run_and_bad_input_is_a_tool_error(
    shapes_onnx_folder, shapes_model, images, tmp_path
):
    root, outside = images
    guard_log = tmp_path / "guard.log"
    guard_log.touch()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-c", BOOT, "mcp", str(shapes_onnx_folder), "--allow-root", str(root), "--allow-url"],
        env=_env(guard_log),
        cwd=str(tmp_path),
    )

    async def session():
        async with Client(params, read_timeout_seconds=120) as client:
            await check_every_tool(client, shapes_model, root)
            await check_errors(client, root, outside, "http://127.0.0.1:9/a.png")

    anyio.run(session)
    assert guard_log.read_text() == "", "the stdio server tried to leave loopback"


# --- streamable HTTP, in this process: injected URL fetching, counted encodings --------------------------
@contextlib.contextmanager
def serving(app):
    """``app`` on a free loopback port with uvicorn in a thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def authorised(url: str):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=httpx2.Timeout(120))
    return http, streamable_http_client(f"{url}/mcp", http_client=http)


@pytest.fixture
def http_server(shapes_model, images):
    """(base URL, tools, stub network, image server) for one in-process HTTP server with an API key."""
    root, _ = images
    with ImageServer() as web:
        net = StubNetwork(web.port, {"images.example": [PUBLIC_IP], "intranet.example": ["10.0.0.7"]})
        settings = McpSettings(roots=(root,), allow_url=True)
        tools = Florence2Tools(shapes_model, settings, net.fetcher(max_bytes=settings.max_image_bytes))
        app = http_app(
            create_server(tools), host="127.0.0.1", api_key=KEY, max_image_bytes=settings.max_image_bytes
        )
        with serving(app) as url:
            yield url, tools, net, web


def test_http_needs_the_api_key(http_server):
    url, *_ = http_server
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"X-API-Key": KEY}):
        r = httpx2.post(f"{url}/mcp", json=hello, headers=headers, timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
        assert r.json()["error"]["kind"] == "unauthorized"


@pytest.mark.slow
def test_http_every_tool_answers_as_run_and_bad_input_is_a_tool_error(http_server, shapes_model, images):
    url, *_ = http_server
    root, outside = images

    async def session():
        http, transport = authorised(url)
        async with http, Client(transport) as client:
            await check_every_tool(client, shapes_model, root)
            await check_errors(client, root, outside, f"{url}/mcp")

    anyio.run(session)


def test_http_urls_are_fetched_only_from_public_addresses(http_server, shapes_model, images):
    url, _, net, web = http_server
    root, _ = images
    web.serve_bytes("/shapes.png", (root / "shapes.png").read_bytes())
    web.redirect("/to-private", "http://intranet.example/shapes.png")
    web.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")
    web.redirect("/to-public", "/shapes.png")
    want = expected(shapes_model, root / "shapes.png", ("<OD>", None, None))

    async def session():
        http, transport = authorised(url)
        async with http, Client(transport) as client:
            for image in ("http://images.example/shapes.png", "http://images.example/to-public"):
                result = await client.call_tool("detect", {"image": image})
                assert not result.is_error and result.structured_content == want, result.content
            for image, reason in [
                ("http://intranet.example/shapes.png", "intranet.example (10.0.0.7): a private address"),
                ("http://images.example/to-private", "a private address"),
                ("http://images.example/to-metadata", "169.254.169.254: a cloud metadata address"),
                (f"http://127.0.0.1:{web.port}/shapes.png", "a loopback address"),
                ("http://[::ffff:127.0.0.1]/shapes.png", "loopback address inside an IPv6 address"),
                ("ftp://images.example/shapes.png", "only http and https"),
            ]:
                result = await client.call_tool("detect", {"image": image})
                assert result.is_error and "image: " in result.content[0].text, image
                assert reason in result.content[0].text, (image, result.content[0].text)

    anyio.run(session)
    assert {ip for ip, _ in net.connections} == {PUBLIC_IP}  # only ever the checked public address


def test_one_encoding_per_image_across_tools_and_forms(http_server, shapes_model, images, monkeypatch):
    url, tools, _, web = http_server
    root, _ = images
    data = (root / "shapes.png").read_bytes()
    web.serve_bytes("/shapes.png", data)
    encodes = []
    original = shapes_model.engine.encode_images
    monkeypatch.setattr(
        shapes_model.engine, "encode_images", lambda *a, **k: encodes.append(1) or original(*a, **k)
    )
    as_base64 = base64.b64encode(data).decode()
    calls = [
        ("caption", {"image": "shapes.png"}),
        ("detect", {"image": str(root / "shapes.png")}),
        ("ocr", {"image": as_base64}),
        ("describe_region", {"image": "data:image/png;base64," + as_base64, "region": REGION}),
        ("segment", {"image": "http://images.example/shapes.png", "expression": "the star"}),
        ("detect", {"image": "shapes.png", "classes": ["circle", "star", "square"]}),
    ]

    async def session():
        http, transport = authorised(url)
        async with http, Client(transport) as client:
            for name, arguments in calls:
                result = await client.call_tool(name, arguments)
                assert not result.is_error, (name, result.content)
            assert len(encodes) == 1  # six tools, four forms of one image: one vision encoding
            result = await client.call_tool("caption", {"image": "words.png"})
            assert not result.is_error and len(encodes) == 2

    anyio.run(session)
    assert tools.cache.hits == 5 and tools.cache.misses == 2


def test_annotate_adds_the_drawn_answer_as_a_png(http_server, shapes_model, images):
    url, *_ = http_server
    root, _ = images

    async def session():
        http, transport = authorised(url)
        async with http, Client(transport) as client:
            result = await client.call_tool("detect", {"image": "shapes.png", "annotate": True})
            assert not result.is_error and [c.type for c in result.content] == ["text", "image"]
            picture = result.content[1]
            assert picture.mime_type == "image/png"
            with Image.open(io.BytesIO(base64.b64decode(picture.data))) as drawn:
                assert drawn.format == "PNG" and drawn.size == (160, 160)
                original = np.asarray(Image.open(root / "shapes.png").convert("RGB"))
                assert (np.asarray(drawn.convert("RGB")) != original).any()  # something was drawn

    anyio.run(session)


# --- the command -----------------------------------------------------------------------------------------
def _florence2(*args: str, block_mcp: bool = False, **env: str) -> subprocess.CompletedProcess:
    boot = "import sys\n" + ("sys.modules['mcp'] = None\n" if block_mcp else "") + BOOT.split("\n", 2)[2]
    return subprocess.run(
        [sys.executable, "-c", boot, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(Path(os.devnull), **env),
    )


def test_without_the_sdk_the_command_names_the_extra(tmp_path):
    out = _florence2("mcp", str(tmp_path), block_mcp=True)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and install_hint("mcp") in lines[0], out.stderr


@pytest.mark.slow
def test_bad_options_are_one_line_and_exit_2(tmp_path):
    for args, message in [
        (("--api-key", "k"), "only apply with --http"),
        (("--allow-root", str(tmp_path / "nope")), "not a folder"),
        (("--max-image-mb", "0"), "must be > 0"),
        (("--http", "--port", "70000"), "port number"),
    ]:
        out = _florence2("mcp", str(tmp_path), *args)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_the_http_command_takes_the_key_from_the_environment(shapes_onnx_folder, images, tmp_path):
    root, _ = images
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    guard_log = tmp_path / "guard.log"
    guard_log.touch()
    args = [
        "-c",
        BOOT,
        "mcp",
        str(shapes_onnx_folder),
        "--http",
        "--port",
        str(port),
        "--allow-root",
        str(root),
    ]
    process = subprocess.Popen(
        [sys.executable, *args],
        env=_env(guard_log, FLORENCE2_API_KEY=KEY),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx2.get(f"{url}/mcp", timeout=5).status_code == 401:
                    break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)

        async def session():
            http, transport = authorised(url)
            async with http, Client(transport) as client:
                assert sorted(t.name for t in (await client.list_tools()).tools) == sorted(TOOL_NAMES)
                result = await client.call_tool("caption", {"image": "shapes.png"})
                assert not result.is_error and result.structured_content["task"] == "<CAPTION>"

        anyio.run(session)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert guard_log.read_text() == ""
