"""Run the `tucker-segment` CLI in a background process for the Slicer panel.

Plain Python (no Qt): the panel polls :meth:`SegmentProcess.poll` from a QTimer, so the UI stays
responsive. Progress arrives as the CLI's JSON lines (``--progress json``); other output is kept
as the log. :meth:`cancel` ends the whole process tree (the CLI and nnU-Net's workers): SIGTERM
first, which the CLI turns into a clean exit that removes its staged outputs, then SIGKILL.

Why not ``slicer.util.launchConsoleProcess``: it starts the child in Slicer's own process group,
so ending "the whole tree" would need a process walk that can race with nnU-Net's workers, and
killing the group would end Slicer. A session of its own makes Cancel exact; the polling is the
same QTimer pattern Slicer's non-blocking launch uses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProgressEvent:
    stage: str
    fraction: float
    message: str


@dataclass
class ProcessState:
    """What the panel shows: progress, the log, and the outcome when finished."""

    events: list[ProgressEvent] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    returncode: int | None = None
    cancelled: bool = False

    @property
    def error(self) -> str | None:
        """The CLI's one-line error message, if it failed."""
        if self.returncode in (None, 0) or self.cancelled:
            return None
        for line in reversed(self.log):
            if "error:" in line:
                return line.split("error:", 1)[1].strip()
        return self.log[-1] if self.log else f"exited with code {self.returncode}"


def cli_command(args: Sequence[str], python: str | None = None) -> list[str]:
    """The command line that runs the CLI with ``python`` (Slicer: PythonSlicer)."""
    return [python or sys.executable, "-m", "TuckerSegmentLib", *args]


class RunOutput:
    """One run's progress events (the CLI's JSON lines on stdout) and log (everything else),
    filled from reader threads and read by the panel's timer."""

    def __init__(self) -> None:
        self.state = ProcessState()
        self._lock = threading.Lock()

    def add(self, line: str, is_stdout: bool) -> None:
        event = None
        if is_stdout:
            try:
                data = json.loads(line)
                event = ProgressEvent(data["stage"], float(data["fraction"]), data["message"])
            except (ValueError, KeyError, TypeError):
                event = None
        with self._lock:
            if event is not None:
                self.state.events.append(event)
            elif line.strip():
                self.state.log.append(line)

    @property
    def latest(self) -> ProgressEvent | None:
        with self._lock:
            return self.state.events[-1] if self.state.events else None


def start_in_own_session(command: Sequence[str], env: dict[str, str] | None, **popen: Any) -> Any:
    """Start ``command`` as the leader of a new session (process group): ending the group
    reaches every process it starts, and nothing of Slicer's."""
    return subprocess.Popen(
        list(command),
        text=True,
        encoding="utf-8",
        errors="replace",  # a stray byte must not end the reader (and block the child)
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
        start_new_session=os.name != "nt",  # own process group: cancel reaches every worker
        creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # no console on Windows
        **popen,
    )


def end_process_tree(process: Any, grace_seconds: float = 5.0) -> None:
    """End ``process`` and everything it started: SIGTERM first, which the CLI turns into a
    clean exit that removes its staged outputs, then SIGKILL for anything left."""
    if process.poll() is not None:
        return
    if os.name == "nt":  # no process groups: let taskkill end the tree
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True)
        process.wait()
        return
    group = os.getpgid(process.pid)
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        os.killpg(group, signal.SIGKILL)  # workers that ignored SIGTERM
    except ProcessLookupError:
        pass
    process.wait()


class SegmentProcess:
    """One background CLI run."""

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None) -> None:
        self._output = RunOutput()
        self.state = self._output.state
        self._process = start_in_own_session(
            command, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self._process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self._process.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, is_stdout: bool) -> None:  # noqa: ANN001
        for line in stream:
            self._output.add(line.rstrip("\n"), is_stdout)

    @property
    def latest(self) -> ProgressEvent | None:
        return self._output.latest

    def poll(self) -> int | None:
        """The exit code once finished (all output read), else None."""
        code = self._process.poll()
        if code is None:
            return None
        for reader in self._readers:
            reader.join(timeout=5)
        self.state.returncode = code
        return code

    def wait(self, timeout: float | None = None) -> int:
        self._process.wait(timeout)
        return self.poll()

    def cancel(self, grace_seconds: float = 5.0) -> None:
        """End the CLI and all its workers; nothing is loaded afterwards."""
        self.state.cancelled = True
        end_process_tree(self._process, grace_seconds)
        self.poll()
