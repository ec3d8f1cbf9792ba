"""Synthetic CT phantoms with TotalSegmentator label ids, for the demo and the test models.

A small torso (about 19 × 16 × 14 cm) drawn from geometric shapes at any voxel spacing: body
wall with subcutaneous fat, five lung lobes with fissures, heart, aorta, inferior vena cava,
liver, spleen, kidneys, gallbladder, stomach with gas, pancreas, five vertebrae (T10–L2) with
spinal canal and cord, ribs 10–12 on both sides, autochthonous back muscles. Intensities are
realistic Hounsfield units with blur and noise. Each seed moves, scales and re-contrasts the
anatomy a little, so phantoms differ like patients do. Labels use the ids of TS's
``class_map["total"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FIELD_OF_VIEW_MM = (192.0, 160.0, 144.0)

# (TS name, mean HU) in painting order: later structures are drawn over earlier ones
STRUCTURES: list[tuple[str, float]] = [
    ("lung_upper_lobe_left", -850),
    ("lung_lower_lobe_left", -850),
    ("lung_upper_lobe_right", -850),
    ("lung_middle_lobe_right", -850),
    ("lung_lower_lobe_right", -850),
    ("autochthon_left", 55),
    ("autochthon_right", 55),
    ("liver", 60),
    ("spleen", 48),
    ("stomach", 25),
    ("gallbladder", 8),
    ("pancreas", 42),
    ("kidney_right", 150),
    ("kidney_left", 150),
    ("heart", 45),
    ("aorta", 190),
    ("inferior_vena_cava", 110),
    ("vertebrae_L2", 300),
    ("vertebrae_L1", 300),
    ("vertebrae_T12", 300),
    ("vertebrae_T11", 300),
    ("vertebrae_T10", 300),
    ("spinal_cord", 35),
    ("rib_left_10", 550),
    ("rib_left_11", 550),
    ("rib_left_12", 550),
    ("rib_right_10", 550),
    ("rib_right_11", 550),
    ("rib_right_12", 550),
]
VERTEBRAE = ["vertebrae_L2", "vertebrae_L1", "vertebrae_T12", "vertebrae_T11", "vertebrae_T10"]


@dataclass
class Phantom:
    """A CT volume in HU (int16), its label map (TS ids, uint8), the RAS affine and the body
    outline (TS's `body` task calls it body_trunc; the phantom has no extremities)."""

    ct: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    names: dict[int, str]
    body: np.ndarray | None = None

    def to_nifti(self) -> tuple:
        """``(ct, labels)`` as nibabel images."""
        import nibabel as nib

        ct = nib.Nifti1Image(self.ct, self.affine)
        ct.header.set_xyzt_units("mm")
        seg = nib.Nifti1Image(self.labels, self.affine)
        seg.header.set_xyzt_units("mm")
        return ct, seg


def _ts_ids() -> dict[str, int]:
    from ..ts.structures import structure_names

    return {name: idx for idx, name in structure_names().items()}


def _ellipsoid(c: tuple[float, float, float], r: tuple[float, float, float]) -> Callable:
    return lambda x, y, z: (
        ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1.0
    )


def _tube_z(cx: float, cy: float, radius: float, z0: float, z1: float) -> Callable:
    return lambda x, y, z: ((x - cx) ** 2 + (y - cy) ** 2 <= radius**2) & (z >= z0) & (z <= z1)


def _rib(side: float, z_level: float, s: float) -> Callable:
    """A rib: a tube following the body wall from the spine forward, sloping down."""

    def mask(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        angle = np.arctan2(y + 40 * s, side * x)  # 0 at the side, -pi/2 at the spine
        rx, ry = 72 * s, 57 * s
        # radial distance to the wall ellipse and height along the slope
        radial = np.sqrt((x / rx) ** 2 + ((y + 5 * s) / ry) ** 2)
        on_arc = (angle > -1.45) & (angle < 0.9) & (side * x > 8 * s)
        height = z - (z_level - 10 * s * (angle + 1.45))
        return on_arc & (np.abs(radial - 1.0) * rx < 4.5 * s) & (np.abs(height) < 4.5 * s)

    return mask


def make_phantom(
    seed: int = 0, spacing: float | tuple[float, float, float] = 3.0, noise: bool = True
) -> Phantom:
    """A phantom for ``seed`` on a grid of ``spacing`` mm (RAS, canonical orientation)."""
    rng = np.random.default_rng(seed)
    sp = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
    shape = tuple(int(round(f / s)) for f, s in zip(FIELD_OF_VIEW_MM, sp, strict=True))
    shift = rng.uniform(-6, 6, 3)
    s = float(rng.uniform(0.93, 1.07))  # overall size of this "patient"
    axes = [(np.arange(n) - (n - 1) / 2) * d - o for n, d, o in zip(shape, sp, shift, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)

    ids = _ts_ids()
    labels = np.zeros(shape, dtype=np.uint8)
    hu = np.full(shape, -1000.0, dtype=np.float32)

    body = (x / (90 * s)) ** 2 + (y / (70 * s)) ** 2 <= 1.0
    inner = (x / (82 * s)) ** 2 + (y / (62 * s)) ** 2 <= 1.0
    body = np.broadcast_to(body, shape)
    hu[body] = -100.0  # subcutaneous fat
    hu[np.broadcast_to(inner, shape)] = 35.0  # muscle wall and soft tissue

    ll, lr = -38 * s, 38 * s
    lung_l = _ellipsoid((ll, 0, 38 * s), (30 * s, 40 * s, 50 * s))
    lung_r = _ellipsoid((lr, 0, 38 * s), (30 * s, 40 * s, 50 * s))
    oblique = lambda x, y, z: z - 38 * s > -0.8 * y  # noqa: E731  (major fissure plane)
    horizontal = lambda x, y, z: z > 52 * s  # noqa: E731
    shapes: dict[str, Callable] = {
        "lung_upper_lobe_left": lambda x, y, z: lung_l(x, y, z) & oblique(x, y, z),
        "lung_lower_lobe_left": lambda x, y, z: lung_l(x, y, z) & ~oblique(x, y, z),
        "lung_upper_lobe_right": lambda x, y, z: (
            lung_r(x, y, z) & oblique(x, y, z) & horizontal(x, y, z)
        ),
        "lung_middle_lobe_right": lambda x, y, z: (
            lung_r(x, y, z) & oblique(x, y, z) & ~horizontal(x, y, z)
        ),
        "lung_lower_lobe_right": lambda x, y, z: lung_r(x, y, z) & ~oblique(x, y, z),
        "autochthon_left": _ellipsoid((-22 * s, -58 * s, 0), (14 * s, 9 * s, 80 * s)),
        "autochthon_right": _ellipsoid((22 * s, -58 * s, 0), (14 * s, 9 * s, 80 * s)),
        "liver": _ellipsoid((38 * s, 8 * s, -18 * s), (42 * s, 45 * s, 32 * s)),
        "spleen": _ellipsoid((-52 * s, -18 * s, -8 * s), (16 * s, 24 * s, 22 * s)),
        "stomach": _ellipsoid((-24 * s, 24 * s, -12 * s), (24 * s, 18 * s, 20 * s)),
        "gallbladder": _ellipsoid((26 * s, 42 * s, -34 * s), (9 * s, 11 * s, 13 * s)),
        "pancreas": _ellipsoid((-2 * s, 2 * s, -30 * s), (32 * s, 7 * s, 7 * s)),
        "kidney_right": _ellipsoid((40 * s, -32 * s, -42 * s), (14 * s, 12 * s, 24 * s)),
        "kidney_left": _ellipsoid((-40 * s, -32 * s, -36 * s), (14 * s, 12 * s, 24 * s)),
        "heart": _ellipsoid((4 * s, 20 * s, 30 * s), (32 * s, 26 * s, 28 * s)),
        "aorta": _tube_z(-12 * s, -24 * s, 10 * s, -80, 80),
        "inferior_vena_cava": _tube_z(18 * s, -18 * s, 9 * s, -80, 12 * s),
        "spinal_cord": _tube_z(0, -50 * s, 5 * s, -80, 80),
    }
    for k, name in enumerate(VERTEBRAE):
        zc = (-60 + 24 * k) * s
        body_v = _tube_z(0, -38 * s, 15 * s, zc - 10 * s, zc + 10 * s)
        arch = lambda x, y, z, zc=zc: (  # noqa: E731  (arch around the canal)
            ((x**2 + (y + 50 * s) ** 2) <= (10 * s) ** 2)
            & ((x**2 + (y + 50 * s) ** 2) > (5.5 * s) ** 2)
            & (np.abs(z - zc) <= 9 * s)
        )
        shapes[name] = lambda x, y, z, b=body_v, a=arch: b(x, y, z) | a(x, y, z)
    for number, zc in zip((10, 11, 12), (36, 12, -12), strict=True):
        shapes[f"rib_left_{number}"] = _rib(-1.0, zc * s, s)
        shapes[f"rib_right_{number}"] = _rib(1.0, zc * s, s)

    for name, mean_hu in STRUCTURES:
        mask = np.broadcast_to(shapes[name](x, y, z), shape) & body
        labels[mask] = ids[name]
        hu[mask] = mean_hu + rng.uniform(-10, 10)

    # texture inside structures: cortical bone rim, kidney medulla, stomach gas, lung fissures
    bone = np.isin(labels, [ids[v] for v in VERTEBRAE])
    hu[bone & ~ndimage.binary_erosion(bone, iterations=1)] = 700.0
    kidneys = np.isin(labels, [ids["kidney_left"], ids["kidney_right"]])
    hu[kidneys & ndimage.binary_erosion(kidneys, iterations=2)] = 40.0
    stomach = labels == ids["stomach"]
    gas = stomach & np.broadcast_to(y > (30 * s - shift[1]), shape)
    hu[gas] = -900.0
    lungs = np.isin(labels, [ids[n] for n, v in STRUCTURES if v == -850])
    fissure = lungs & ~ndimage.binary_erosion(lungs, structure=np.ones((1, 1, 2), bool))
    hu[fissure & (labels != np.roll(labels, 1, axis=2))] = -650.0

    hu = ndimage.gaussian_filter(hu, sigma=0.6)
    if noise:
        hu += rng.normal(0.0, rng.uniform(8, 20), shape).astype(np.float32)
    ct = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * sp
    present = {int(i): n for n, i in ids.items() if (labels == i).any()}
    return Phantom(ct, labels, affine, present, np.ascontiguousarray(body))
