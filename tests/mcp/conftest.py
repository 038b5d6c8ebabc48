"""Every MCP test runs with the loopback guard on (tests/helpers/loopback_guard.py)."""

from __future__ import annotations

import pytest

from tests.helpers.loopback_guard import install


@pytest.fixture(autouse=True)
def loopback_only():
    """Every connection or name lookup off loopback fails the test before a packet leaves (and fails it
    afterwards too, should the code under test swallow the error)."""
    refused: list[str] = []
    undo = install(refused.append)
    try:
        yield refused
    finally:
        undo()
    assert not refused, f"a test tried to leave loopback: {refused}"
