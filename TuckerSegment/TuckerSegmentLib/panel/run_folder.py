"""Run folders for the panel: the exported CT (patient data) and the CLI's outputs.

All live under one folder the project owns in the system temp dir, each with the PID of the
Slicer process that made it (storage/scratch.py). A folder is removed when its run ends, is cancelled, the scene is
closed or the module is cleaned up; folders of processes that no longer exist (Slicer crashed or
was killed) are swept at the next start, so no CT stays behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..storage.scratch import owned_folder, sweep_stale


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


def new_run_folder(root: Path | None = None) -> Path:
    """A fresh private folder for one run, named after this process (pid and start time)."""
    return owned_folder(root or temp_root())


def sweep_stale_runs(root: Path | None = None) -> list[Path]:
    """Remove run folders whose owning process is gone; returns what was removed."""
    return sweep_stale(root or temp_root())


def remove(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
