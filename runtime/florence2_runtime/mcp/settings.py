"""What ``florence2 mcp`` accepts: image roots, URL fetching, size limits and the encoding cache, in one
frozen dataclass. Sizes are bytes and pixels, times seconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True)
class McpSettings:
    """roots: folders whose files the tools may read (resolved, symlinks included); allow_url: fetch
    http(s) URLs of public addresses; the limits match ``florence2 serve``'s."""

    roots: tuple[Path, ...] = field(default_factory=lambda: (Path.cwd().resolve(),))
    allow_url: bool = False
    max_image_bytes: int = 20 * MIB  # an image file, a decoded base64 string or a download
    max_pixels: int = 40_000_000  # width * height from the image header, checked before decoding
    fetch_timeout_s: float = 10.0  # one URL, redirects included
    max_redirects: int = 3
    cache_images: int = 16  # EncodedImage entries kept (least recently used out first)
    cache_bytes: int = 256 * MIB  # their vision features together
    annotate_max_side: int = 2048  # the drawn answer is scaled down to fit this (pixels)

    def __post_init__(self) -> None:
        if not self.roots:
            raise ValueError("give at least one root folder for images (--allow-root)")
        roots = []
        for root in self.roots:
            resolved = Path(root).resolve()
            if not resolved.is_dir():
                raise ValueError(f"--allow-root {root}: not a folder")
            roots.append(resolved)
        object.__setattr__(self, "roots", tuple(roots))
        for name in ("max_image_bytes", "max_pixels", "cache_images", "cache_bytes", "annotate_max_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if (
            isinstance(self.max_redirects, bool)
            or not isinstance(self.max_redirects, int)
            or self.max_redirects < 0
        ):
            raise ValueError(f"max_redirects must be an integer >= 0, got {self.max_redirects!r}")
        if not self.fetch_timeout_s > 0:
            raise ValueError(f"fetch_timeout_s must be > 0, got {self.fetch_timeout_s!r}")
