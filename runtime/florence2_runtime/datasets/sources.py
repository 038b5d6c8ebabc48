"""What to label: the pictures of a SOURCE, one :class:`Item` each, in a fixed order.

A SOURCE is a folder (searched recursively, sorted), a text file listing paths (one a line, relative to
the list's folder; blank lines and ``#`` comments skipped), a PDF or a video. Inside a folder or a list,
PDFs and videos count too. Each picture has a stable key: the file's path relative to the folder (or as
listed), ``doc.pdf#page=2`` for a PDF page (from 1), ``clip.mp4#t=3.000`` for the video frame shown at
3 s (the first frame at or after each multiple of ``every`` seconds).

:func:`iter_pictures` yields every picture in order with its image, or the error that kept it from being
read, or ``None`` for a key the caller says it does not want (a resumed run skips what is done without
decoding it; a video is still decoded up to its last wanted frame). A file that cannot be opened at all
(a corrupt PDF or video) is one error item keyed by the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import require

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
PDF_EXTENSIONS = frozenset({".pdf"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
LIST_EXTENSIONS = frozenset({".txt", ".lst"})
EXIF_ORIENTATION = 0x0112
# (Pillow format, file suffix) of the files a dataset may keep byte for byte
_STORED_AS = frozenset({("JPEG", ".jpg"), ("JPEG", ".jpeg"), ("PNG", ".png")})
EXTRA = "label"


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: its path, its key (relative path) and its kind (image, pdf or video)."""

    path: Path
    key: str
    kind: str


@dataclass(frozen=True)
class Item:
    """One picture: its key, its file and where in the file (``page`` from 0, ``time`` in seconds)."""

    key: str
    file: SourceFile
    page: int | None = None
    time: float | None = None


@dataclass(frozen=True)
class Picture:
    """A decoded picture: RGB ``image`` (EXIF orientation applied) and whether the file's own bytes are
    that image (a JPEG or PNG shown as stored), so the dataset can keep the file as it is."""

    image: Image.Image
    as_stored: bool = False


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in PDF_EXTENSIONS:
        return "pdf"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def list_source(source: str | os.PathLike, exclude: Path | None = None) -> list[SourceFile]:
    """The files of ``source`` in key order; ``exclude``: a folder left out (the dataset being written).

    ValueError when ``source`` does not exist, is of an unknown kind, or holds nothing to label."""
    path = Path(source)
    if not path.exists():
        raise ValueError(f"source not found: {path}")
    if path.is_dir():
        files = _walk(path, exclude.resolve() if exclude is not None else None)
    elif path.suffix.lower() in LIST_EXTENSIONS:
        files = _read_list(path)
    elif (kind := _kind(path)) is not None:
        files = [SourceFile(path, path.name, kind)]
    else:
        raise ValueError(
            f"{path}: not a folder, a list of paths (.txt), an image, a PDF or a video "
            f"(images: {', '.join(sorted(IMAGE_EXTENSIONS))}; videos: {', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    if not files:
        raise ValueError(f"{path}: no images, PDFs or videos found")
    return files


def _walk(root: Path, exclude: Path | None) -> list[SourceFile]:
    found = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if exclude is None or (here / d).resolve() != exclude)
        for name in names:
            path = here / name
            kind = _kind(path)
            if kind is not None:
                found.append(SourceFile(path, path.relative_to(root).as_posix(), kind))
    return sorted(found, key=lambda f: f.key)


def _read_list(listing: Path) -> list[SourceFile]:
    files, seen = [], set()
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry) if Path(entry).is_absolute() else listing.parent / entry
        kind = _kind(path)
        if kind is None:
            raise ValueError(f"{listing}:{number}: not an image, a PDF or a video: {entry}")
        if entry not in seen:
            seen.add(entry)
            files.append(SourceFile(path, Path(entry).as_posix(), kind))
    return files


# --- counting (for the progress bar) -------------------------------------------------------------------
def count_pictures(files: list[SourceFile], every: float) -> int:
    """How many pictures the files hold: exact for images and PDFs, estimated for videos (duration)."""
    total = 0
    for f in files:
        try:
            if f.kind == "image":
                total += 1
            elif f.kind == "pdf":
                total += _pdf_pages(f.path)
            else:
                total += _video_estimate(f.path, every)
        except Exception:  # unreadable: counted as the one error it will give
            total += 1
    return total


def _pdf_pages(path: Path) -> int:
    pdfium = require("pypdfium2", EXTRA, "Labelling PDFs")
    document = pdfium.PdfDocument(str(path))
    try:
        return len(document)
    finally:
        document.close()


def _video_estimate(path: Path, every: float) -> int:
    av = require("av", EXTRA, "Labelling videos")
    with av.open(str(path)) as container:
        seconds = (container.duration or 0) / 1_000_000  # av.time_base: microseconds
    return max(1, int(seconds / every) + 1) if seconds else 1


# --- decoding --------------------------------------------------------------------------------------------
Wanted = Callable[[str], bool]
Read = tuple[Item, "Picture | Exception | None"]


def iter_pictures(
    files: list[SourceFile], wanted: Wanted, every: float = 1.0, dpi: float = 150
) -> Iterator[Read]:
    """Every picture of ``files`` in order: (item, picture), (item, the exception that stopped it) or
    (item, None) when ``wanted(item.key)`` is false. PDF pages are rendered at ``dpi``."""
    for f in files:
        if f.kind == "image":
            item = Item(f.key, f)
            yield item, (read_image(f.path) if wanted(item.key) else None)
        elif f.kind == "pdf":
            yield from _pdf_pictures(f, wanted, dpi)
        else:
            yield from _video_pictures(f, wanted, every)


def read_image(path: Path) -> Picture | Exception:
    """An image file as a :class:`Picture`, or the ValueError that says why it cannot be read."""
    try:
        with Image.open(path) as im:
            im.load()
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            suffix = path.suffix.lower()
            named_as_is = (im.format, suffix) in _STORED_AS
            stored = named_as_is and orientation == 1 and im.mode in ("RGB", "L")
            image = ImageOps.exif_transpose(im).convert("RGB")
    except UnidentifiedImageError:
        return ValueError("cannot decode the image (not a format Pillow can read)")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return ValueError(f"cannot decode the image ({e})")
    if image.width == 0 or image.height == 0:
        return ValueError("the image is empty (0 pixels)")
    return Picture(image, as_stored=stored)


def _pdf_pictures(f: SourceFile, wanted: Wanted, dpi: float) -> Iterator[Read]:
    pdfium = require("pypdfium2", EXTRA, "Labelling PDFs")
    try:
        document = pdfium.PdfDocument(str(f.path))
    except Exception as e:  # pypdfium2 raises PdfiumError (a RuntimeError) for a damaged or locked file
        yield Item(f.key, f), ValueError(f"cannot open the PDF ({e})")
        return
    try:
        if len(document) == 0:
            yield Item(f.key, f), ValueError("the PDF has no pages")
        for index in range(len(document)):
            item = Item(f"{f.key}#page={index + 1}", f, page=index)
            if not wanted(item.key):
                yield item, None
                continue
            try:
                page = document[index]
                image = page.render(scale=dpi / 72).to_pil().convert("RGB")
                page.close()
            except Exception as e:
                yield item, ValueError(f"cannot render page {index + 1} ({e})")
                continue
            yield item, Picture(image)
    finally:
        document.close()


def frame_key(key: str, seconds: float) -> str:
    """The key of the video frame sampled at ``seconds``: ``clip.mp4#t=3.000``."""
    return f"{key}#t={seconds:.3f}"


def _video_pictures(f: SourceFile, wanted: Wanted, every: float) -> Iterator[Read]:
    """One frame per multiple of ``every`` seconds: the first decoded frame at or after it (within half a
    frame), keyed by that multiple; multiples that fall between two frames of a slow video are passed."""
    av = require("av", EXTRA, "Labelling videos")
    try:
        container = av.open(str(f.path))
        stream = container.streams.video[0]
    except Exception as e:  # av.error.FFmpegError subclasses; IndexError: no video stream
        yield Item(f.key, f), ValueError(f"cannot open the video ({e})")
        return
    half_frame = 0.5 / float(stream.average_rate) if stream.average_rate else 0.0
    next_step, sampled = 0, 0
    try:
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            step = math.floor((frame.time + half_frame) / every)
            if step < next_step:
                continue
            next_step = step + 1
            sampled += 1
            item = Item(frame_key(f.key, step * every), f, time=step * every)
            yield item, (Picture(frame.to_image().convert("RGB")) if wanted(item.key) else None)
    except Exception as e:  # a damaged stream: the frames decoded so far stay, the rest is one error
        yield Item(f.key, f), ValueError(f"decoding stopped after {sampled} frames ({e})")
        return
    finally:
        container.close()
    if sampled == 0:
        yield Item(f.key, f), ValueError("the video has no decodable frames")
