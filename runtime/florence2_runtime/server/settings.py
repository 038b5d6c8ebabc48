"""Server settings: request limits, batching knobs and the optional API key, in one frozen dataclass."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

API_KEY_ENV = "FLORENCE2_API_KEY"

# generation options a request may set (transformers' names); everything else is rejected with 422
ALLOWED_GENERATION_OPTIONS = frozenset(
    {
        "max_new_tokens",
        "min_new_tokens",
        "num_beams",
        "no_repeat_ngram_size",
        "length_penalty",
        "early_stopping",
    }
)


@dataclass(frozen=True)
class ServerLimits:
    """What one server accepts and how it batches. The defaults are safe for a public-facing port.

    Sizes are in bytes and pixels; times in seconds (``max_wait_ms`` in milliseconds).
    """

    max_body_bytes: int = 20 * 1024 * 1024  # whole request body (base64 inflates images by 4/3) -> 413
    max_pixels: int = 40_000_000  # width * height from the image header, checked before decoding -> 413
    max_new_tokens: int = 1024  # upper bound of generation.max_new_tokens
    max_num_beams: int = 8  # upper bound of generation.num_beams
    max_queue: int = 64  # requests waiting for the model; more -> 503 with Retry-After
    request_timeout_s: float = 120.0  # queue + inference time of one request -> 504
    max_batch_size: int = 8  # requests run through the model together; 1 disables dynamic batching
    max_wait_ms: float = 5.0  # how long a batch waits for company once the model is free
    retry_after_s: int = 1  # the Retry-After header of a 503
    api_key: str | None = field(default=None, repr=False)  # None: no authentication
    max_text_bytes: int = 8192  # UTF-8 size of a request's text, checked before any tokenising -> 422
    header_timeout_s: float = 10.0  # a connection must send a request's headers within this -> closed
    body_timeout_s: float = 60.0  # and its body within this once the headers are in -> 408
    max_connections: int = 512  # open connections; past it the oldest idle one is closed (see connections.py)
    max_concurrent_decodes: int = (
        2  # images decoded at once (each holds its full-resolution pixels meanwhile)
    )
    jpeg_draft: bool = (
        False  # decode JPEGs at a reduced scale (>= the model's size): less memory, other pixels
    )

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_pixels",
            "max_new_tokens",
            "max_num_beams",
            "max_queue",
            "max_batch_size",
            "retry_after_s",
            "max_text_bytes",
            "max_connections",
            "max_concurrent_decodes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("request_timeout_s", "max_wait_ms", "header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("request_timeout_s", "header_timeout_s", "body_timeout_s"):
            if getattr(self, name) == 0:
                raise ValueError(f"{name} must be > 0")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty (pass None to disable authentication)")


def api_key_from_env(explicit: str | None) -> str | None:
    """The API key: ``explicit`` if given, else ``$FLORENCE2_API_KEY`` if set and not empty, else None."""
    if explicit:
        return explicit
    return os.environ.get(API_KEY_ENV) or None
