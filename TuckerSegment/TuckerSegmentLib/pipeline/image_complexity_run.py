"""`plan --image CT`: a CT's complexity, from one fast low-resolution pass through TS's pipeline.

The labels come from TS's own 6 mm model (``--fastest``) with its original weights — the cheapest
pass that still names every structure — written back on the CT's grid, where
``image_complexity.py`` measures them beside the CT's HU values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .image_complexity import ImageComplexity, measure_complexity


def image_complexity(
    image: Path, work: Path, weights_dir: Path | None = None, device: str = "cpu"
) -> ImageComplexity:
    """The four complexity measures of ``image`` (NIfTI file or DICOM folder)."""
    return low_resolution_pass(image, work, weights_dir, device)[0]


def low_resolution_pass(
    image: Path, work: Path, weights_dir: Path | None = None, device: str = "cpu"
) -> tuple[ImageComplexity, frozenset[str]]:
    """The complexity measures of ``image`` and the names of the structures the pass found
    (at least MIN_VOXELS voxels: what "structures present" counts)."""
    import nibabel as nib

    from ..ts.structures import structure_names
    from .image_complexity import MIN_VOXELS
    from .input_image import load_ct
    from .segment import SegmentOptions, segment

    ct = load_ct(image)  # one line for bad input, before the pass
    work.mkdir(parents=True, exist_ok=True)
    out = work / "low-resolution.nii.gz"
    segment(
        SegmentOptions(
            Path(image),
            out,
            fastest=True,
            df=1.0,  # the original 6 mm network: the measures must not depend on a compression
            device=device,
            precision="fp32",
            weights_dir=Path(weights_dir) if weights_dir else None,
        )
    )
    hu = np.asanyarray(ct.image.dataobj, dtype=np.float32)
    labels = np.asanyarray(nib.load(out).dataobj).astype(np.int32)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    names = structure_names()
    present = frozenset(names[int(i)] for i, n in zip(ids, counts, strict=True) if n >= MIN_VOXELS)
    return measure_complexity(hu, labels), present
