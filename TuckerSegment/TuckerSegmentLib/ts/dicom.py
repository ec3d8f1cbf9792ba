"""DICOM series to NIfTI with TotalSegmentator's own converter (dicom2nifti), the series'
modality as TS reads it, and whether a folder holds a file that converter would read."""

from __future__ import annotations

from pathlib import Path


def dicom_modality(folder: Path) -> str | None:
    from totalsegmentator.dicom_io import detect_dicom_modality

    return detect_dicom_modality(folder)


def holds_dicom_files(folder: Path) -> bool:
    """Any file in ``folder`` (at any depth) that TS's converter takes for DICOM, by its own
    test (dicom2nifti's ``is_dicom_file``)."""
    from dicom2nifti.common import is_dicom_file

    for path in folder.rglob("*"):
        try:
            if path.is_file() and is_dicom_file(str(path)):
                return True
        except OSError:
            continue
    return False


def dicom_to_nifti(folder: Path, out: Path, scratch: Path) -> None:
    """Convert the series in ``folder`` to ``out`` (.nii.gz), using ``scratch`` for TS's files."""
    from totalsegmentator.dicom_io import dcm_to_nifti

    dcm_to_nifti(folder, out, scratch)
