"""Property-based fuzz of every route (hypothesis): zero 5xx, every error a small JSON naming its field.

Each example starts from a valid request and replaces one field (or adds one) with a generated value,
so an error must name that field. Whole bodies, content types and methods are fuzzed too. Bounded:
a fixed number of examples per route (derandomized, so CI sees the same ones), on a loopback server.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlsplit

import pytest

httpx = pytest.importorskip("httpx", reason="the server tests need httpx (pip install 'florence2-onnx[dev]')")
pytest.importorskip(
    "fastapi", reason="the server needs the 'serve' extra (pip install 'florence2-onnx[serve]')"
)
hypothesis = pytest.importorskip(
    "hypothesis", reason="the fuzz needs hypothesis (pip install 'florence2-onnx[dev]')"
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from florence2_runtime.server import ServerLimits
from florence2_runtime.server.jobs import Generation
from florence2_runtime.tasks.prompts import TASKS
from tests.helpers.images import b64
from tests.helpers.server import IMAGES, NIM, png_header_only

LIMITS = ServerLimits(
    max_body_bytes=256 * 1024,
    max_pixels=200_000,
    max_new_tokens=20,
    max_num_beams=2,
    max_text_bytes=2000,
    max_batch_size=4,
    max_wait_ms=2,
)
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


# --- values --------------------------------------------------------------------------------------------------
unicode_text = st.text(
    st.characters(codec=None, exclude_categories=()), max_size=40
)  # lone surrogates included
huge_ints = st.integers(min_value=10**20, max_value=10**600) | st.integers(
    max_value=-(10**20), min_value=-(10**600)
)
numbers = st.integers(-(10**6), 10**6) | st.floats(allow_nan=True, allow_infinity=True) | huge_ints
scalars = st.none() | st.booleans() | numbers | unicode_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(unicode_text, inner, max_size=4),
    max_leaves=12,
)
images = (
    st.sampled_from([b64(d) for d in IMAGES.values()])
    | st.sampled_from(
        [
            "",
            "@@@",
            "data:image/png;base64,",
            "data:,x",
            "https://example.com/a.png",
            "file:///etc/passwd",
            b64(b"GIF89a"),
            b64(png_header_only(5000, 5000)),
            b64(IMAGES["tall"][:300]),
            "data:image/png;base64," + b64(IMAGES["wide"]),
            "data:image/jpeg;asset_id,no-such-asset",
            "data:image/jpeg;asset_id,",
        ]
    )
    | st.binary(max_size=64).map(b64)
    | json_values
)
tasks = st.sampled_from(list(TASKS)) | st.sampled_from(["", "<od>", "OD", "<OD><OD>", "<OD>x"]) | json_values
texts = (
    st.none()
    | unicode_text
    | st.sampled_from(["<OD>", "<loc_1><loc_2><loc_3><loc_4>", "\ud800", "x" * 3000, "é" * 1500])
    | json_values
)
regions = (
    st.lists(numbers, min_size=0, max_size=6)
    | st.sampled_from([[0, 0, 10, 10], [0.1, 0.1, 0.5, 0.5]])
    | json_values
)
generations = (
    st.dictionaries(st.sampled_from(sorted(Generation.model_fields)), json_values | numbers, max_size=3)
    | st.dictionaries(unicode_text, json_values, max_size=2)
    | json_values
)
FIELDS = {
    "image": images,
    "task": tasks,
    "text": texts,
    "region": regions,
    "region_format": st.sampled_from(["pixels", "normalized", "PIXELS"]) | json_values,
    "generation": generations,
}
NAMES = {"region_format": ("region_format", "region", "normalized"), "image": ("image", "base64", "data URL")}
FAST = {"max_new_tokens": 4, "num_beams": 1}
VALID = [  # valid requests (quick ones: the fuzz is about the answers to invalid ones)
    {"image": b64(IMAGES["wide"]), "task": "<OD>", "generation": FAST},
    {
        "image": b64(IMAGES["small"]),
        "task": "<OPEN_VOCABULARY_DETECTION>",
        "text": "a cat",
        "generation": FAST,
    },
    {
        "image": b64(IMAGES["square"]),
        "task": "<REGION_TO_CATEGORY>",
        "region": [1, 2, 30, 40],
        "generation": FAST,
    },
    {"image": b64(IMAGES["tall"]), "task": "<CAPTION>", "generation": {"max_new_tokens": 3, "num_beams": 2}},
]


def check_response(r, field: str | None = None, value=None) -> None:
    """No 5xx; an error is small JSON {"error": {"kind", "message"}} that names ``field``."""
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code < 400:
        return
    assert len(r.content) < 2000, r.text[:300]
    error = r.json()["error"]
    assert isinstance(error["kind"], str) and isinstance(error["message"], str), error
    if field is None or r.status_code in (413, 415):
        return
    message = error["message"]
    named = any(n in message for n in NAMES.get(field, (field,)))
    if field == "task" and isinstance(value, str) and value in TASKS:  # a valid task whose input is now wrong
        named = value in message or "text" in message or "region" in message
    assert named, (field, error)


# --- /v1/infer ----------------------------------------------------------------------------------------------
@FUZZ
@given(base=st.sampled_from(range(len(VALID))), field=st.sampled_from(sorted(FIELDS)), data=st.data())
def test_infer_json_one_field_changed(client, base, field, data):
    value = data.draw(FIELDS[field], label=field)
    body = {**VALID[base], field: value}
    payload = json.dumps(body, allow_nan=True).encode()  # lone surrogates go out as \ud800 escapes
    check_response(
        client.post("/v1/infer", content=payload, headers={"content-type": "application/json"}), field, value
    )


@FUZZ
@given(
    base=st.sampled_from(range(len(VALID))),
    extra=unicode_text.filter(lambda k: k not in FIELDS),
    value=json_values,
)
def test_infer_json_unexpected_field(client, base, extra, value):
    r = client.post(
        "/v1/infer",
        content=json.dumps({**VALID[base], extra: value}).encode(),
        headers={"content-type": "application/json"},
    )
    check_response(r, "unexpected field" if r.status_code == 422 else None)


def _form_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@FUZZ
@given(
    base=st.sampled_from(range(len(VALID))),
    field=st.sampled_from(sorted(FIELDS)),
    data=st.data(),
    image_file=st.booleans(),
)
def test_infer_multipart_one_field_changed(client, base, field, data, image_file):
    value = data.draw(FIELDS[field], label=field)
    fields = {**VALID[base], field: value}
    files = None
    if image_file and field != "image":
        files = {"image": ("a.png", __import__("base64").b64decode(fields.pop("image")))}
    form = {
        k: _form_value(v).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        for k, v in fields.items()
    }
    check_response(client.post("/v1/infer", data=form, files=files), None)


@FUZZ
@given(
    body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
    content_type=st.sampled_from(
        [
            "application/json",
            "multipart/form-data; boundary=x",
            "text/plain",
            "",
            "application/json; charset=latin-1",
            "multipart/form-data",
        ]
    ),
)
def test_infer_any_body(client, body, content_type):
    check_response(client.post("/v1/infer", content=body, headers={"content-type": content_type}))


# --- the NVIDIA-format route --------------------------------------------------------------------------------
@FUZZ
@given(
    task=tasks.map(str),
    text=texts.map(lambda t: "" if t is None else str(t)),
    image=images.map(str),
    tag=st.sampled_from(['<img src="{}" />', "<img src='{}'>", "{}", '<img src="{}" /><img src="{}" />']),
    order=st.booleans(),
)
def test_nim_content(client, task, text, image, tag, order):
    src = image if image.startswith(("data:", "http", "file:")) else f"data:image/png;base64,{image}"
    img = tag.replace("{}", src)
    content = task + text + img if order else task + img + text
    check_response(
        client.post(
            NIM,
            content=json.dumps({"messages": [{"role": "user", "content": content}]}).encode(),
            headers={"content-type": "application/json"},
        )
    )


@FUZZ
@given(body=json_values)
def test_nim_any_json(client, body):
    check_response(
        client.post(NIM, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    )


# --- the GET routes and methods -----------------------------------------------------------------------------
# --- the NVCF asset routes -------------------------------------------------------------------------------------
path_text = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(FUZZ, max_examples=80)
@given(
    body=json_values,
    real_token=st.booleans(),
    token=path_text,
    data=st.binary(max_size=300) | st.sampled_from(list(IMAGES.values())),
    asset=path_text,
)
def test_asset_routes(client, body, real_token, token, data, asset):
    created = client.post(
        "/v2/nvcf/assets", content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    check_response(created)
    if created.status_code == 200:
        upload = urlsplit(created.json()["uploadUrl"])
        params = None if real_token else {"token": token}
        check_response(
            client.put(upload.path + ("?" + upload.query if real_token else ""), params=params, content=data)
        )
        check_response(client.delete(f"/v2/nvcf/assets/{created.json()['assetId']}"))
    check_response(
        client.put(f"/v2/nvcf/assets/{quote(asset, safe='')}/upload", params={"token": token}, content=data)
    )
    check_response(client.delete(f"/v2/nvcf/assets/{quote(asset, safe='')}"))


@settings(FUZZ, max_examples=40)
@given(
    path=st.sampled_from(
        [
            "/health",
            "/metrics",
            "/v1/infer",
            NIM,
            "/",
            "/v1",
            "/%ff",
            "/health/x",
            "/docs",
            "/openapi.json",
            "/ui/app.js",
            "/ui/%2e%2e/x",
            "/docs/static/nope",
            "/v2/nvcf/assets",
        ]
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    query=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
)
def test_routes_and_methods(client, path, method, query):
    r = client.request(
        method, path, params={"q": query}, content=b"{}" if method in ("POST", "PUT", "PATCH") else None
    )
    check_response(r)
    if r.status_code < 300:
        assert method in ("GET", "POST") and path not in ("/v1/infer", NIM, "/v1", "/%ff", "/health/x")
