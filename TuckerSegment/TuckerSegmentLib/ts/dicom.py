"""DICOM series to NIfTI with TotalSegmentator's own converter (dicom2nifti), and the series'
modality as TS reads it."""

from __future__ import annotations

from pathlib import Path


def dicom_modality(folder: Path) -> str | None:
    from totalsegmentator.dicom_io import detect_dicom_modality

    return detect_dicom_modality(folder)


def dicom_to_nifti(folder: Path, out: Path, scratch: Path) -> None:
    """Convert the series in ``folder`` to ``out`` (.nii.gz), using ``scratch`` for TS's files."""
    from totalsegmentator.dicom_io import dcm_to_nifti

    dcm_to_nifti(folder, out, scratch)
