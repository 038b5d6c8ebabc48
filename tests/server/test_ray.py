"""Ray Serve: a local Ray instance, two replicas of the app, requests through Ray's HTTP proxy."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx", reason="the server tests need httpx (pip install 'florence2-onnx[dev]')")
pytest.importorskip("fastapi", reason="the server needs the 'serve' extra")
ray = pytest.importorskip("ray", reason="Ray Serve needs the 'ray' extra (pip install 'florence2-onnx[ray]')")
serve = pytest.importorskip("ray.serve", reason="Ray Serve needs the 'ray' extra")

from florence2_runtime.server import ServerLimits
from florence2_runtime.server.background import free_port
from florence2_runtime.server.ray_app import DEPLOYMENT_NAME, RaySettings, start
from tests.helpers.images import encode, noise_image


@pytest.fixture(scope="module")
def ray_url(tiny_folder):
    port = free_port()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 1024 * 1024,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        start(
            tiny_folder,
            ServerLimits(max_batch_size=4, max_wait_ms=10),
            RaySettings(replicas=2, num_cpus=0.5),
            port=port,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Ray Serve did not come up")
            time.sleep(0.5)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.slow
def test_two_replicas_answer_like_run(ray_url, tiny_model):
    status = serve.status().applications[DEPLOYMENT_NAME]
    replicas = status.deployments[DEPLOYMENT_NAME].replica_states
    assert replicas.get("RUNNING") == 2, replicas
    images = [encode(noise_image(40 + 8 * i, 50 - 4 * i, i)) for i in range(4)]
    jobs = [(images[i % 4], ("<OD>", "<CAPTION>", "<REGION_PROPOSAL>")[i % 3]) for i in range(16)]
    with httpx.Client(base_url=ray_url, timeout=60) as c, ThreadPoolExecutor(8) as pool:
        rs = list(
            pool.map(
                lambda j: c.post(
                    "/v1/infer",
                    json={
                        "image": base64.b64encode(j[0]).decode(),
                        "task": j[1],
                        "generation": {"max_new_tokens": 12},
                    },
                ),
                jobs,
            )
        )
        for (image, task), r in zip(jobs, rs):
            assert r.status_code == 200, r.text
            want = json.loads(json.dumps(tiny_model.run(image, task, max_new_tokens=12)))
            assert r.json()["result"] == want
        scored = c.post(
            "/v1/infer", json={"image": base64.b64encode(images[1]).decode(), "task": "<OD>", "scores": True}
        )
        want = json.loads(json.dumps(tiny_model.run(images[1], "<OD>", scores=True)))
        assert scored.json()["result"]["<OD>"]["scores"] == pytest.approx(want["<OD>"]["scores"], rel=1e-5)
        bad = c.post("/v1/infer", json={"image": "???", "task": "<OD>"})
        assert bad.status_code == 400 and bad.json()["error"]["kind"] == "invalid_base64"
        nim = c.post(
            "/v1/vlm/microsoft/florence-2",
            json={
                "messages": [
                    {
                        "role": "user",
                        "content": (
                            f'<CAPTION><img src="data:image/png;base64,{base64.b64encode(images[0]).decode()}" />'
                        ),
                    }
                ]
            },
            headers={"Accept": "application/json"},
        )
        assert nim.status_code == 200
        assert nim.json()["content"] == "<CAPTION>" + tiny_model.run(images[0], "<CAPTION>")["<CAPTION>"]


def test_deployment_options():
    limits = ServerLimits(max_queue=10, max_batch_size=4)
    fixed = RaySettings(replicas=3, num_cpus=2, num_gpus=0.5).deployment_options(limits)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.5}
    assert fixed["max_ongoing_requests"] == 14  # room for a full batch plus the app's own queue
    auto = RaySettings(min_replicas=2, max_replicas=6, target_ongoing_requests=3).deployment_options(limits)
    assert "num_replicas" not in auto
    assert auto["autoscaling_config"] == {"min_replicas": 2, "max_replicas": 6, "target_ongoing_requests": 3}
    for options in (fixed, auto):  # Ray accepts these options as they are
        assert serve.deployment(**options)(type("Probe", (), {"__call__": lambda self: None})) is not None
