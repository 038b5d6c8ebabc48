"""One vision encoding per image: a small LRU of ``EncodedImage`` keyed by the image bytes' SHA-256.

An agent asks several questions about one picture (a caption, then boxes, then a region); each tool
call sends the image again, and the vision encoder is most of a short call's time. The cache is bounded
twice: by entries and by the bytes of the features it holds (the least recently used go first).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from ..inputs.encoded import EncodedImage

__all__ = ["EncodingCache", "image_key"]


def image_key(data: bytes) -> str:
    """The cache key of an image file's bytes."""
    return hashlib.sha256(data).hexdigest()


class EncodingCache:
    """``get_or_encode(key, encode)``: the cached ``EncodedImage`` or ``encode()``'s, kept for next time.

    Thread-safe; ``encode`` runs outside the cache's lock (callers serialise model use themselves).
    An entry larger than ``max_bytes`` is returned but not kept.
    """

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, EncodedImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes of the features held now."""
        return self._bytes

    def get_or_encode(self, key: str, encode: Callable[[], EncodedImage]) -> EncodedImage:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        encoded = encode()
        size = encoded.features.nbytes
        if size > self.max_bytes:
            return encoded
        with self._lock:
            if key not in self._entries:
                self._entries[key] = encoded
                self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.features.nbytes
        return encoded

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
