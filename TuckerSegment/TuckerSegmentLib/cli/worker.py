"""`tucker-segment worker`: the same CLI, kept warm for one owner (the Slicer panel).

A second Segment click on the same CT should not pay Python start-up, the imports of torch,
TotalSegmentator and nnU-Net, and the original networks' run again. The worker runs exactly what
the command line runs — ``main(argv)`` with the argv the owner sends — in one process that stays
up between runs; what it keeps between them is in pipeline/warm_cache.py.

Connection: Python's ``multiprocessing.connection`` (a Unix socket in a private folder; a named
pipe on Windows), authenticated with a random key the owner passes in the environment, never on
the command line. No network port is opened. The worker accepts one owner and then closes its
listener, so no second client can connect. It ends when the owner disconnects, when the owner
dies (the parent process changes), or after a run was interrupted (Cancel sends SIGTERM).
"""

from __future__ import annotations

import io
import os
import threading
import time
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

from ..errors import TuckerSegmentError

ADDRESS_ENV = "TUCKERSEGMENT_WORKER_ADDRESS"
KEY_ENV = "TUCKERSEGMENT_WORKER_KEY"
INTERRUPTED = 130  # the CLI's exit code after SIGTERM / Ctrl-C


def connection_family(address: str) -> str:
    """Named pipe on Windows, Unix socket elsewhere (what the address looks like decides)."""
    return "AF_PIPE" if address.startswith("\\\\.\\pipe\\") else "AF_UNIX"


def private_address(folder: Path, token: str) -> str:
    """Where owner and worker meet: a socket in the owner's private folder, or a named pipe."""
    if os.name == "nt":
        return f"\\\\.\\pipe\\tuckersegment-{token}"
    return str(folder / "worker.sock")


class _LineSender(io.TextIOBase):
    """A text stream that sends each complete line to the owner as ``(stream, line)``."""

    def __init__(self, connection: Connection, stream: str, lock: threading.Lock) -> None:
        self._connection, self._stream, self._lock = connection, stream, lock
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._send(line)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._send(self._partial)
            self._partial = ""

    def _send(self, line: str) -> None:
        with self._lock:
            self._connection.send({self._stream: line})


def _run_cli(argv: list[str], connection: Connection) -> int:
    """One CLI run with its stdout/stderr sent to the owner; any failure is an exit code."""
    import contextlib
    import sys
    import traceback

    from .main import main

    lock = threading.Lock()
    out, err = _LineSender(connection, "stdout", lock), _LineSender(connection, "stderr", lock)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse: usage errors and --help
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
            if not isinstance(exit_.code, int | None):
                print(exit_.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - the worker survives a failed run
            traceback.print_exc()
            code = 1
        finally:
            out.flush()
            err.flush()
    return code


def _end_with_parent() -> None:
    """End as soon as the process that started the worker is gone, even mid-run: SIGTERM to
    itself first, which the CLI turns into a clean exit that removes its staged outputs."""
    import signal

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(3)  # the run did not unwind in time

    if os.name != "nt":  # Windows keeps the old parent id; there the closed pipe ends it
        threading.Thread(target=watch, daemon=True, name="owner-watch").start()


def accept_owner(address: str, key: bytes) -> Connection:
    """Wait for the owner (the first client with the key), then stop listening."""
    with Listener(address, connection_family(address), authkey=key) as listener:
        while True:
            try:
                return listener.accept()
            except Exception:  # noqa: BLE001 - a client without the key: keep waiting
                continue


def serve_owner(address: str, key: bytes) -> int:
    """Serve CLI runs for one owner until it disconnects; returns the exit code."""
    from ..engine.factorize import remember_bases
    from ..pipeline.warm_cache import keep_between_runs, keep_models

    _end_with_parent()
    connection = accept_owner(address, key)
    keep_between_runs()
    keep_models()
    remember_bases()  # another DF of the same weights slices the bases it has
    with connection:
        while True:
            try:
                request: Any = connection.recv()
            except (EOFError, OSError):
                return 0  # the owner is gone
            argv = request.get("argv") if isinstance(request, dict) else None
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                connection.send({"stderr": "worker: a request is {'argv': [str, ...]}"})
                connection.send({"exit": 2})
                continue
            if argv[:1] == ["worker"]:
                connection.send({"stderr": "worker: a worker does not start workers"})
                connection.send({"exit": 2})
                continue
            code = _run_cli(argv, connection)
            try:
                connection.send({"exit": code})
            except OSError:
                return 0
            if code == INTERRUPTED:  # cancelled: the owner ends this worker
                return INTERRUPTED


def worker_settings(environ: dict[str, str]) -> tuple[str, bytes]:
    """The address and key the owner put in the environment."""
    address, key = environ.get(ADDRESS_ENV), environ.get(KEY_ENV)
    if not address or not key:
        raise TuckerSegmentError(
            f"`worker` is started by its owner (the Slicer panel) with {ADDRESS_ENV} and "
            f"{KEY_ENV} set; run the other commands directly"
        )
    try:
        return address, bytes.fromhex(key)
    except ValueError as error:
        raise TuckerSegmentError(f"{KEY_ENV} must be hex") from error
