"""Train the project's small test models on synthetic phantoms (TS weights can't be fetched here).

Writes genuine nnU-Net model folders in TotalSegmentator's weights layout under
``TuckerSegment/TuckerSegmentLib/demo/models/`` (a TOTALSEG_WEIGHTS_PATH): Dataset297 (3 mm, 118 outputs),
Dataset298 (6 mm: --fastest and the crop model of --roi_subset), the five
1.5 mm experts (Datasets 291-295, TS's per-part label maps) and Dataset300 (TS's `body` task in
fast mode, 6 mm: the crop model of --body_seg; the phantom's body outline is its body_trunc). TS's own pipeline loads them
unchanged. Preprocessing is nnU-Net's own (``DefaultPreprocessor.run_case``), so training sees
exactly what inference feeds the network. Deterministic for a given machine and thread count:

    .venv/bin/python Testing/make_test_models.py            # all eight, about 2.5 hours on 2 cores
    .venv/bin/python Testing/make_test_models.py --only 3mm
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "TuckerSegment" / "TuckerSegmentLib" / "demo" / "models"
TRAIN_SEEDS = range(100, 116)  # phantoms for training; tests evaluate on other seeds
FEATURES = [8, 16, 32, 64]
STRIDES = [1, 2, 2, 2]
SETTINGS = {  # model: (spacing mm, plans patch, training patch, iterations, foreground share)
    "3mm": (3.0, [48, 48, 48], [48, 48, 48], 1200, 0.0),
    # TS's 6 mm model (Dataset298): --fastest and the crop model of --roi_subset
    "6mm": (6.0, [32, 32, 32], [32, 32, 32], 400, 0.0),
    # TS's body task, fast (Dataset300): `-ta body --fast`, and the crop model of --body_seg
    "body": (6.0, [32, 32, 32], [32, 32, 32], 300, 0.0),
    # the 1.5 mm experts: whole plans patches, half of them centred on a random present class
    # (at 1.5 mm a patch sees a quarter of the body); the organs expert trains longest
    "organs": (1.5, [64, 64, 64], [64, 64, 64], 2500, 0.5),
    "cardiac": (1.5, [64, 64, 64], [64, 64, 64], 900, 0.5),
    "vertebrae": (1.5, [64, 64, 64], [64, 64, 64], 900, 0.5),
    "muscles": (1.5, [64, 64, 64], [64, 64, 64], 900, 0.5),
    "ribs": (1.5, [64, 64, 64], [64, 64, 64], 900, 0.5),
}


def _prepare_cases(model, spacing: float, tmp: Path):
    """Phantoms run through nnU-Net's own preprocessing, labels mapped to this model's ids."""
    import nibabel as nib
    from model_folder_writer import ts_class_names, ts_dataset_json
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from totalsegmentator.map_to_binary import class_map
    from TuckerSegmentLib.demo.phantom import make_phantom
    from TuckerSegmentLib.ts.architectures import old_format_plans

    phantoms = [make_phantom(seed, spacing) for seed in TRAIN_SEEDS]
    if model.name == "body":
        names = dict(class_map["body"])
        body_trunc = {n: i for i, n in names.items()}["body_trunc"]
        model_labels = [np.where(p.body, body_trunc, 0).astype(np.uint8) for p in phantoms]
    else:
        names = ts_class_names("3mm" if model.name in ("3mm", "6mm") else "1.5mm", model.name)
        total_ids = {n: i for i, n in class_map["total"].items()}
        lut = np.zeros(256, dtype=np.uint8)
        for idx, name in names.items():
            lut[total_ids[name]] = idx
        model_labels = [lut[p.labels] for p in phantoms]
    foreground = np.concatenate([p.ct[p.labels > 0] for p in phantoms]).astype(np.float64)
    intensity = {
        "max": float(foreground.max()),
        "mean": float(foreground.mean()),
        "median": float(np.median(foreground)),
        "min": float(foreground.min()),
        "percentile_00_5": float(np.percentile(foreground, 0.5)),
        "percentile_99_5": float(np.percentile(foreground, 99.5)),
        "std": float(foreground.std()),
    }
    setting = SETTINGS[model.name]
    plans = old_format_plans(FEATURES, STRIDES, setting[1], [spacing] * 3, model.dataset_folder)
    plans["foreground_intensity_properties_per_channel"] = {"0": intensity}
    dataset_json = ts_dataset_json(names)
    dataset_json["numTraining"] = len(phantoms)
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    preprocessor = DefaultPreprocessor(verbose=False)
    cases = []
    for k, (phantom, labels) in enumerate(zip(phantoms, model_labels, strict=True)):
        ct, _ = phantom.to_nifti()
        seg = nib.Nifti1Image(labels, phantom.affine)
        nib.save(ct, tmp / f"c{k}_0000.nii.gz")
        nib.save(seg, tmp / f"c{k}.nii.gz")
        data, target, _ = preprocessor.run_case(
            [str(tmp / f"c{k}_0000.nii.gz")],
            str(tmp / f"c{k}.nii.gz"),
            manager,
            config,
            dataset_json,
        )
        target = np.maximum(target[0], 0)  # nnU-Net marks voxels outside its crop mask with -1
        data, target = _pad_to(
            torch.from_numpy(data.astype(np.float32)),
            torch.from_numpy(target.astype(np.int64)),
            setting[2],
        )
        cases.append((data, target, _class_voxels(target)))
    return plans, dataset_json, cases


def _pad_to(data: torch.Tensor, target: torch.Tensor, patch: list[int]):
    """Pad a case that is smaller than the training patch (image with its minimum, labels with
    background), once, so that every patch lies inside it."""
    pads = [max(0, p - s) for p, s in zip(patch, data.shape[1:], strict=True)]
    if not any(pads):
        return data, target
    pad = [q for p in reversed(pads) for q in (p // 2, p - p // 2)]
    return F.pad(data, pad, value=float(data.min())), F.pad(target, pad, value=0)


def _class_voxels(target: torch.Tensor) -> list[torch.Tensor]:
    """Per present foreground class, the flat indices of its voxels (for class-balanced patches)."""
    flat = target.reshape(-1)
    return [torch.nonzero(flat == c).squeeze(1) for c in torch.unique(flat).tolist() if c > 0]


def _random_patch(case, patch, generator, foreground_share: float = 0.0):
    """A training patch: a share of them centred on a voxel of a random present class (small
    organs are otherwise rarely seen at 1.5 mm), the others anywhere."""
    data, target, classes = case
    shape = data.shape[1:]
    if (
        foreground_share
        and classes
        and float(torch.rand(1, generator=generator)) < foreground_share
    ):
        voxels = classes[int(torch.randint(0, len(classes), (1,), generator=generator))]
        flat = int(voxels[int(torch.randint(0, len(voxels), (1,), generator=generator))])
        centre = [flat // (shape[1] * shape[2]), (flat // shape[2]) % shape[1], flat % shape[2]]
        starts = [
            min(max(0, c - p // 2), s - p) for c, p, s in zip(centre, patch, shape, strict=True)
        ]
    else:
        starts = [
            int(torch.randint(0, s - p + 1, (1,), generator=generator))
            for s, p in zip(shape, patch, strict=True)
        ]
    window = tuple(slice(a, a + p) for a, p in zip(starts, patch, strict=True))
    return data[(slice(None), *window)], target[window]


def _loss(logits, target, classes):
    ce = F.cross_entropy(logits, target)
    probs = logits.softmax(1)
    onehot = F.one_hot(target, classes).movedim(-1, 1).float()
    dims = (0, 2, 3, 4)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    return ce + (1 - dice[present][1:].mean() if present[1:].any() else 0.0)


SPECTRAL_SHARE = 0.25  # of a layer's channels, at least SPECTRAL_FLOOR
SPECTRAL_FLOOR = 4
SPECTRAL_WEIGHT = 30.0


def _spectral_penalty(network) -> torch.Tensor:
    """Mean fraction of each kernel's energy outside its leading max(4, ceil(0.25·C)) channel directions
    (both channel unfoldings of every k×k×k conv), measured with every output channel scaled to
    unit norm: instance norm follows each conv, so an output channel's scale is irrelevant and
    what compression must keep is each channel's shape.

    TS's networks are large and trained for thousands of epochs; their kernels concentrate their
    energy in few channel directions, which is what makes post-training Tucker compression
    work. These test networks are tiny and trained for minutes; without this term their kernels
    stay nearly full-rank and no compression survives. The term gives them TS's property."""
    terms = []
    for module in network.modules():
        if isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and any(
            k > 1 for k in module.kernel_size
        ):
            out_mode = 1 if isinstance(module, torch.nn.ConvTranspose3d) else 0
            w = module.weight
            per_channel = w.movedim(out_mode, 0).reshape(w.shape[out_mode], -1).norm(dim=1)
            shape = [1] * w.dim()
            shape[out_mode] = -1
            w = w / per_channel.clamp_min(1e-8).reshape(shape)
            for mode in (0, 1):
                matrix = w.movedim(mode, 0).reshape(w.shape[mode], -1)
                if matrix.shape[0] < 2:
                    continue
                energy = torch.linalg.svdvals(matrix) ** 2
                keep = min(
                    matrix.shape[0],
                    max(SPECTRAL_FLOOR, math.ceil(SPECTRAL_SHARE * matrix.shape[0])),
                )
                if keep == matrix.shape[0]:
                    continue
                terms.append(energy[keep:].sum() / energy.sum().clamp_min(1e-12))
    return torch.stack(terms).mean()


def train(model, tmp: Path, out: Path) -> Path:
    from model_folder_writer import write_model_folder
    from TuckerSegmentLib.ts.architectures import spec_from_plans

    spacing, _, patch, iterations, foreground_share = SETTINGS[model.name]
    plans, dataset_json, cases = _prepare_cases(model, spacing, tmp)
    classes = len(dataset_json["labels"])
    spec = spec_from_plans(plans, classes, model.name)
    torch.manual_seed(model.task_id)
    network = spec.build("cpu", seed=model.task_id).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=iterations)
    generator = torch.Generator().manual_seed(model.task_id)
    start = time.time()
    for step in range(iterations):
        picks = torch.randint(0, len(cases), (2,), generator=generator)
        batch = [_random_patch(cases[int(i)], patch, generator, foreground_share) for i in picks]
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        loss = _loss(network(x), y, classes) + SPECTRAL_WEIGHT * _spectral_penalty(network)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == iterations - 1:
            print(
                f"  {model.name} step {step:4d} loss {float(loss):.3f} ({time.time() - start:.0f} s)",
                flush=True,
            )
    network.eval()
    folder = model.folder(out)
    write_model_folder(folder, plans, dataset_json, network.state_dict(), model.trainer)
    return folder


def main() -> int:
    sys.path.insert(0, str(HERE.parent / "TuckerSegment"))
    from TuckerSegmentLib.ts.weights import fastest_model, task_model, total_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="*", help="model names: 3mm 6mm organs vertebrae cardiac muscles ribs body"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="weights folder to write")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    models = total_models(True) + [fastest_model()] + total_models(False)
    models.append(task_model("body", "fast"))
    for model in models:
        if args.only and model.name not in args.only:
            continue
        print(f"training {model.name} ({model.dataset_folder})", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            folder = train(model, Path(tmp), args.out)
        size = (folder / "fold_0" / "checkpoint_final.pth").stat().st_size
        print(f"  wrote {folder} ({size / 1e6:.2f} MB)", flush=True)
    (args.out / "README.md").write_text(
        "Test models trained by `Testing/make_test_models.py` on synthetic phantoms "
        "(TuckerSegmentLib.demo.phantom). Not TotalSegmentator's weights: they know only the "
        "phantom's structures. Layout: a TOTALSEG_WEIGHTS_PATH with TS's folder names.\n\n"
        + json.dumps(
            {
                "features": FEATURES,
                "strides": STRIDES,
                "train_seeds": list(TRAIN_SEEDS),
                "settings": SETTINGS,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
