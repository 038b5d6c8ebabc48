"""What the server tests share: request images, a PNG bomb's header, the NVIDIA route, a slowed-down model,
and ``Florence2.run``'s answer as the server sends it."""

from __future__ import annotations

import json
import struct
import time
import zlib

from tests.helpers.images import encode, noise_image

NIM = "/v1/vlm/microsoft/florence-2"  # NVIDIA's hosted route

IMAGES = {
    name: encode(noise_image(w, h, seed), fmt)
    for name, (w, h, seed, fmt) in {
        "wide": (96, 64, 1, "PNG"),
        "tall": (48, 80, 2, "JPEG"),
        "square": (64, 64, 3, "PNG"),
        "small": (20, 30, 4, "PNG"),
    }.items()
}
PNG = IMAGES["wide"]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny IDAT: a decompression bomb's shape."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def run_json(model, data: bytes, task, text=None, region=None, **gen) -> dict:
    """``model.run``'s answer as it looks after a JSON round trip (tuples become lists)."""
    return json.loads(json.dumps(model.run(data, task, text=text, region=region, **gen)))


class SlowModel:
    """The model with ``delay`` seconds added to every batch it generates (for queue and timeout tests)."""

    def __init__(self, model, delay: float):
        self._model, self._delay = model, delay

    def __getattr__(self, name):
        return getattr(self._model, name)

    @property
    def engine(self):
        return _StartHook(self._model.engine, self.starting)

    def starting(self, text_ids, num_beams: int) -> None:
        """Called before every batch's decoding starts (text_ids [B, T])."""
        time.sleep(self._delay)


class _StartHook:
    """An engine whose ``start`` (text encoder + decoder of one batch) calls ``hook(text_ids, num_beams)``."""

    def __init__(self, engine, hook):
        self._engine, self._hook = engine, hook

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def start(self, features, text_ids, text_mask, num_beams=1):
        self._hook(text_ids, num_beams)
        return self._engine.start(features, text_ids, text_mask, num_beams)
