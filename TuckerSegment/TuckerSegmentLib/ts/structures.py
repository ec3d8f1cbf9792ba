"""TotalSegmentator's 117 structures: ids and names from TS's own class map, one fixed color each.

The same color for a structure in every output and every Slicer node, so the compressed and
original results are compared at a glance.
"""

from __future__ import annotations

import colorsys
from functools import cache

# (name prefix or name, base RGB 0-1); the first match wins; families get shades of one hue
_FAMILIES: list[tuple[str, tuple[float, float, float]]] = [
    ("liver", (0.87, 0.51, 0.30)),
    ("spleen", (0.62, 0.38, 0.75)),
    ("kidney_cyst", (0.95, 0.92, 0.45)),
    ("kidney", (0.73, 0.47, 0.30)),
    ("gallbladder", (0.54, 0.73, 0.28)),
    ("stomach", (0.93, 0.76, 0.55)),
    ("pancreas", (0.97, 0.85, 0.40)),
    ("adrenal", (0.86, 0.69, 0.30)),
    ("lung", (0.90, 0.60, 0.65)),
    ("trachea", (0.71, 0.88, 0.98)),
    ("esophagus", (0.83, 0.63, 0.47)),
    ("thyroid", (0.77, 0.43, 0.60)),
    ("small_bowel", (0.80, 0.55, 0.46)),
    ("duodenum", (0.85, 0.62, 0.40)),
    ("colon", (0.78, 0.55, 0.36)),
    ("urinary_bladder", (0.86, 0.85, 0.55)),
    ("prostate", (0.90, 0.70, 0.60)),
    ("heart", (0.81, 0.16, 0.18)),
    ("atrial_appendage", (0.70, 0.20, 0.25)),
    ("aorta", (0.88, 0.27, 0.22)),
    ("pulmonary_vein", (0.35, 0.45, 0.85)),
    ("brachiocephalic_trunk", (0.92, 0.35, 0.30)),
    ("subclavian_artery", (0.95, 0.40, 0.35)),
    ("common_carotid_artery", (0.95, 0.30, 0.40)),
    ("iliac_artery", (0.90, 0.33, 0.30)),
    ("brachiocephalic_vein", (0.30, 0.50, 0.90)),
    ("superior_vena_cava", (0.25, 0.42, 0.85)),
    ("inferior_vena_cava", (0.20, 0.38, 0.80)),
    ("portal_vein", (0.25, 0.55, 0.80)),
    ("iliac_vena", (0.30, 0.45, 0.85)),
    ("vertebrae", (0.92, 0.88, 0.72)),
    ("sacrum", (0.90, 0.84, 0.66)),
    ("rib", (0.95, 0.90, 0.78)),
    ("sternum", (0.88, 0.86, 0.70)),
    ("costal_cartilages", (0.70, 0.85, 0.85)),
    ("humerus", (0.90, 0.85, 0.70)),
    ("scapula", (0.88, 0.82, 0.68)),
    ("clavicula", (0.86, 0.82, 0.64)),
    ("femur", (0.92, 0.86, 0.70)),
    ("hip", (0.89, 0.80, 0.62)),
    ("skull", (0.94, 0.91, 0.80)),
    ("spinal_cord", (0.98, 0.90, 0.40)),
    ("brain", (0.92, 0.75, 0.72)),
    ("gluteus", (0.68, 0.30, 0.25)),
    ("autochthon", (0.75, 0.35, 0.28)),
    ("iliopsoas", (0.80, 0.40, 0.32)),
    ("body", (0.93, 0.80, 0.68)),  # TS's body task: trunk and extremities
    ("vessel", (0.85, 0.25, 0.25)),
    ("effusion", (0.45, 0.70, 0.90)),
    ("bleed", (0.70, 0.10, 0.10)),
]


@cache
def structure_names(task: str = "total") -> dict[int, str]:
    """TS's class map of a task: label id → structure name (`total`: 117 entries)."""
    from totalsegmentator.map_to_binary import class_map

    return dict(class_map[task])


def _family(name: str) -> tuple[float, float, float]:
    for prefix, rgb in _FAMILIES:
        if name.startswith(prefix) or prefix in name:
            return rgb
    return (0.6, 0.6, 0.6)


@cache
def structure_colors(task: str = "total") -> dict[int, tuple[float, float, float]]:
    """A fixed RGB color (0-1) per label id: members of a family are shades of its hue."""
    names = structure_names(task)
    counters: dict[tuple[float, float, float], int] = {}
    colors = {}
    for idx in sorted(names):
        base = _family(names[idx])
        k = counters.get(base, 0)
        counters[base] = k + 1
        h, lightness, sat = colorsys.rgb_to_hls(*base)
        # alternate lighter/darker and shift hue slightly so neighbours are distinguishable
        step = (k + 1) // 2 * (1 if k % 2 else -1)
        lightness = min(0.92, max(0.25, lightness + 0.045 * step))
        h = (h + 0.012 * step) % 1.0
        colors[idx] = tuple(round(c, 4) for c in colorsys.hls_to_rgb(h, lightness, sat))
    return colors
