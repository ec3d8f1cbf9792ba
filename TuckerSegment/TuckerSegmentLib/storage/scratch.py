"""Temporary folders the project owns, one per run, and the sweep of ones left behind.

TotalSegmentator and nnU-Net write the patient's CT (and intermediate label maps) into
``tempfile`` folders (``nnunet_tmp_…``). A run that is killed (an out-of-memory kill, a crash, a
Dask worker ended mid-case) cannot remove them, and the CT would stay in the system's temp
folder. Every run therefore points ``tempfile`` (and ``TMPDIR`` for child processes) at its own
folder under one root the project owns, ``run-<pid>-<start>-…``; the next run that starts sweeps
the folders whose process is gone. The root is private (0700) and short: in the system's temp
folder, since multiprocessing puts its Unix sockets under ``tempfile``'s folder and a socket path
may not exceed ~104 characters. The Slicer panel's run folders (the exported CT) use the same
folders and sweep under their own root (panel/run_folder.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "run-"


def scratch_root() -> Path:
    """``$TUCKERSEGMENT_SCRATCH`` or ``<system temp>/tuckersegment-<user>``: local, per user."""
    if os.environ.get("TUCKERSEGMENT_SCRATCH"):
        return Path(os.environ["TUCKERSEGMENT_SCRATCH"])
    user = str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"tuckersegment-{user}"


def _start_token(pid: int) -> str:
    """When process ``pid`` started (so a reused pid is not mistaken for the owner)."""
    try:
        import psutil

        return str(int(psutil.Process(pid).create_time() * 100))
    except Exception:  # psutil missing (it comes with the optional extras) or pid gone
        return "0"


def _owner_alive(name: str) -> bool:
    """Whether the process named in ``run-<pid>-<start>-…`` still runs."""
    try:
        _, pid_text, start, _ = name.split("-", 3)
        pid = int(pid_text)
    except ValueError:
        return True  # not ours to judge
    if pid == os.getpid():
        return start in ("0", _start_token(pid))  # else: an earlier process with our pid
    try:
        import psutil

        if not psutil.pid_exists(pid):
            return False
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
        return start == "0" or _start_token(pid) == start
    except ImportError:
        if os.name == "nt":
            return True  # os.kill(pid, 0) is no probe on Windows: keep the folder
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    except Exception:  # the process ended while we looked
        return False


def sweep_stale(root: Path | None = None) -> list[Path]:
    """Remove the run folders under ``root`` whose process has ended; returns them."""
    root = root or scratch_root()
    removed = []
    if not root.is_dir():
        return removed
    for folder in root.glob(f"{PREFIX}*"):
        if folder.is_dir() and not _owner_alive(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def owned_folder(root: Path) -> Path:
    """A new private folder under ``root`` named after this process (pid and start time)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    pid = os.getpid()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{pid}-{_start_token(pid)}-", dir=root))


@contextmanager
def run_scratch() -> Iterator[Path]:
    """A fresh folder for this run's temporary files (``tempfile`` and ``TMPDIR`` point at it
    inside the block); removed at the end, or swept by a later run if this one is killed."""
    import multiprocessing.util

    # multiprocessing's own folder (sockets, no patient data) stays where it was: made now, it
    # is kept for this process, and its socket paths stay short
    multiprocessing.util.get_temp_dir()
    root = scratch_root()
    sweep_stale(root)
    folder = owned_folder(root)
    previous_dir, previous_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(folder)
    os.environ["TMPDIR"] = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = previous_dir
        if previous_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous_env
        shutil.rmtree(folder, ignore_errors=True)
