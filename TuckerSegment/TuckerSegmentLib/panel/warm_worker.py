"""The panel's side of the warm worker (cli/worker.py): start it, send it runs, end it.

The panel starts one worker at its first Segment click and sends every later run to it, so a
second click does not pay Python start-up, imports and the original networks' run again. A run
sent to the worker looks to the panel exactly like a background CLI process (same progress,
log, poll, wait, cancel). Cancel ends the worker with its run (the next click starts a new one);
a failed run does not. The worker ends when the panel closes it (scene close, module cleanup),
when Slicer exits or dies, and never accepts anyone but the panel that started it.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Client, Connection
from pathlib import Path

from ..cli.worker import ADDRESS_ENV, KEY_ENV, connection_family, private_address
from .process_controller import (
    ProgressEvent,
    RunOutput,
    cli_command,
    end_process_tree,
    start_in_own_session,
)


class WorkerError(RuntimeError):
    """The worker could not start or is busy; one line for the user."""


class WarmWorker:
    """One `tucker-segment worker` process, owned by this object."""

    def __init__(
        self,
        python: str | None = None,
        env: dict[str, str] | None = None,
        connect_timeout: float = 120.0,
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="tuckersegment-worker-"))  # mode 0700
        self.address = private_address(self.folder, secrets.token_hex(8))
        self._key = secrets.token_bytes(32)
        self._connect_timeout = connect_timeout
        self._connection: Connection | None = None
        self._connect_lock = threading.Lock()
        self.current: WorkerRun | None = None
        self.stray: list[str] = []  # the process's own output: C-level messages, crashes
        self.process = start_in_own_session(
            cli_command(["worker"], python),
            {**(env or {}), ADDRESS_ENV: self.address, KEY_ENV: self._key.hex()},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read_stray, daemon=True).start()

    def _read_stray(self) -> None:
        for line in self.process.stdout:
            self.stray.append(line.rstrip("\n"))
            del self.stray[:-200]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def connection(self) -> Connection:
        """Connected on first use (from a run's thread: the panel never waits for it)."""
        with self._connect_lock:
            if self._connection is not None:
                return self._connection
            deadline = time.monotonic() + self._connect_timeout
            while True:
                if not self.alive:
                    raise WorkerError(f"the worker exited at start: {self._last_words()}")
                try:
                    self._connection = Client(
                        self.address, connection_family(self.address), authkey=self._key
                    )
                    return self._connection
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline:
                        raise WorkerError("the worker did not start in time") from None
                    time.sleep(0.05)

    def _last_words(self) -> str:
        return self.stray[-1] if self.stray else f"exit code {self.process.poll()}"

    def submit(self, args: Sequence[str]) -> WorkerRun:
        """Send one CLI run (the argv a user would type after `tucker-segment`)."""
        if self.current is not None and self.current.poll() is None:
            raise WorkerError("the worker is busy with another run")
        if not self.alive:
            raise WorkerError(f"the worker has ended: {self._last_words()}")
        self.current = WorkerRun(self, list(args))
        return self.current

    def close(self, grace_seconds: float = 5.0) -> None:
        """End the worker: disconnect (it exits by itself), else end its process tree."""
        with self._connect_lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        try:
            self.process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            end_process_tree(self.process, grace_seconds)
        self._remove_folder()

    def terminate(self, grace_seconds: float = 5.0) -> None:
        """End the worker and whatever it is running now (Cancel)."""
        end_process_tree(self.process, grace_seconds)
        with self._connect_lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        self._remove_folder()

    def _remove_folder(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class WorkerRun:
    """One run in the worker; the same interface as process_controller.SegmentProcess."""

    def __init__(self, worker: WarmWorker, argv: list[str]) -> None:
        self._worker = worker
        self._output = RunOutput()
        self.state = self._output.state
        self._finished = threading.Event()
        self._code: int | None = None
        self._thread = threading.Thread(target=self._talk, args=(argv,), daemon=True)
        self._thread.start()

    def _talk(self, argv: list[str]) -> None:
        code = -1
        try:
            connection = self._worker.connection()
            connection.send({"argv": argv})
            while True:
                message = connection.recv()
                if "exit" in message:
                    code = int(message["exit"])
                    break
                for stream in ("stdout", "stderr"):
                    if stream in message:
                        self._output.add(str(message[stream]), stream == "stdout")
        except WorkerError as error:
            self._output.add(f"error: {error}", False)
        except (EOFError, OSError):
            if not self.state.cancelled:
                self._output.add(
                    f"error: the worker ended during the run: {self._worker._last_words()}", False
                )
        finally:
            self._code = code
            self._finished.set()

    @property
    def latest(self) -> ProgressEvent | None:
        return self._output.latest

    def poll(self) -> int | None:
        """The run's exit code once finished, else None."""
        if not self._finished.is_set():
            return None
        self.state.returncode = self._code
        return self._code

    def wait(self, timeout: float | None = None) -> int:
        if not self._finished.wait(timeout):
            raise subprocess.TimeoutExpired(["worker run"], timeout)
        return self.poll()

    def cancel(self, grace_seconds: float = 5.0) -> None:
        """Cancel a running run: the worker ends with it. A finished run: nothing to do."""
        if self._finished.is_set():
            return
        self.state.cancelled = True
        self._worker.terminate(grace_seconds)
        self._finished.wait(grace_seconds)
        self.poll()
