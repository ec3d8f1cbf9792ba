"""Label a training dataset with the original TS network, through nnU-Net's own predictor.

Fine-tuning a compressed network against the original's own output (self-distillation) needs no
annotation: any CTs will do, and what the fine-tuned network learns is exactly what the
compressed one should keep — the original's behaviour. nnU-Net's predictor, built from the
model folder, does what it does at inference (its preprocessing at the model's spacing, sliding
window, resampling back); cases run one by one in this process (no worker pool).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def label_with_original(
    model_folder: Path,
    images: list[Path],
    labels: list[Path],
    device: str,
    on_case: Callable[[int, int], None] | None = None,
) -> None:
    """Write the original network's segmentation of each image (model label ids, the image's
    grid) to the matching path in ``labels``; a case whose label file exists is kept."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from .model_folder import CHECKPOINT

    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=False,  # TS's models are trained and run without mirroring
        device=torch.device(device),
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(
        str(model_folder), use_folds=(0,), checkpoint_name=Path(CHECKPOINT).name
    )
    io = SimpleITKIO()
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        if on_case:
            on_case(k, len(images))
        if label.exists():
            continue
        data, properties = io.read_images([str(image)])
        segmentation = predictor.predict_single_npy_array(data, properties, None, None, False)
        staging = label.parent.parent / ".teacher-staging" / label.name  # not a case yet
        staging.parent.mkdir(exist_ok=True)
        io.write_seg(segmentation, str(staging), properties)
        staging.replace(label)
