"""The side-by-side picture a person looks at: the same slices as CT, original overlay and
compressed overlay, colored with the fixed structure colors."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _overlay(ct_slice: np.ndarray, label_slice: np.ndarray, colors: dict) -> np.ndarray:
    gray = np.clip((ct_slice + 160.0) / 400.0, 0, 1)  # soft-tissue window, level 40 width 400
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    lut = np.zeros((256, 3))
    for label, color in colors.items():
        if label < 256:
            lut[label] = color
    mask = label_slice > 0
    rgb[mask] = 0.45 * rgb[mask] + 0.55 * lut[label_slice[mask].astype(int)]
    return rgb


def render_comparison(
    ct: np.ndarray,
    original: np.ndarray,
    compressed: np.ndarray,
    spacing: tuple[float, float, float],
    path: Path,
    title: str,
    column_titles: tuple[str, str] = ("original TS networks", "Tucker-compressed"),
) -> Path:
    """Write a PNG: rows are an axial slice through the abdomen, one through the thorax and a
    coronal slice; columns are CT, original result, compressed result. Arrays are RAS; the
    patient's right is shown on the image's left (radiological convention)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..ts.structures import structure_colors

    colors = structure_colors()
    nz = ct.shape[2]
    views = [
        ("axial", lambda a: a[:, :, int(nz * 0.3)].T, spacing[1] / spacing[0]),
        ("axial", lambda a: a[:, :, int(nz * 0.7)].T, spacing[1] / spacing[0]),
        ("coronal", lambda a: a[:, ct.shape[1] // 2, :].T, spacing[2] / spacing[0]),
    ]
    fig, axes = plt.subplots(len(views), 3, figsize=(12, 4 * len(views)), squeeze=False)
    for row, (name, cut, aspect) in enumerate(views):
        c = cut(ct).astype(float)
        panels = [
            np.repeat(np.clip((c + 160.0) / 400.0, 0, 1)[..., None], 3, axis=-1),
            _overlay(c, cut(original), colors),
            _overlay(c, cut(compressed), colors),
        ]
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            # RAS arrays: show patient right on the image left, anterior/superior up
            ax.imshow(panel[:, ::-1], origin="lower", aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(("CT", *column_titles)[col], fontsize=12)
        axes[row][0].set_ylabel(name, fontsize=11)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
