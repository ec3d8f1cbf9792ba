"""How hard a CT is to segment, measured without training: the complexity-guided idea.

Image-complexity-guided compression (arXiv 2107.02927) maps how complex a dataset is to how
much accuracy compression costs it. Its abstract names no measures, so these four are this
project's choice, each cheap and each for a reason:

* ``foreground_fraction``: labelled voxels per body voxel — how much of the body the networks
  must label at all (air around the patient does not count);
* ``structures_present``: structures with at least ``MIN_VOXELS`` voxels — every extra structure
  is another boundary a compressed network can lose;
* ``boundary_density``: surface voxels per labelled voxel — small and thin structures (the
  gallbladder, the pancreas, vessels) are all surface, and they are what compression loses first
  on this project's test models;
* ``body_entropy_bits``: Shannon entropy of the HU values inside the body (16-HU bins) — texture
  and contrast the first layers must carry.

The labels come from a fast low-resolution pass (TS's 6 mm model, original weights; see
``pipeline/image_complexity_run.py``), so the measures need no ground truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MEASURES = ("foreground_fraction", "structures_present", "boundary_density", "body_entropy_bits")
MEASURE_NAMES = {
    "foreground_fraction": "labelled share of the body",
    "structures_present": "structures present",
    "boundary_density": "surface voxels per labelled voxel",
    "body_entropy_bits": "HU entropy inside the body (bits)",
}
MIN_VOXELS = 10  # a structure with fewer voxels in the low-resolution pass is noise
BODY_HU = -500.0  # above this is tissue, below air (lungs are inside the body's filled outline)
HU_BIN = 16.0


@dataclass(frozen=True)
class ImageComplexity:
    foreground_fraction: float
    structures_present: int
    boundary_density: float
    body_entropy_bits: float

    def to_json(self) -> dict:
        return asdict(self)

    def value(self, measure: str) -> float:
        return float(getattr(self, measure))


def body_mask(hu: np.ndarray) -> np.ndarray:
    """The patient: the largest connected region above ``BODY_HU``, holes (lungs, bowel gas)
    filled slice by slice."""
    from scipy import ndimage

    tissue = hu > BODY_HU
    components, count = ndimage.label(tissue)
    if count == 0:
        return tissue
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    body = components == int(np.argmax(sizes))
    for k in range(body.shape[2]):  # axial slices of a RAS-ordered volume
        body[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
    return body


def surface_voxels(labels: np.ndarray) -> int:
    """Labelled voxels with a face neighbour of another label (background included)."""
    surface = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        for shift in (1, -1):
            neighbour = np.roll(labels, shift, axis=axis)
            edge = [slice(None)] * labels.ndim  # np.roll wraps around: the border faces air
            edge[axis] = 0 if shift == 1 else -1
            neighbour[tuple(edge)] = 0
            surface |= (labels != neighbour) & (labels > 0)
    return int(surface.sum())


def entropy_bits(values: np.ndarray, bin_width: float = HU_BIN) -> float:
    """Shannon entropy of ``values`` binned at ``bin_width``."""
    if values.size == 0:
        return 0.0
    bins = np.floor(values.astype(np.float64) / bin_width).astype(np.int64)
    _, counts = np.unique(bins, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def measure_complexity(hu: np.ndarray, labels: np.ndarray) -> ImageComplexity:
    """The four measures of one CT (HU) and its low-resolution labels on the same grid."""
    if hu.shape != labels.shape:
        raise ValueError(f"CT {hu.shape} and labels {labels.shape} differ in shape")
    body = body_mask(hu)
    labelled = labels > 0
    foreground = int(labelled.sum())
    ids, counts = np.unique(labels[labelled], return_counts=True)
    return ImageComplexity(
        foreground_fraction=foreground / max(1, int((body | labelled).sum())),
        structures_present=int((counts >= MIN_VOXELS).sum()) if ids.size else 0,
        boundary_density=surface_voxels(labels) / max(1, foreground),
        body_entropy_bits=entropy_bits(hu[body]),
    )
