"""Read two label files and compare them (the `compare` command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TuckerSegmentError
from .agreement import AgreementReport, compare_labels


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Label voxels and the voxel→RAS affine of a NIfTI or .seg.nrrd file."""
    if not path.is_file():
        raise TuckerSegmentError(f"label file not found: {path}")
    try:
        if path.name.endswith(".seg.nrrd"):
            import slicerio

            seg = slicerio.read_segmentation(str(path))
            voxels = np.asarray(seg["voxels"])
            if voxels.ndim == 4:
                raise TuckerSegmentError(f"{path} has overlapping segments (several layers)")
            labels = np.zeros(voxels.shape, dtype=np.int32)
            from ..ts.structures import structure_names

            ids = {name: idx for idx, name in structure_names().items()}
            for segment in seg["segments"]:
                label = ids.get(segment["name"], segment["labelValue"])
                labels[voxels == segment["labelValue"]] = label
            affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(seg["ijkToLPS"], dtype=float)
            return labels, affine
        import nibabel as nib

        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except TuckerSegmentError:
        raise
    except Exception as error:
        raise TuckerSegmentError(f"cannot read {path} as a label file: {error}") from None
    if data.ndim != 3:
        raise TuckerSegmentError(f"{path} is not a 3D label map (shape {data.shape})")
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise TuckerSegmentError(f"{path} holds non-integer values: not a label map")
    if data.size and data.min() < 0:
        raise TuckerSegmentError(f"{path} has negative values: not a label map (is it an image?)")
    return data.astype(np.int32), image.affine


def compare_files(a: Path, b: Path, tolerance_mm: float = 3.0) -> AgreementReport:
    """Agreement of two label files that share a grid; a clear error when they don't."""
    from ..ts.structures import structure_names

    if not (np.isfinite(tolerance_mm) and tolerance_mm > 0):  # before reading anything
        raise TuckerSegmentError(f"tolerance must be a positive number of mm, got {tolerance_mm}")
    labels_a, affine_a = read_labels(a)
    labels_b, affine_b = read_labels(b)
    if labels_a.shape != labels_b.shape:
        raise TuckerSegmentError(
            f"{a.name} and {b.name} are on different grids: {labels_a.shape} vs {labels_b.shape} voxels"
        )
    if not np.allclose(affine_a, affine_b, atol=1e-3):
        raise TuckerSegmentError(
            f"{a.name} and {b.name} are on different grids (their voxel-to-world matrices differ)"
        )
    spacing = tuple(float(np.linalg.norm(affine_a[:3, i])) for i in range(3))
    return compare_labels(labels_a, labels_b, spacing, structure_names(), tolerance_mm)
