"""Confidence scores through the server (issue #25): ``"scores": true`` on ``/v1/infer`` (JSON and multipart)
gives ``run(..., scores=True)``'s answers, the batcher gives the same scores whether or not a batch mixes
jobs with and without them, and NVIDIA's route carries them in ``entities``.

The server runs the trained toy model (``models/florence2-tiny-shapes``): its answers have objects.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="the server tests need httpx (pip install 'florence2-onnx[dev]')")
pytest.importorskip(
    "fastapi", reason="the server needs the 'serve' extra (pip install 'florence2-onnx[serve]')"
)

from florence2_runtime.server import ServerLimits, create_app
from florence2_runtime.server.batching import DynamicBatcher, Job
from florence2_runtime.tasks.batch import task_decoding_options
from florence2_runtime.tasks.confidence import without_scores

LIMITS = ServerLimits(max_new_tokens=64, max_batch_size=8, max_wait_ms=20)
NIM = "/v1/vlm/microsoft/florence-2"
TASKS = ["<OD>", "<CAPTION>", "<OCR_WITH_REGION>", "<REFERRING_EXPRESSION_SEGMENTATION>"]


@pytest.fixture(scope="module")
def server_app(
    shapes_model,
):  # the module's server (server_url, client: tests/conftest.py) runs the toy model
    return create_app(shapes_model, LIMITS)


@pytest.fixture(scope="module")
def samples():
    from florence2_export.toy import shapes

    rng = np.random.default_rng(5)
    found = {}
    for task in TASKS:
        sample = shapes.make_sample(task, rng)
        buf = io.BytesIO()
        sample.image.save(buf, "PNG")
        found[task] = (buf.getvalue(), sample.inputs)
    return found


def run_json(model, data: bytes, task: str, **kwargs) -> dict:
    """``run()``'s answer with the server's length cap, as it looks after a JSON round trip."""
    return json.loads(json.dumps(model.run(data, task, max_new_tokens=LIMITS.max_new_tokens, **kwargs)))


def assert_same_scores(got: dict, want: dict) -> None:
    """Answers equal, scores equal up to rounding (a batch's rows may round differently)."""
    assert got.keys() == want.keys()
    for task in want:
        assert without_scores(got[task]) == without_scores(want[task]), task
        got_scores, want_scores = got[task]["scores"], want[task]["scores"]
        assert got_scores == pytest.approx(want_scores, rel=1e-5, abs=1e-7), task


def infer(client, data: bytes, task: str, **fields):
    return client.post("/v1/infer", json={"image": base64.b64encode(data).decode(), "task": task, **fields})


def test_infer_with_scores_equals_run_with_scores(client, shapes_model, samples):
    for task, (data, inputs) in samples.items():
        r = infer(client, data, task, scores=True, **inputs)
        assert r.status_code == 200, r.text
        want = run_json(shapes_model, data, task, scores=True, **inputs)
        assert_same_scores(r.json()["result"], want)
        plain = infer(client, data, task, **inputs).json()["result"]  # without the flag: unchanged
        assert plain == run_json(shapes_model, data, task, **inputs)
    od = samples["<OD>"][0]
    assert infer(client, od, "<OD>", scores=True).json()["result"]["<OD>"]["bboxes"]  # objects were scored
    caption = infer(client, samples["<CAPTION>"][0], "<CAPTION>", scores=True).json()["result"]["<CAPTION>"]
    assert set(caption) == {"text", "scores"} and 0 < caption["scores"] <= 1


def test_several_tasks_and_multipart(client, shapes_model, samples):
    data = samples["<OD>"][0]
    r = client.post(
        "/v1/infer",
        json={"image": base64.b64encode(data).decode(), "tasks": ["<OD>", "<CAPTION>"], "scores": True},
    )
    assert r.status_code == 200, r.text
    want = json.loads(
        json.dumps(
            shapes_model.run_tasks(
                data, ["<OD>", "<CAPTION>"], scores=True, max_new_tokens=LIMITS.max_new_tokens
            )
        )
    )
    assert_same_scores(r.json()["result"], want)
    for flag, scored in (("true", True), ("on", True), ("1", True), ("false", False), ("0", False)):
        r = client.post(
            "/v1/infer", files={"image": ("x.png", data, "image/png")}, data={"task": "<OD>", "scores": flag}
        )
        assert r.status_code == 200, r.text
        assert ("scores" in r.json()["result"]["<OD>"]) is scored, flag


@pytest.mark.parametrize(
    "send",
    [
        {"json": {"scores": "yes"}},
        {"json": {"scores": 1}},
        {"data": {"scores": "maybe"}},
    ],
    ids=["json-string", "json-number", "form-word"],
)
def test_bad_scores_flag_is_422(client, samples, send):
    data = samples["<OD>"][0]
    if "json" in send:
        r = client.post(
            "/v1/infer", json={"image": base64.b64encode(data).decode(), "task": "<OD>", **send["json"]}
        )
    else:
        r = client.post(
            "/v1/infer", files={"image": ("x.png", data, "image/png")}, data={"task": "<OD>", **send["data"]}
        )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["kind"] == "invalid_request" and "scores" in error["message"]


def test_openapi_documents_scores(client):
    doc = client.get("/openapi.json").json()
    field = doc["components"]["schemas"]["InferRequest"]["properties"]["scores"]
    assert field["type"] == "boolean" and field["default"] is False and "confidence" in field["description"]
    form = doc["paths"]["/v1/infer"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "true or false" in form["schema"]["properties"]["scores"]["description"]
    hosted = doc["components"]["schemas"]["HostedRequest"]["properties"]
    assert hosted["scores"]["type"] == "boolean"


def test_batches_mixing_scored_and_plain_jobs_give_run_s_answers(shapes_model, samples):
    """Unit level: jobs with and without scores share one batch; each gets what its own run() gives."""
    from florence2_runtime.server.images import decode_for_model

    sizes: list[int] = []
    options = task_decoding_options(shapes_model, max_new_tokens=LIMITS.max_new_tokens)
    config = shapes_model.config
    jobs, wants = [], []
    for i, task in enumerate(["<OD>", "<OD>", "<CAPTION>", "<OCR_WITH_REGION>"] * 2):
        data = samples[task][0]
        image, size = decode_for_model(data, 10**8, config.image_size, config.resample)
        scored = i % 2 == 0
        jobs.append(Job(image, task, task, {}, options, size, scores=scored))
        wants.append(run_json(shapes_model, data, task, scores=scored))

    async def main():
        batcher = DynamicBatcher(shapes_model, max_batch_size=8, max_wait_ms=200, on_batch=sizes.append)
        outcomes = await asyncio.gather(*(batcher.submit(j) for j in jobs))
        await batcher.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert max(sizes) > 1 and any(o.batch_size > 1 for o in outcomes)  # scored and plain jobs shared batches
    for job, outcome, want in zip(jobs, outcomes, wants):
        got = json.loads(json.dumps(outcome.result))
        if job.scores:
            assert_same_scores(got, want)
        else:
            assert got == want, job.task


def _nim(data: bytes, task: str, **fields) -> dict:
    content = f'{task}<img src="data:image/png;base64,{base64.b64encode(data).decode()}" />'
    return {"messages": [{"role": "user", "content": content}], **fields}


def test_hosted_route_carries_scores_in_entities(client, shapes_model, samples):
    data = samples["<OD>"][0]
    want = run_json(shapes_model, data, "<OD>", scores=True)["<OD>"]
    body = client.post(NIM, json=_nim(data, "<OD>", scores=True), params={"format": "json"}).json()
    for entities in (body["entities"], body["choices"][0]["message"]["entities"]):
        assert entities["bboxes"] == want["bboxes"] and entities["labels"] == want["labels"]
        assert entities["scores"] == pytest.approx(want["scores"], rel=1e-5)
    plain = client.post(NIM, json=_nim(data, "<OD>"), params={"format": "json"}).json()
    assert "scores" not in plain["entities"]
    # the zip's overlay is drawn from the scored answer
    zipped = client.post(NIM, json=_nim(data, "<OD>", scores=True))
    assert zipped.headers["content-type"] == "application/zip"
    # a text task's format has no place for its score: the answer is the plain one
    caption = samples["<CAPTION>"][0]
    want_text = run_json(shapes_model, caption, "<CAPTION>")["<CAPTION>"]
    text = client.post(NIM, json=_nim(caption, "<CAPTION>", scores=True), params={"format": "json"}).json()
    assert text["content"] == "<CAPTION>" + want_text and text["entities"] is None
