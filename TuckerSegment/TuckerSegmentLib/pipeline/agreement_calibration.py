"""`plan --calibrate CT …`: how agreement follows the ranks, measured on the user's own CTs.

One-DF and planned models at several sizes are segmented beside the original (the `curves`
measurement); each point keeps its mean Dice over the images (and per image) and the signals of
its ranks, each image its complexity (one low-resolution pass), and
`engine/agreement_prediction.py` fits them. Done once per checkpoint; the cache keeps it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..engine.agreement_prediction import Calibration, CalibrationPoint, calibrate, rank_signals
from ..errors import TuckerSegmentError

DEFAULT_REMOVED = (0.5, 0.7, 0.8, 0.85, 0.9, 0.92)


def measure_calibration(
    images: list[Path],
    model: str,
    work: Path,
    weights_dir: Path | None = None,
    rank_floor: int = 8,
    removed: tuple[float, ...] = DEFAULT_REMOVED,
    device: str = "cpu",
) -> Calibration:
    from ..engine.planner import layer_spectra
    from ..ts.model_folder import open_model_folder
    from .curves import compression_curves, curve_model_folder
    from .image_complexity_run import image_complexity

    made: dict[tuple[str, float], Path] = {}
    points = compression_curves(
        images,
        model,
        ["tucker", "plan"],
        list(removed),
        work,
        weights_dir,
        rank_floor,
        device,
        made_models=made,
    )
    folder = open_model_folder(curve_model_folder(model, weights_dir))
    spec = folder.spec
    spectra = layer_spectra(folder.load_network("cpu"), spec.patch_size, spec.input_channels)
    calibration_points = []
    for (method, share), path in made.items():
        layers = json.loads((Path(path) / "manifest.json").read_text())["layers"]
        ranks = {layer["name"]: (layer["rank_in"], layer["rank_out"]) for layer in layers}
        per_image = {
            Path(p.image).name: p.mean_dice
            for p in points
            if (p.method, p.removed) == (method, share) and p.mean_dice is not None
        }
        if not per_image:  # the original found none of the model's structures in any image
            continue
        params = next(p.params for p in points if (p.method, p.removed) == (method, share))
        dice = list(per_image.values())
        calibration_points.append(
            CalibrationPoint(
                method,
                share,
                params,
                sum(dice) / len(dice),
                rank_signals(spectra, ranks),
                per_image,
            )
        )
    if len(calibration_points) < 3:
        raise TuckerSegmentError(
            f"the original {model} model found none of its structures in these images: "
            "calibrate on CTs that show them"
        )
    complexity = {
        Path(image).name: image_complexity(
            Path(image), work / f"complexity-{k}", weights_dir, device
        ).to_json()
        for k, image in enumerate(images)
    }
    return calibrate(
        model,
        folder.checkpoint_sha256(),
        rank_floor,
        [Path(image).name for image in images],
        calibration_points,
        complexity,
    )
