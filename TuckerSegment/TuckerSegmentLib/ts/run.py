"""TotalSegmentator's own pipeline for a task (`total` or another), called through its Python
API."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_ts_task(
    image: Any,
    fast: bool,
    device: str,
    statistics: Path | None = None,
    roi_subset: tuple[str, ...] = (),
    fastest: bool = False,
    task: str = "total",
    body_seg: bool = False,
    force_split: bool = False,
    remove_small_blobs: float | None = None,
    higher_order_resampling: bool = False,
) -> Any:
    """TS's pipeline on a nibabel image; returns its 117-label image (``--ml``). ``device`` is
    TS's spelling (cpu, gpu, gpu:N, mps). Quiet, one thread for resampling and saving (the
    networks use the cores), and never any usage statistics (see environment.py).

    ``statistics``: where TS writes its own ``--statistics`` JSON (volume in mm³ and mean
    intensity per structure; in fast mode TS computes them on its 3 mm image). ``roi_subset``
    and ``fastest``: TS's ``--roi_subset`` and ``--fastest``; ``task``: TS's ``--task``; the
    rest TS's ``--body_seg``, ``--force_split``, ``--remove_small_blobs`` (mm³) and
    ``--higher_order_resampling``."""
    from totalsegmentator.python_api import totalsegmentator

    result = totalsegmentator(
        image,
        None,
        ml=True,
        fast=fast,
        fastest=fastest,
        roi_subset=list(roi_subset) or None,
        device=device,
        quiet=True,
        nr_thr_resamp=1,
        nr_thr_saving=1,
        task=task,
        body_seg=body_seg,
        force_split=force_split,
        remove_small_blobs=False if remove_small_blobs is None else remove_small_blobs,
        higher_order_resampling=higher_order_resampling,
        statistics=str(statistics) if statistics else False,
    )
    return result[0] if statistics else result
