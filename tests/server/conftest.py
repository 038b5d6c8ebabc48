"""The server tests' app, loopback server and client: one of each per test module.

A module sets ``LIMITS`` (a ``ServerLimits``; default ``ServerLimits()``) and ``CLIENT_HEADERS`` (e.g. its
API key) to configure them; tests that need another configuration start their own short-lived server.
The model is the committed tiny one (``tiny_model``), so these tests need no torch.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def server_app(request, tiny_model):
    """``create_app(tiny_model, LIMITS)`` with the test module's ``LIMITS`` (default: ServerLimits())."""
    from florence2_runtime.server import ServerLimits, create_app

    return create_app(tiny_model, getattr(request.module, "LIMITS", None) or ServerLimits())


@pytest.fixture(scope="module")
def server_url(server_app):
    """``server_app`` served by uvicorn on a free loopback port, for the whole module."""
    from florence2_runtime.server.background import BackgroundServer

    with BackgroundServer(server_app) as url:
        yield url


@pytest.fixture(scope="module")
def client(request, server_url):
    """An httpx client of ``server_url``, sending the test module's ``CLIENT_HEADERS`` (e.g. its API key)."""
    httpx = pytest.importorskip(
        "httpx", reason="the server tests need httpx (pip install 'florence2-onnx[dev]')"
    )
    headers = getattr(request.module, "CLIENT_HEADERS", None)
    with httpx.Client(base_url=server_url, timeout=60, headers=headers) as c:
        yield c
