"""A planned network against one DF for all layers at the same parameter count, on the test
models: mean Dice with the original networks (over the model's structures present) on held-out
phantoms, through TS's pipeline (`segment --plan` vs `segment --df`), and the plan's predicted
agreement (calibrated with `plan --calibrate` on other phantoms) beside the measured one — per
held-out phantom too, adjusted for its complexity (`plan --image`) when the calibration relates
complexity to the loss (three or more calibration phantoms). Prints a table and writes a CSV.

    .venv/bin/python Testing/plan_vs_uniform.py [--budgets 3mm=25,3mm=15,3mm=8,organs=15]
        [--rank-floor 4] [--uniform-rank-floor 8] [--calibration-seeds 901 902 904 905]
        [--eval-seeds 801 802 803] [-o plan-vs-uniform.csv]

Each agreement is also given over the structures the original segments with at least 1 ml
(``*_segmented``): the organs test expert marks 0-16 voxels of a phantom's gallbladder, whose
Dice is then 0 or 1 by whether one voxel survives compression.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "TuckerSegment"))
sys.path.insert(0, str(HERE))
MODELS = HERE.parent / "TuckerSegment" / "TuckerSegmentLib" / "demo" / "models"
EVAL_SEEDS = (801, 802, 803)  # neither the test models' training seeds nor the fine-tuning ones
CALIBRATION_SEEDS = (901, 902)  # the predicted agreement is calibrated on others than EVAL_SEEDS


def _model_folder(model: str) -> Path:
    from TuckerSegmentLib.cli.plan import model_folder

    return model_folder(model, MODELS)


def agreement(model: str, seed: int, tmp: Path, **run) -> tuple[float, float]:
    """Mean Dice with the original over the model's structures present in either network's
    output, and over those the original segments with at least SEGMENTED_ML."""
    import nibabel as nib
    from finetune_curve import SEGMENTED_ML, model_experts
    from TuckerSegmentLib.demo.phantom import make_phantom
    from TuckerSegmentLib.pipeline.agreement import compare_labels
    from TuckerSegmentLib.pipeline.segment import SegmentOptions, segment
    from TuckerSegmentLib.ts.model_folder import open_model_folder
    from TuckerSegmentLib.ts.structures import structure_names

    fast = model == "3mm"
    ct, _ = make_phantom(seed, spacing=3.0 if fast else 1.5).to_nifti()
    nib.save(ct, tmp / "ct.nii.gz")
    out = tmp / f"seg-{seed}.nii.gz"
    others = {} if fast else {m: 1.0 for m in model_experts() if m != model}
    segment(
        SegmentOptions(
            tmp / "ct.nii.gz",
            out,
            fast=fast,
            expert_df={**others, **({model: run["df"]} if "df" in run else {})},
            # the one-DF networks at the rank floor their parameter counts were found at
            **({"rank_floor": run["rank_floor"]} if "rank_floor" in run else {}),
            plans=run.get("plans", []),
            compare=True,
            device="cpu",
            precision="fp32",
            weights_dir=MODELS,
        )
    )
    names = structure_names()
    ours = set(open_model_folder(_model_folder(model)).spec.labels)
    result = np.asanyarray(nib.load(out).dataobj)
    original = np.asanyarray(nib.load(str(out).replace(".nii.gz", ".original.nii.gz")).dataobj)
    spacing = tuple(float(z) for z in nib.load(out).header.get_zooms()[:3])
    report = compare_labels(original, result, spacing, names)
    present = [s for s in report.present() if s.name in ours]
    segmented = [s.dice for s in present if s.volume_a_ml >= SEGMENTED_ML]
    return float(np.mean([s.dice for s in present])), float(np.mean(segmented))


def calibration_cts(model: str, seeds: list[int], tmp: Path) -> list[str]:
    import nibabel as nib
    from TuckerSegmentLib.demo.phantom import make_phantom

    paths = []
    for seed in seeds:
        path = tmp / f"calibration-{model}-{seed}.nii.gz"
        ct, _ = make_phantom(seed, spacing=3.0 if model == "3mm" else 1.5).to_nifti()
        nib.save(ct, path)
        paths.append(str(path))
    return paths


def eval_cts(model: str, seeds: list[int], tmp: Path) -> dict[int, str]:
    """The held-out phantoms as files, for `plan --image`."""
    import nibabel as nib
    from TuckerSegmentLib.demo.phantom import make_phantom

    paths = {}
    for seed in seeds:
        path = tmp / f"eval-{model}-{seed}.nii.gz"
        ct, _ = make_phantom(seed, spacing=3.0 if model == "3mm" else 1.5).to_nifti()
        nib.save(ct, path)
        paths[seed] = str(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="3mm=25,3mm=15,3mm=8,organs=15")
    parser.add_argument("--rank-floor", type=int, default=4)
    parser.add_argument(
        "--uniform-rank-floor", type=int, help="one DF's rank floor (default: --rank-floor)"
    )
    parser.add_argument("--calibration-seeds", type=int, nargs="*", default=CALIBRATION_SEEDS)
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=EVAL_SEEDS)
    parser.add_argument("-o", "--output", default="plan-vs-uniform.csv")
    args = parser.parse_args()
    seeds = list(args.eval_seeds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["TUCKERSEGMENT_CACHE"] = str(tmp / "cache")
        from TuckerSegmentLib.cli.main import main as cli

        calibrated = set()
        for item in args.budgets.split(","):
            model, percent = item.split("=")
            plan_path = tmp / f"plan-{model}-{percent}.json"
            calibrate = []
            if model not in calibrated and args.calibration_seeds:
                calibrated.add(model)
                calibrate = ["--calibrate", *calibration_cts(model, args.calibration_seeds, tmp)]
            code = cli(
                [
                    "plan",
                    "--model",
                    model,
                    "--max-params",
                    f"{percent}%",
                    "--rank-floor",
                    str(args.rank_floor),
                    "--weights-dir",
                    str(MODELS),
                    "-o",
                    str(plan_path),
                    *calibrate,
                    "--image",
                    *eval_cts(model, seeds, tmp).values(),
                ]
            )
            assert code == 0
            plan = json.loads(plan_path.read_text())
            from TuckerSegmentLib.engine.planner import uniform_dfs_around
            from TuckerSegmentLib.ts.model_folder import open_model_folder

            spec = open_model_folder(_model_folder(model)).spec
            floor = args.uniform_rank_floor or args.rank_floor
            (below, below_params), (above, above_params) = uniform_dfs_around(
                spec, plan["params"]["planned"], floor
            )
            planned, planned_segmented = zip(
                *(agreement(model, s, tmp, plans=[plan_path]) for s in seeds), strict=True
            )
            under, under_segmented = zip(
                *(agreement(model, s, tmp, df=below, rank_floor=floor) for s in seeds), strict=True
            )
            over, over_segmented = zip(
                *(agreement(model, s, tmp, df=above, rank_floor=floor) for s in seeds), strict=True
            )
            row = {
                "model": model,
                "budget_percent": float(percent),
                "planned_params": plan["params"]["planned"],
                "original_params": plan["params"]["original"],
                "planned_agreement": float(np.mean(planned)),
                "uniform_df_below": below,
                "uniform_params_below": below_params,
                "uniform_agreement_below": float(np.mean(under)),
                "uniform_df_above": above,
                "uniform_params_above": above_params,
                "uniform_agreement_above": float(np.mean(over)),
                "uniform_rank_floor": floor,
                "planned_agreement_segmented": float(np.mean(planned_segmented)),
                "uniform_agreement_below_segmented": float(np.mean(under_segmented)),
                "uniform_agreement_above_segmented": float(np.mean(over_segmented)),
                "per_seed": {
                    s: [round(v, 4) for v in values]
                    for s, values in zip(
                        seeds,
                        zip(
                            planned,
                            under,
                            over,
                            planned_segmented,
                            under_segmented,
                            over_segmented,
                            strict=True,
                        ),
                        strict=True,
                    )
                },
                "planned_explained_variance": plan["mean_explained_variance"],
                "predicted_agreement": (plan["predicted_agreement"] or {}).get("mean_dice"),
                "prediction_error": (plan["predicted_agreement"] or {}).get("error"),
            }
            per_image = plan.get("images", {})
            guesses = [
                (per_image.get(f"eval-{model}-{s}.nii.gz", {}).get("predicted_agreement") or {})
                for s in seeds
            ]
            if all(g.get("mean_dice") is not None for g in guesses):
                row["per_image_measured"] = [round(v, 4) for v in planned]
                row["per_image_predicted"] = [round(g["mean_dice"], 4) for g in guesses]
                row["per_image_adjusted_by"] = guesses[0].get("complexity_measure", "")
                row["per_image_error"] = float(
                    np.mean(
                        [abs(g["mean_dice"] - v) for g, v in zip(guesses, planned, strict=True)]
                    )
                )
                row["pooled_error"] = float(
                    np.mean([abs(row["predicted_agreement"] - v) for v in planned])
                )
            best_uniform = max(row["uniform_agreement_below"], row["uniform_agreement_above"])
            row["gain"] = row["planned_agreement"] - best_uniform
            row["gain_segmented"] = row["planned_agreement_segmented"] - max(
                row["uniform_agreement_below_segmented"], row["uniform_agreement_above_segmented"]
            )
            rows.append(row)
            print(
                f"{model} {percent}%: plan {row['planned_params']:,} params → Dice "
                f"{row['planned_agreement']:.3f}; uniform DF {below:g} ({below_params:,}) → "
                f"{row['uniform_agreement_below']:.3f}, DF {above:g} ({above_params:,}) → "
                f"{row['uniform_agreement_above']:.3f}; gain over the better {row['gain']:+.3f}"
                f" (over the structures the original segments: plan "
                f"{row['planned_agreement_segmented']:.3f}, one DF "
                f"{row['uniform_agreement_below_segmented']:.3f} / "
                f"{row['uniform_agreement_above_segmented']:.3f}, gain "
                f"{row['gain_segmented']:+.3f})"
                + (
                    f"; predicted {row['predicted_agreement']:.3f} ± {row['prediction_error']:.3f}"
                    if row["predicted_agreement"] is not None
                    else ""
                )
                + (
                    f"; per phantom measured {row['per_image_measured']}, predicted "
                    f"{row['per_image_predicted']} (adjusted by "
                    f"{row['per_image_adjusted_by'] or 'nothing'}): error "
                    f"{row['per_image_error']:.3f} vs pooled {row['pooled_error']:.3f}"
                    if "per_image_error" in row
                    else ""
                ),
                flush=True,
            )
    with open(args.output, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
