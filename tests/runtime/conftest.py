"""Fixtures of the runtime tests alone; the committed model folders are in ``tests/conftest.py``."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bound_model(tiny_folder):
    """The committed tiny model on the IO-binding path (device-resident K/V; here on the CPU provider)."""
    from florence2_runtime import Florence2

    return Florence2.from_pretrained(tiny_folder, io_binding=True)
