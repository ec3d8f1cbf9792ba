"""Run folders for the panel: the exported CT (patient data) and the CLI's outputs.

All live under one folder the project owns in the system temp dir, each with the PID of the
Slicer process that made it. A folder is removed when its run ends, is cancelled, the scene is
closed or the module is cleaned up; folders of processes that no longer exist (Slicer crashed or
was killed) are swept at the next start, so no CT stays behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

OWNER_FILE = "owner.pid"


def temp_root() -> Path:
    """``<system temp>/TuckerSegment-<user>``, created private to the user."""
    user = (
        os.environ.get("USER")
        or os.environ.get("USERNAME")
        or str(os.getuid() if hasattr(os, "getuid") else "")
    )
    root = Path(tempfile.gettempdir()) / f"TuckerSegment-{user}"
    root.mkdir(mode=0o700, exist_ok=True)
    return root


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # Windows: os.kill(pid, 0) is not a probe; keep the folder
        return True
    return True


def new_run_folder(root: Path | None = None) -> Path:
    """A fresh private folder for one run, marked with this process's PID."""
    root = root or temp_root()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    return folder


def sweep_stale(root: Path | None = None) -> list[Path]:
    """Remove run folders whose owning process is gone; returns what was removed."""
    removed = []
    for folder in (root or temp_root()).glob("run-*"):
        try:
            pid = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            pid = -1
        if pid < 0 or not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def remove(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
