"""The ``image`` argument of a tool -> the image file's bytes: a path under the allowed roots, base64, a
data URL, or (only with ``--allow-url``) an http(s) URL of a public address.

Paths: a relative path is taken from the first root; ``..`` is refused outright; symlinks are resolved
and the real file must lie under one of the roots, be a regular file and hold at most the byte cap.
Base64 is told from a path by what it decodes to: the first bytes of an image format PIL reads. Every
refusal is an :class:`ImageArgumentError` whose message starts with ``image:`` and says why.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath

from ..errors import brief
from ..inputs.images import is_url
from ..server.images import decode_base64
from ..server.problems import RequestError
from .urls import FetchError, UrlFetcher

__all__ = ["ImageArgumentError", "ImageSource"]

_BASE64 = re.compile(r"[A-Za-z0-9+/\s]+={0,2}\s*")
# The first bytes of the formats an agent sends (PIL reads more; those come as files or data URLs).
_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF
    b"MM\x00*",
    b"RIFF",  # WebP
    b"\x00\x00\x00\x0cjP  ",  # JPEG 2000
)


class ImageArgumentError(ValueError):
    """The ``image`` argument is refused; the message starts with ``image:`` and says why."""

    def __init__(self, reason: str):
        super().__init__(f"image: {reason}")


def _looks_like_base64_image(text: str) -> bool:
    """True if ``text`` is base64 whose first bytes are an image signature (a path never is)."""
    compact = "".join(text.split())
    if len(compact) < 16 or _BASE64.fullmatch(text) is None:
        return False
    try:
        head = base64.b64decode(compact[:16], validate=True)
    except (binascii.Error, ValueError):
        return False
    return head.startswith(_SIGNATURES)


@dataclass(frozen=True)
class ImageSource:
    """Reads ``image`` arguments under one policy. fetcher: None refuses URLs."""

    roots: tuple[Path, ...]
    max_bytes: int
    fetcher: UrlFetcher | None = None

    def read(self, value: str) -> bytes:
        """The image file's bytes (not decoded: the caller checks pixels from the header first)."""
        if not isinstance(value, str) or not value.strip():
            raise ImageArgumentError("empty; give a file path, base64 or a data URL")
        text = value.strip()
        if text[:5].lower() == "data:":
            return self._decoded(text)
        if is_url(text):
            return self._fetched(text)
        if _looks_like_base64_image(text):
            return self._decoded(text)
        return self._file(text)

    def _decoded(self, text: str) -> bytes:
        if len(text) > self.max_bytes * 4 // 3 + 1024:
            raise ImageArgumentError(f"the base64 data is over the {self.max_bytes}-byte image limit")
        try:
            data = decode_base64(text)
        except RequestError as e:
            raise ImageArgumentError(e.message) from None
        if len(data) > self.max_bytes:
            raise ImageArgumentError(f"the image is {len(data)} bytes; the limit is {self.max_bytes}")
        return data

    def _fetched(self, url: str) -> bytes:
        if self.fetcher is None:
            raise ImageArgumentError(
                f"URLs are not fetched by this server ({brief(url)}); give a file path, base64 or a "
                "data URL, or start it with --allow-url"
            )
        try:
            return self.fetcher.fetch(url)
        except FetchError as e:
            raise ImageArgumentError(f"{brief(url)}: {e}") from None

    def _file(self, text: str) -> bytes:
        if "\x00" in text:
            raise ImageArgumentError("a path cannot contain a NUL character")
        given = PurePath(text)
        if ".." in given.parts:
            raise ImageArgumentError(f"'..' is not allowed in a path ({brief(text)})")
        path = Path(text) if given.is_absolute() else self.roots[0] / given
        real = Path(os.path.realpath(path))  # symlinks resolved; the file need not exist yet
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            raise ImageArgumentError(
                f"{brief(text)} is outside the folders this server may read "
                f"({', '.join(str(r) for r in self.roots)}; see --allow-root)"
            )
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(real, flags)
        except FileNotFoundError:
            raise ImageArgumentError(f"no such file: {brief(text)}") from None
        except OSError as e:
            raise ImageArgumentError(f"cannot open {brief(text)} ({e.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ImageArgumentError(f"{brief(text)} is not a regular file")
            if info.st_size > self.max_bytes:
                raise ImageArgumentError(
                    f"{brief(text)} is {info.st_size} bytes; the limit is {self.max_bytes}"
                )
            with os.fdopen(fd, "rb") as f:
                fd = -1  # the file object owns it now
                data = f.read(self.max_bytes + 1)
        finally:
            if fd >= 0:
                os.close(fd)
        if len(data) > self.max_bytes:
            raise ImageArgumentError(f"{brief(text)} is over the {self.max_bytes}-byte limit")
        if not data:
            raise ImageArgumentError(f"{brief(text)} is empty")
        return data
