"""The output folder of ``florence2 label``: its settings, the journal of labelled images, the error log.

``DIR/florence2-label.json`` holds what decides the labels (model, source, task, classes, format, splits,
seed, video and PDF sampling, generation options). ``DIR/journal.jsonl`` gets one JSON line per labelled
image (:class:`Record`: its key, its image file in the dataset, size and detections), appended and fsynced
once per batch after the batch's image files are on disk: a crash or a kill loses at most the batch in
flight, and a rerun with the same settings skips every key in the journal. A torn last line (a kill in
the middle of a write) is cut off when the folder is opened again. ``DIR/errors.jsonl`` lists the pictures
that could not be read or labelled, with the reason; a rerun tries them again (the log is started afresh).

:meth:`OutputFolder.open` refuses a folder that holds anything else (unless it is empty), a dataset
labelled with other settings (unless ``overwrite``: then what the earlier run wrote is removed first), and
a folder another process is labelling (an advisory ``flock`` on the folder, released when that process
ends, however it ends).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .detections import Detection

SETTINGS_FILE = "florence2-label.json"
JOURNAL_FILE = "journal.jsonl"
ERRORS_FILE = "errors.jsonl"
SETTINGS_VERSION = 1

try:  # POSIX: an advisory lock the kernel drops when the process dies
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None  # type: ignore[assignment]  # the lock is skipped where fcntl does not exist


@dataclass(frozen=True)
class Record:
    """One labelled image: ``file`` is its image in the dataset, relative to the output folder."""

    key: str
    file: str
    split: str
    size: tuple[int, int]
    detections: tuple[Detection, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "file": self.file,
                "split": self.split,
                "size": list(self.size),
                "detections": [d.to_json() for d in self.detections],
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Record:
        width, height = d["size"]
        return cls(
            d["key"],
            d["file"],
            d["split"],
            (int(width), int(height)),
            tuple(Detection.from_json(x) for x in d["detections"]),
        )


class OutputFolder:
    """An opened output folder: the journal's records so far, appending records and errors."""

    def __init__(self, root: Path, settings: Mapping[str, Any], records: dict[str, Record]):
        self.root = root
        self.settings = dict(settings)
        self.records = records  # key -> Record, in journal order
        self._journal: IO[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._lock_fd: int | None = None

    @classmethod
    def open(
        cls, root: str | os.PathLike, settings: Mapping[str, Any], overwrite: bool = False
    ) -> OutputFolder:
        """Create, resume or (``overwrite``) restart the dataset in ``root``; ValueError says why not."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise ValueError(f"--out {root} is a file, not a folder")
        root.mkdir(parents=True, exist_ok=True)
        folder = cls(root, {"version": SETTINGS_VERSION, **dict(settings)}, {})
        folder._lock()
        try:
            folder._prepare(overwrite)
        except BaseException:
            folder.close()
            raise
        return folder

    def _lock(self) -> None:
        """Hold an exclusive advisory lock on the folder itself for as long as this object is open."""
        if fcntl is None:  # pragma: no cover - no flock (Windows): two runs on one folder are not stopped
            return
        self._lock_fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ValueError(f"{self.root} is being labelled by another process right now") from None

    def _prepare(self, overwrite: bool) -> None:
        root, wanted = self.root, self.settings
        settings_path = root / SETTINGS_FILE
        earlier = check_output(root, wanted, overwrite)
        if earlier is not None and overwrite:
            _remove_dataset(root, earlier)
        if not settings_path.is_file():
            _write_atomic(settings_path, json.dumps(wanted, indent=2, ensure_ascii=False) + "\n")
        self.records = _read_journal(root / JOURNAL_FILE)
        self._journal = open(root / JOURNAL_FILE, "ab")  # noqa: SIM115 - kept open for the run; close()
        self._errors = open(root / ERRORS_FILE, "wb")  # noqa: SIM115 - a rerun retries the errors; close()

    def append(self, records: Sequence[Record]) -> None:
        """Add ``records`` to the journal: one write, flushed and fsynced."""
        if not records:
            return
        assert self._journal is not None, "the folder is closed"
        self._journal.write("".join(r.to_json() + "\n" for r in records).encode("utf-8"))
        self._journal.flush()
        os.fsync(self._journal.fileno())
        for r in records:
            self.records[r.key] = r

    def error(self, key: str, path: Path, reason: str) -> None:
        """Log a picture that could not be labelled (flushed at once)."""
        assert self._errors is not None, "the folder is closed"
        line = json.dumps({"key": key, "path": str(path), "error": reason}, ensure_ascii=False)
        self._errors.write((line + "\n").encode("utf-8"))
        self._errors.flush()
        os.fsync(self._errors.fileno())

    def close(self) -> None:
        for f in (self._journal, self._errors):
            if f is not None:
                f.close()
        self._journal = self._errors = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def check_output(
    root: str | os.PathLike, settings: Mapping[str, Any], overwrite: bool = False
) -> dict | None:
    """Whether ``root`` can take this run (ValueError says why not); the earlier run's settings, if any.
    Changes nothing."""
    root = Path(root)
    wanted = {"version": SETTINGS_VERSION, **settings}
    if not root.exists():
        return None
    if not root.is_dir():
        raise ValueError(f"--out {root} is a file, not a folder")
    settings_path = root / SETTINGS_FILE
    if settings_path.is_file():
        earlier = _read_settings(settings_path)
        if earlier != wanted and not overwrite:
            raise ValueError(
                f"{root} holds a dataset labelled with other settings ({_differences(earlier, wanted)}); "
                "run with the same settings to resume it, or add --overwrite to replace it"
            )
        return earlier
    if any(root.iterdir()):
        raise ValueError(
            f"{root} is not empty and holds no 'florence2 label' dataset ({SETTINGS_FILE}); "
            "give a new or empty folder (nothing in it is overwritten)"
        )
    return None


def read_errors(root: str | os.PathLike) -> list[dict]:
    """The error log of an output folder (empty when there is none)."""
    path = Path(root) / ERRORS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_records(root: str | os.PathLike) -> list[Record]:
    """The journal of an output folder, in order (a torn last line left out)."""
    return list(_read_journal(Path(root) / JOURNAL_FILE, repair=False).values())


def _read_settings(path: Path) -> dict:
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{path}: unreadable settings of an earlier run ({e}); --out another folder"
        ) from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: not the settings of a 'florence2 label' run")
    return settings


def _differences(earlier: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    keys = [k for k in wanted if earlier.get(k) != wanted[k]] + [k for k in earlier if k not in wanted]
    return "; ".join(f"{k}: {earlier.get(k)!r:.80} there, {wanted.get(k)!r:.80} now" for k in keys)


def _read_journal(path: Path, repair: bool = True) -> dict[str, Record]:
    """Records by key; a last line without its newline (a torn write) is ignored and, with ``repair``,
    cut off so that the next append starts a fresh line."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(end)
    records: dict[str, Record] = {}
    for number, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = Record.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{path}:{number}: not a journal line ({e!r:.100}); --out another folder"
            ) from None
        records[record.key] = record
    return records


def _remove_dataset(root: Path, settings: Mapping[str, Any]) -> None:
    """Remove what a run with ``settings`` wrote in ``root`` (its split folders, data.yaml, bookkeeping)."""
    for name, _ in settings.get("split") or ():
        target = root / str(name)
        if target.is_dir() and target.resolve().parent == root.resolve():
            shutil.rmtree(target)
    for name in ("data.yaml", JOURNAL_FILE, ERRORS_FILE, SETTINGS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Write a file under a temporary name, fsync it, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
