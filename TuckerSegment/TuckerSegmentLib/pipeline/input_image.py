"""Read and check the CT to segment: a NIfTI file or a DICOM series folder.

DICOM goes through TotalSegmentator's own converter (``dcm_to_nifti``). The input file is only
read, never modified. Problems a user can fix are reported as one-line errors.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TuckerSegmentError

MIN_VOXELS_PER_AXIS = 8


@dataclass
class CTInput:
    """The image handed to TS (in memory), where it came from, and any warnings."""

    image: object  # nibabel.Nifti1Image
    source: Path
    kind: str  # "nifti" or "dicom"
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.image.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(z) for z in self.image.header.get_zooms()[:3])


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def _load_nifti(path: Path):
    import nibabel as nib

    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises many types for damaged files
        raise TuckerSegmentError(f"cannot read {path} as NIfTI: {error}") from None
    return nib.Nifti1Image(data, image.affine, image.header)


def check_dicom_folder(folder: Path) -> None:
    """An input folder must hold files TS's converter reads as DICOM; an empty folder, or one of
    other files, gets its own line instead of the converter's IndexError."""
    from ..ts.dicom import holds_dicom_files

    if not any(folder.iterdir()):
        raise TuckerSegmentError(f"{folder} is an empty folder; give a CT file or a DICOM series")
    if not holds_dicom_files(folder):
        raise TuckerSegmentError(f"{folder} holds no DICOM files")


def _load_dicom(folder: Path) -> tuple[object, str | None]:
    import nibabel as nib

    from ..ts.dicom import dicom_modality, dicom_to_nifti

    check_dicom_folder(folder)
    modality = dicom_modality(folder)
    with tempfile.TemporaryDirectory(prefix="tuckersegment-dicom-") as tmp:
        out = Path(tmp) / "converted.nii.gz"
        try:
            dicom_to_nifti(folder, out, Path(tmp))
            image = nib.load(str(out))
            data = np.asanyarray(image.dataobj)
        except Exception as error:
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise TuckerSegmentError(f"{folder} is not a readable DICOM series: {first}") from None
        return nib.Nifti1Image(data, image.affine, image.header), modality


def load_ct(path: str | Path) -> CTInput:
    """Load ``path`` and check it is a usable 3D CT; 4D images keep their first volume."""
    import nibabel as nib

    source = Path(path)
    if not source.exists():
        raise TuckerSegmentError(f"input not found: {source}")
    warnings: list[str] = []
    if source.is_dir():
        image, modality = _load_dicom(source)
        kind = "dicom"
        if modality and modality.upper() not in ("CT", "OT"):
            warnings.append(
                f"the DICOM series is {modality}, but TotalSegmentator's `total` task is for CT"
            )
    elif _is_nifti(source):
        image, kind = _load_nifti(source), "nifti"
    else:
        raise TuckerSegmentError(
            f"{source} is neither a NIfTI file (.nii, .nii.gz) nor a DICOM series folder"
        )
    if image.ndim == 2 or (image.ndim == 3 and min(image.shape) == 1):
        raise TuckerSegmentError(f"{source} is a 2D image {image.shape}; a 3D CT volume is needed")
    if image.ndim == 4:
        warnings.append(f"{source.name} is 4D {image.shape}: segmenting its first volume")
        data = np.asanyarray(image.dataobj)[..., 0]
        header = image.header.copy()
        header.set_data_shape(data.shape)
        image = nib.Nifti1Image(data, image.affine, header)
    if image.ndim != 3:
        raise TuckerSegmentError(f"{source} has {image.ndim} dimensions; a 3D CT volume is needed")
    if min(image.shape) < MIN_VOXELS_PER_AXIS:
        raise TuckerSegmentError(
            f"{source} is too small to segment: {image.shape} voxels, at least "
            f"{MIN_VOXELS_PER_AXIS} per axis are needed for a network patch"
        )
    data = np.asanyarray(image.dataobj)
    if not np.issubdtype(data.dtype, np.number):
        raise TuckerSegmentError(f"{source} does not hold numeric voxels ({data.dtype})")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise TuckerSegmentError(f"{source} has {bad} NaN or infinite voxels; fix the image first")
    if kind == "nifti":
        warnings.extend(_modality_warnings(data, source))
    return CTInput(image=image, source=source, kind=kind, warnings=warnings)


def _modality_warnings(data: np.ndarray, source: Path) -> list[str]:
    """CT in Hounsfield units has air near -1000; an MR image has no negative values."""
    sample = data[:: max(1, data.shape[0] // 64), :: max(1, data.shape[1] // 64), :]
    low = float(np.percentile(sample, 1))
    if low > -200:
        return [
            f"{source.name} does not look like a CT in Hounsfield units (1st percentile {low:.0f}); "
            "TotalSegmentator's `total` task is for CT, an MR image will give poor results"
        ]
    return []
