"""Which CTs a cohort has: a folder of NIfTI files and DICOM series folders, or a CSV of paths.

Each case gets an id that names its output folder; ids come from file or folder names (or the
CSV's case id column) and must be unique, so two inputs never write into one folder.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import TuckerSegmentError

NIFTI = (".nii.gz", ".nii")
PATH_COLUMNS = ("path", "input", "image", "ct")
ID_COLUMNS = ("case_id", "case", "id")


@dataclass(frozen=True)
class Case:
    """One CT of the cohort: its id (output folder name) and where it is."""

    case_id: str
    path: Path


def safe_id(text: str) -> str:
    """A folder name from a case id: letters, digits, '.', '_' and '-' (others become '_')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", text.strip()).strip(".")
    return cleaned or "case"


def _nifti_id(path: Path) -> str:
    for suffix in NIFTI:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _from_folder(folder: Path) -> list[Case]:
    cases = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.name.endswith(NIFTI):
            cases.append(Case(safe_id(_nifti_id(entry)), entry))
        elif entry.is_dir() and any(p.is_file() for p in entry.iterdir()):
            cases.append(Case(safe_id(entry.name), entry))  # a DICOM series folder
    return cases


def _from_csv(table: Path) -> list[Case]:
    with open(table, newline="") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        raise TuckerSegmentError(f"{table} lists no cases")
    header = [cell.strip().lower() for cell in rows[0]]
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    id_col = next((header.index(c) for c in ID_COLUMNS if c in header), None)
    if path_col is None:  # no header: path in the first column, an optional id in the second
        path_col, id_col, body = 0, (1 if len(rows[0]) > 1 else None), rows
    else:
        body = rows[1:]
    cases = []
    for number, row in enumerate(body, start=1):
        raw = row[path_col].strip() if path_col < len(row) else ""
        if not raw:
            raise TuckerSegmentError(f"{table}: row {number} has no path")
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else table.parent / path
        given = row[id_col].strip() if id_col is not None and id_col < len(row) else ""
        name = given or (_nifti_id(path) if path.name.endswith(NIFTI) else path.name)
        cases.append(Case(safe_id(name), path))
    if not cases:
        raise TuckerSegmentError(f"{table} lists no cases (a header row only)")
    return cases


def find_cases(source: Path) -> list[Case]:
    """The cases of ``source`` (a folder or a .csv); one-line errors for what can't work."""
    if not source.exists():
        raise TuckerSegmentError(f"input not found: {source}")
    if source.is_dir():
        cases = _from_folder(source)
        if not cases:
            raise TuckerSegmentError(
                f"{source} holds no NIfTI files (.nii, .nii.gz) and no DICOM series folders"
            )
    elif source.suffix.lower() == ".csv":
        cases = _from_csv(source)
    else:
        raise TuckerSegmentError(
            f"{source} is neither a folder of CTs nor a .csv with one path per row"
        )
    # absolute paths: a worker may run in another folder, or on another machine
    cases = [Case(case.case_id, case.path.absolute()) for case in cases]
    seen: dict[str, Path] = {}
    for case in cases:
        if case.case_id in seen:
            raise TuckerSegmentError(
                f"two cases would be named {case.case_id!r} ({seen[case.case_id]} and "
                f"{case.path}); give each a unique id (a case_id column in a CSV)"
            )
        seen[case.case_id] = case.path
    return cases
