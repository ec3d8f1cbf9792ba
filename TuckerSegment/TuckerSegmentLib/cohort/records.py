"""What a cohort folder remembers between runs: its settings, which cases are done, which failed.

A case counts as done only when its ``done.json`` exists — written (temp file + rename) after
every output of the case was renamed into place — and names the same input (size and
modification time). Anything else in a case folder is a half-finished case and is redone.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import TuckerSegmentError
from .cases import Case

SETTINGS_FILE = "batch.json"
DONE_FILE = "done.json"
RUNNING_FILE = ".running.json"
FAILURES_FILE = "failures.csv"


def write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file in the same folder and a rename."""
    tmp = path.with_name(f".tmp-{os.getpid()}.{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def input_stamp(path: Path) -> list[Any]:
    """Size and modification time of a file, or of every file in a DICOM folder."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def check_settings(outdir: Path, settings: dict[str, Any], record: bool = True) -> None:
    """Record the cohort's settings in a new folder (unless ``record`` is off: only check);
    refuse a folder made with other ones, so a re-run never mixes two settings in one cohort
    table."""
    path = outdir / SETTINGS_FILE
    if path.exists():
        try:
            known = json.loads(path.read_text())["settings"]
        except (ValueError, KeyError, TypeError):
            raise TuckerSegmentError(f"{path} is damaged; use a new output folder") from None
        if known != settings:
            changed = sorted(
                k for k in set(known) | set(settings) if known.get(k) != settings.get(k)
            )
            raise TuckerSegmentError(
                f"{outdir} holds a cohort segmented with other settings ({', '.join(changed)}); "
                "use another output folder"
            )
        return
    if not record:
        return
    write_atomically(
        path,
        json.dumps({"tuckersegment": __version__, "settings": settings}, indent=2) + "\n",
    )


def is_done(case: Case, outdir: Path) -> bool:
    marker = outdir / case.case_id / DONE_FILE
    if not marker.exists():
        return False
    try:
        record = json.loads(marker.read_text())
        return record["input"] == str(case.path) and record["stamp"] == input_stamp(case.path)
    except (ValueError, KeyError, OSError):
        return False


def start_case(case: Case, outdir: Path) -> Path:
    """An empty case folder (what a killed attempt left is removed) with a note of who runs it."""
    folder = outdir / case.case_id
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    note = {"pid": os.getpid(), "host": os.uname().nodename, "started": time.time()}
    write_atomically(folder / RUNNING_FILE, json.dumps(note))
    return folder


def finish_case(case: Case, folder: Path, seconds: float) -> None:
    record = {"input": str(case.path), "stamp": input_stamp(case.path), "seconds": seconds}
    write_atomically(folder / DONE_FILE, json.dumps(record, indent=2) + "\n")
    (folder / RUNNING_FILE).unlink(missing_ok=True)


def drop_case(folder: Path) -> None:
    """A failed case leaves no folder behind (its reason is in the failures table)."""
    shutil.rmtree(folder, ignore_errors=True)


def write_failures(outdir: Path, failures: list[dict[str, str]]) -> None:
    """This run's failed cases with their one-line reasons (an empty table when none failed)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case_id", "input", "reason"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(failures)
    write_atomically(outdir / FAILURES_FILE, buffer.getvalue())
