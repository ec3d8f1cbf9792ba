"""`demo`: the whole product offline on an embedded default.

A synthetic CT phantom goes through TotalSegmentator's pipeline twice, with the original test
networks and with Tucker-compressed ones (DF 0.3), in TS's default mode (the five 1.5 mm experts;
``fast`` for the 3 mm model); the demo prints the agreement table and timings and writes both
segmentations, the report and a side-by-side PNG. The networks are the project's small test
models (``TuckerSegmentLib/demo/models``, trained on phantoms: TS's real weights can't be bundled), laid out
exactly like TS's weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.fidelity import defaults_text
from ..errors import TuckerSegmentError
from ..pipeline.progress import Progress

DEMO_SEED = 2026
MARKER = ".tuckersegment-demo"  # a folder the demo made: its files may be replaced


def _check_options(df: float | None, device: str, precision: str) -> None:
    """Refuse bad options before anything is written (the phantom is written first)."""
    from ..engine.ranks import check_df
    from ..runtime.devices import device_kind, resolve_device
    from ..runtime.precision import resolve_precision

    if df is not None:
        check_df(df)
    resolve_precision(precision, device_kind(resolve_device(device)))


def _prepare_output(out_dir: Path) -> None:
    """A new or empty folder, or one an earlier demo made; never a folder of the user's files."""
    from ..pipeline.output_files import check_writable

    if out_dir.exists() and not out_dir.is_dir():
        raise TuckerSegmentError(f"-o {out_dir} is a file; give a folder for the demo's outputs")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not ((out_dir / MARKER).exists() or (out_dir / "demo_report.json").exists()):
            raise TuckerSegmentError(
                f"-o {out_dir} holds files the demo did not make; choose a new or empty folder"
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TuckerSegmentError(
            f"cannot make the folder {out_dir}: {error.strerror or error}"
        ) from None
    check_writable(out_dir / MARKER)
    (out_dir / MARKER).touch()


def demo_models_dir() -> Path:
    """The phantom-trained models shipped with the package (or $TUCKERSEGMENT_DEMO_MODELS)."""
    if os.environ.get("TUCKERSEGMENT_DEMO_MODELS"):
        return Path(os.environ["TUCKERSEGMENT_DEMO_MODELS"])
    return Path(__file__).resolve().parent / "models"


def truth_dice(truth: np.ndarray, labels: np.ndarray, names: dict[int, str]) -> dict[str, float]:
    """Dice against the phantom's ground truth for every structure the phantom has."""
    scores = {}
    for label in sorted(set(np.unique(truth).tolist()) - {0}):
        t, p = truth == label, labels == label
        scores[names.get(label, str(label))] = 2.0 * float((t & p).sum()) / float(t.sum() + p.sum())
    return scores


def run_demo(
    out_dir: Path,
    df: float | None = None,
    fast: bool = False,
    device: str = "auto",
    precision: str = "auto",
    progress: Progress | None = None,
) -> dict[str, Any]:
    import nibabel as nib

    from ..pipeline.output_files import write_json
    from ..pipeline.segment import SegmentOptions, segment
    from .phantom import make_phantom
    from .picture import render_comparison

    models = demo_models_dir()
    if not models.is_dir():
        raise TuckerSegmentError(
            f"demo models not found in {models}; run the demo from a TuckerSegment checkout "
            "or set TUCKERSEGMENT_DEMO_MODELS"
        )
    _check_options(df, device, precision)
    _prepare_output(Path(out_dir))
    phantom = make_phantom(DEMO_SEED, spacing=1.5)
    ct_image, truth_image = phantom.to_nifti()
    ct_path, truth_path = out_dir / "ct.nii.gz", out_dir / "truth.nii.gz"
    nib.save(ct_image, str(ct_path))
    nib.save(truth_image, str(truth_path))
    output = out_dir / "segmentation.nii.gz"
    result = segment(
        SegmentOptions(
            input=ct_path,
            output=output,
            fast=fast,
            df=df,
            device=device,
            precision=precision,
            compare=True,
            weights_dir=models,
        ),
        progress,
    )
    compressed = np.asanyarray(nib.load(str(output)).dataobj)
    original = np.asanyarray(nib.load(result["comparison"]["original_output"]).dataobj)
    names = {int(k): v for k, v in result["labels"].items()}
    dice_original = truth_dice(phantom.labels, original, names)
    dice_compressed = truth_dice(phantom.labels, compressed, names)
    summary = result["agreement"].summary
    picture = render_comparison(
        phantom.ct,
        original,
        compressed,
        (1.5, 1.5, 1.5),
        out_dir / "comparison.png",
        f"TuckerSegment demo: synthetic CT, {'fast' if fast else 'full'} mode, "
        f"{defaults_text() if df is None else f'DF {df:g}'} — "
        f"agreement mean Dice {summary['mean_dice']:.3f}",
    )
    report = {
        "ct": str(ct_path),
        "truth": str(truth_path),
        "picture": str(picture),
        "segmentation": str(output),
        "sidecar": str(output.with_name("segmentation.json")),
        "agreement_summary": summary,
        "timings": result["timings"],
        "models": {
            k: {kk: v[kk] for kk in ("df", "params", "params_original") if kk in v}
            for k, v in result["models"].items()
        },
        "truth_dice_original": dice_original,
        "truth_dice_compressed": dice_compressed,
    }
    write_json(report, out_dir / "demo_report.json")
    report["agreement"] = result["agreement"]
    return report
