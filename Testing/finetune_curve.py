"""Fine-tuning against zero-shot compression on the test models: the paper's Figure 2 on the
project's own phantoms. For each DF: segment held-out phantoms with the zero-shot compressed
model and with the model `tucker-segment finetune` made (nnU-Net's trainer, trained on other
phantoms), and report the mean Dice with the original networks (over the structures present,
and over those the original segments with at least 1 ml) and the Dice with the phantoms' truth
for the large structures (≥ 100 ml). Writes a CSV and a
PNG; prints each fine-tune's wall time (preprocessing included).

    .venv/bin/python Testing/finetune_curve.py [--model 3mm] [--df 0.5 0.3 0.1] [--epochs 10]
        [--iterations 25] [--lr 1e-3] [--cases 8] [--labels dataset|original]
        [--augmentation nnunet|none] [-o finetune-curve]

With ``--stamp 0.3 0.15``: STAMP instead (`finetune --stamp`, the original network pruned while it
trains) to each share of the parameters kept, with the same recipe and held-out phantoms, so
its rows sit beside the fine-tuned Tucker ones (CSV only; ``params_share`` is what it kept).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "TuckerSegment"))
MODELS = HERE.parent / "TuckerSegment" / "TuckerSegmentLib" / "demo" / "models"
TRAIN_SEEDS = range(600, 700)  # never the test models' own training seeds (100-115)
EVAL_SEEDS = (701, 702, 703)
LARGE_ML = 100.0
SEGMENTED_ML = 1.0  # "the original segments it": at least this much in the original's output


def model_labels(model: str) -> dict[str, int]:
    from TuckerSegmentLib.ts.model_folder import open_model_folder
    from TuckerSegmentLib.ts.weights import total_models

    fast = model == "3mm"
    entry = next(m for m in total_models(fast) if m.name == model)
    return open_model_folder(entry.folder(MODELS)).spec.labels


def phantom_case(seed: int, model: str, labels: dict[str, int]):
    """(CT image, truth in the model's ids, truth in TS's 117 ids) of one phantom."""
    import nibabel as nib
    from TuckerSegmentLib.demo.phantom import make_phantom
    from TuckerSegmentLib.ts.structures import structure_names

    phantom = make_phantom(seed, spacing=3.0 if model == "3mm" else 1.5)
    total_ids = {name: i for i, name in structure_names().items()}
    to_model = np.zeros(256, dtype=np.uint8)
    to_total = np.zeros(256, dtype=np.uint8)
    for name, idx in labels.items():
        if name in total_ids:
            to_model[total_ids[name]] = idx
            to_total[total_ids[name]] = total_ids[name]
    ct, _ = phantom.to_nifti()
    return (
        ct,
        nib.Nifti1Image(to_model[phantom.labels], phantom.affine),
        nib.Nifti1Image(to_total[phantom.labels], phantom.affine),
    )


def write_dataset(folder: Path, model: str, cases: int) -> None:
    """An nnU-Net raw dataset of phantoms with the model's labels."""
    import nibabel as nib

    labels = model_labels(model)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for k, seed in enumerate(list(TRAIN_SEEDS)[:cases]):
        ct, truth, _ = phantom_case(seed, model, labels)
        nib.save(ct, folder / "imagesTr" / f"phantom{k:03d}_0000.nii.gz")
        nib.save(truth, folder / "labelsTr" / f"phantom{k:03d}.nii.gz")
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))


def evaluate(
    model: str, df: float, given: Path | None, tmp: Path, device: str = "cpu"
) -> dict[str, float]:
    """Mean Dice with the original (present structures of this model) and mean Dice with the
    truth over the large structures, averaged over the held-out phantoms."""
    import nibabel as nib
    from TuckerSegmentLib.pipeline.agreement import compare_labels
    from TuckerSegmentLib.pipeline.segment import SegmentOptions, segment
    from TuckerSegmentLib.ts.structures import structure_names

    labels = model_labels(model)
    names = structure_names()
    ours = {i for i, n in names.items() if n in labels}
    agreement, in_phantom, segmented, truth_dice, original_truth = [], [], [], [], []
    worst: dict[str, list[float]] = {}
    for seed in EVAL_SEEDS:
        ct, _, truth = phantom_case(seed, model, labels)
        nib.save(ct, tmp / "ct.nii.gz")
        out = tmp / f"seg-{seed}.nii.gz"
        expert_df = {} if model == "3mm" else {m: 1.0 for m in model_experts() if m != model}
        segment(
            SegmentOptions(
                tmp / "ct.nii.gz",
                out,
                fast=model == "3mm",
                df=df,
                expert_df=expert_df,
                compare=True,
                device=device,
                precision="fp32",
                weights_dir=MODELS,
                compressed_models=[given] if given else [],
            )
        )
        result = np.asanyarray(nib.load(out).dataobj)
        original = np.asanyarray(nib.load(str(out).replace(".nii.gz", ".original.nii.gz")).dataobj)
        spacing = tuple(float(z) for z in nib.load(out).header.get_zooms()[:3])
        vs_original = compare_labels(original, result, spacing, names)
        present = [s.dice for s in vs_original.present() if s.label in ours]
        agreement.append(float(np.mean(present)))
        reference = np.asanyarray(truth.dataobj)
        # the definition: the structures the phantom has (a structure only one of the
        # networks claims, absent from the phantom, counts in the first mean, not in this one)
        in_truth = set(np.unique(reference).tolist()) - {0}
        kept = [s for s in vs_original.present() if s.label in ours and s.label in in_truth]
        in_phantom.append(float(np.mean([s.dice for s in kept])))
        # a structure the original itself hardly finds (the organs test expert marks 0-16 voxels
        # of the phantom's gallbladder) has a Dice of 0 or 1 by whether one voxel survives
        segmented.append(float(np.mean([s.dice for s in kept if s.volume_a_ml >= SEGMENTED_ML])))
        for s in vs_original.present():
            if s.label in ours:
                worst.setdefault(s.name, []).append(s.dice)
        for labels_map, sink in ((result, truth_dice), (original, original_truth)):
            report = compare_labels(reference, labels_map, spacing, names)
            large = [
                s.dice for s in report.structures if s.label in ours and s.volume_a_ml >= LARGE_ML
            ]
            sink.append(float(np.mean(large)))
    lowest = sorted((float(np.mean(d)), name) for name, d in worst.items())
    print(
        "agreement per structure:", ", ".join(f"{name} {d:.2f}" for d, name in lowest), flush=True
    )
    return {
        "agreement_with_original": float(np.mean(agreement)),
        "agreement_in_phantom": float(np.mean(in_phantom)),
        "agreement_segmented": float(np.mean(segmented)),
        "dice_vs_truth_large": float(np.mean(truth_dice)),
        "original_dice_vs_truth_large": float(np.mean(original_truth)),
    }


def model_experts() -> list[str]:
    from TuckerSegmentLib.ts.weights import total_models

    return [m.name for m in total_models(False)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="3mm")
    parser.add_argument("--df", type=float, nargs="+", default=[0.3])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--val-iterations", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument(
        "--labels",
        choices=("dataset", "original"),
        default="dataset",
        help="train on the phantoms' truth, or on the original network's output (distillation)",
    )
    parser.add_argument("--augmentation", choices=("nnunet", "none"), default="nnunet")
    parser.add_argument("--foreground-oversampling", type=float)
    parser.add_argument("--checkpoint", choices=("final", "best"), default="final")
    parser.add_argument("--distill", type=float, default=0.0, help="finetune --distill WEIGHT")
    parser.add_argument("--workers", type=int, default=1, help="augmentation processes")
    parser.add_argument("--device", default="cpu", help="training and evaluation device")
    parser.add_argument("--gpus", type=int, default=1, help="nnU-Net's DDP on N CUDA GPUs")
    parser.add_argument("--stamp", type=float, nargs="+", help="STAMP to these shares kept")
    parser.add_argument("--stamp-filters", type=int, default=4, help="filters removed each time")
    parser.add_argument("--keep-models", help="copy each trained model into this folder")
    parser.add_argument("-o", "--output", default="finetune-curve", help="CSV/PNG name stem")
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from the CSV")
    args = parser.parse_args()
    if args.plot_only:
        with open(f"{args.output}.csv") as handle:
            rows = [
                {
                    k: v if k in ("model", "labels", "augmentation", "device") else float(v)
                    for k, v in row.items()
                }
                for row in csv.DictReader(handle)
            ]
        plot(rows, Path(f"{args.output}.png"))
        return 0
    from TuckerSegmentLib.finetune.finetune import finetune

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["TUCKERSEGMENT_CACHE"] = str(tmp / "cache")
        dataset = tmp / "dataset"
        write_dataset(dataset, args.model, args.cases)
        if args.stamp:
            rows = [stamp_row(args, keep, dataset, tmp) for keep in args.stamp]
            write_rows(rows, Path(f"{args.output}.csv"))
            return 0
        for df in args.df:
            zero_shot = evaluate(args.model, df, None, tmp, args.device)
            start = time.perf_counter()
            out = tmp / f"finetuned-{df}"
            finetune(recipe(args, dataset, out, df=df, gpus=args.gpus))
            seconds = time.perf_counter() - start
            tuned = evaluate(args.model, df, out, tmp, args.device)
            row = {
                "model": args.model,
                "df": df,
                "zero_shot_agreement": zero_shot["agreement_with_original"],
                "finetuned_agreement": tuned["agreement_with_original"],
                "zero_shot_agreement_in_phantom": zero_shot["agreement_in_phantom"],
                "finetuned_agreement_in_phantom": tuned["agreement_in_phantom"],
                "zero_shot_agreement_segmented": zero_shot["agreement_segmented"],
                "finetuned_agreement_segmented": tuned["agreement_segmented"],
                "zero_shot_dice_vs_truth_large": zero_shot["dice_vs_truth_large"],
                "finetuned_dice_vs_truth_large": tuned["dice_vs_truth_large"],
                "original_dice_vs_truth_large": zero_shot["original_dice_vs_truth_large"],
                "finetune_seconds": round(seconds, 1),
                "steps": args.epochs * args.iterations,
                "lr": args.lr,
                "training_cases": args.cases,
                "labels": args.labels,
                "augmentation": args.augmentation,
                "device": args.device,
                "distill": args.distill,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_rows(rows, Path(f"{args.output}.csv"))
    plot(rows, Path(f"{args.output}.png"))
    return 0


def recipe(args: argparse.Namespace, dataset: Path, out: Path, **extra):  # noqa: ANN201
    """The fine-tuning options of this script's command line (one recipe for every row)."""
    from TuckerSegmentLib.finetune.finetune import FinetuneOptions

    return FinetuneOptions(
        model=args.model,
        dataset=dataset,
        output=out,
        epochs=args.epochs,
        iterations_per_epoch=args.iterations,
        val_iterations=args.val_iterations,
        lr=args.lr,
        device=args.device,
        augmentation_workers=args.workers,
        weights_dir=MODELS,
        progress="none",
        seed=0,
        labels=args.labels,
        augmentation=args.augmentation,
        foreground_oversampling=args.foreground_oversampling,
        distill=args.distill,
        **({"checkpoint": args.checkpoint} if "stamp_target" not in extra else {}),
        **extra,
    )


def write_rows(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def stamp_row(args: argparse.Namespace, keep: float, dataset: Path, tmp: Path) -> dict:
    """One STAMP run to ``keep`` of the parameters, evaluated like the Tucker rows."""
    from TuckerSegmentLib.finetune.finetune import finetune

    out = tmp / f"stamp-{keep:g}"
    start = time.perf_counter()
    finetune(recipe(args, dataset, out, stamp_target=keep, stamp_filters=args.stamp_filters))
    seconds = time.perf_counter() - start
    if args.keep_models:
        shutil.copytree(out, Path(args.keep_models) / out.name)
    manifest = json.loads((out / "manifest.json").read_text())
    params = manifest["params"]
    tuned = evaluate(args.model, 1.0, out, tmp, args.device)
    row = {
        "model": args.model,
        "method": "stamp",
        "keep": keep,
        "params_share": round(params["compressed"] / params["original"], 4),
        "finetuned_agreement": tuned["agreement_with_original"],
        "finetuned_agreement_in_phantom": tuned["agreement_in_phantom"],
        "finetuned_dice_vs_truth_large": tuned["dice_vs_truth_large"],
        "original_dice_vs_truth_large": tuned["original_dice_vs_truth_large"],
        "finetune_seconds": round(seconds, 1),
        "steps": args.epochs * args.iterations,
        "lr": args.lr,
        "labels": args.labels,
        "augmentation": args.augmentation,
    }
    print(json.dumps(row), flush=True)
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcdefaults()  # nnU-Net's plotting leaves seaborn's poster style set

    dfs = [r["df"] for r in rows]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("zero_shot", "zero-shot"), ("finetuned", "fine-tuned")):
        axes[0].plot(dfs, [r[f"{key}_agreement"] for r in rows], "o-", label=label)
        axes[1].plot(dfs, [r[f"{key}_dice_vs_truth_large"] for r in rows], "o-", label=label)
    axes[1].plot(dfs, [r["original_dice_vs_truth_large"] for r in rows], "k--", label="original")
    axes[0].set_title(f"{rows[0]['model']}: mean Dice with the original networks")
    axes[1].set_title("Dice with the truth, large structures")
    for axis in axes:
        axis.set_xlabel("DF (fraction of channels kept as rank)")
        axis.set_ylim(0, 1)
        axis.invert_xaxis()
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
