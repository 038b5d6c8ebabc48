"""Progress of a long run: a tqdm bar (images per second, ETA) on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from ..errors import require

LOG_EVERY_S = 30.0  # seconds between two log lines when stderr is not a terminal


class Progress:
    """Counts pictures done out of ``total`` (an estimate for videos); ``initial``: done in earlier runs.

    mode: "bar" (tqdm), "log" (a line every LOG_EVERY_S seconds and at the end) or "off"; ``None``: a bar
    when ``stream`` is a terminal, else log lines."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        *,
        what: str = "label",
        mode: str | None = None,
        stream: IO[str] | None = None,
    ):
        self.stream = stream if stream is not None else sys.stderr
        if mode is None:
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "log"
        self.mode, self.what = mode, what
        self.total, self.done, self.start_done = max(total, initial), initial, initial
        self.failed = 0
        self.started = self.last_log = time.perf_counter()
        self._bar: Any = None
        if mode == "bar":
            tqdm = require("tqdm", "label", "The progress bar")
            self._bar = tqdm.tqdm(
                total=self.total, initial=initial, unit="img", desc=what, file=self.stream, dynamic_ncols=True
            )

    def update(self, done: int, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        if self.done > self.total:  # a video held more frames than its duration said
            self.total = self.done
            if self._bar is not None:
                self._bar.total = self.total
        if self._bar is not None:
            self._bar.update(done)
            if failed:
                self._bar.set_postfix(failed=self.failed)
        elif self.mode == "log" and time.perf_counter() - self.last_log >= LOG_EVERY_S:
            self._log()

    def _log(self) -> None:
        self.last_log = time.perf_counter()
        print(f"{self.what}: {self.line()}", file=self.stream, flush=True)

    def line(self) -> str:
        """``120/1000 images (12 %), 3.20 images/s, ETA 0:04:35, 1 failed``."""
        elapsed = time.perf_counter() - self.started
        new = self.done - self.start_done
        rate = new / elapsed if elapsed > 0 else 0.0
        text = f"{self.done}/{self.total} images ({100 * self.done / max(self.total, 1):.0f} %), {rate:.2f} images/s"
        if rate > 0 and self.done < self.total:
            text += f", ETA {_clock((self.total - self.done) / rate)}"
        if self.failed:
            text += f", {self.failed} failed"
        return text

    def close(self, finished: bool = False) -> None:
        """The last line; ``finished``: every picture is done (the total was an estimate)."""
        if finished:
            self.total = self.done
        if self._bar is not None:
            if finished:
                self._bar.total = self.total
                self._bar.refresh()
            self._bar.close()
        elif self.mode == "log":
            self._log()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
