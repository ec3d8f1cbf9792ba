"""Progress for people (a one-line bar on stderr) or for the Slicer panel (JSON lines on stdout).

JSON mode writes one object per line, ``{"stage", "fraction", "message"}``, to the stdout the
process started with, even while TS or nnU-Net silence ``sys.stdout``; everything else the run
prints goes to stderr, so stdout stays machine-readable.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

MODES = ("bar", "json", "none")


class Progress:
    """Report ``fraction`` (0-1 of the whole run) with a stage name and a message."""

    def __init__(self, mode: str = "bar", stream: TextIO | None = None) -> None:
        self.mode = mode
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self.start = time.perf_counter()
        self.fraction = 0.0
        self._last_bar = ""

    def update(self, stage: str, fraction: float, message: str = "", **fields: object) -> None:
        """``fields``: more keys for the JSON line (a cohort's counts, rate and ETA)."""
        self.fraction = max(self.fraction, min(1.0, float(fraction)))
        if self.mode == "json":
            line = {"stage": stage, "fraction": round(self.fraction, 4), "message": message}
            line.update(fields)
            self.stream.write(json.dumps(line) + "\n")
            self.stream.flush()
        elif self.mode == "bar":
            width = 30
            filled = int(width * self.fraction)
            elapsed = time.perf_counter() - self.start
            bar = (
                f"\r{100 * self.fraction:3.0f}%|{'█' * filled}{' ' * (width - filled)}| "
                f"{stage}: {message} [{elapsed:.0f}s]"
            )
            if bar != self._last_bar:
                self.stream.write(bar[:120].ljust(len(self._last_bar[:120])))
                self.stream.flush()
                self._last_bar = bar

    def close(self) -> None:
        if self.mode == "bar" and self._last_bar:
            self.stream.write("\n")
            self.stream.flush()


class Span:
    """A slice [start, end) of the overall progress, for one stage of the run."""

    def __init__(self, progress: Progress, stage: str, start: float, end: float) -> None:
        self.progress, self.stage, self.start, self.end = progress, stage, start, end

    def __call__(self, fraction: float, message: str = "") -> None:
        self.progress.update(self.stage, self.start + (self.end - self.start) * fraction, message)
