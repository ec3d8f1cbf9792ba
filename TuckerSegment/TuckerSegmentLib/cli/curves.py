"""`tucker-segment curves`: Dice and NSD with the original against compression, per method.

    tucker-segment curves --model 3mm --image ct.nii.gz --methods tucker,plan,l2,random-widest \
        --removed 0.5 0.75 0.85 [--trained FINETUNED_DIR ...] -o curves   # curves.csv, .png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..engine.ranks import DEFAULT_RANK_FLOOR


def add_curves(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "curves",
        help="agreement with the original against compression for Tucker, planned ranks and "
        "the pruning baselines (CSV + PNG)",
        description="For each method and share of parameters removed, make the model and segment "
        "each image through TS's pipeline beside the original; write every point (CSV) and the "
        "mean curves (PNG). Zero-shot, and fine-tuned or STAMP models given with --trained.",
    )
    p.add_argument("--model", required=True, help="3mm (fast mode) or an expert")
    p.add_argument("--image", action="append", required=True, help="a CT (repeat for several)")
    p.add_argument("--methods", default="tucker,plan,l2,random-widest")
    p.add_argument(
        "--removed",
        "--ratios",
        dest="removed",
        type=float,
        nargs="+",
        default=[0.5, 0.75, 0.85],
        help="shares of the parameters removed (--ratios: the same, as `prune --ratio`)",
    )
    p.add_argument(
        "--trained",
        nargs="+",
        default=[],
        metavar="MODEL_DIR",
        help="fine-tuned or STAMP models (`finetune`'s output) to add as points, each at the "
        "share of the parameters it removed",
    )
    p.add_argument("--rank-floor", type=int, default=DEFAULT_RANK_FLOOR)
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights-dir", help="TS weights folder (default: where TS keeps them)")
    p.add_argument("-o", "--output", required=True, help="name stem: STEM.csv and STEM.png")
    p.set_defaults(run=run_curves)


def run_curves(args: argparse.Namespace) -> int:
    from ..pipeline.curves import compression_curves, write_curves
    from ..pipeline.output_files import check_writable

    stem = Path(args.output)
    for suffix in (".csv", ".png"):  # STEM.csv and STEM.png, written at the end
        check_writable(stem.with_name(stem.name + suffix))
    with tempfile.TemporaryDirectory(prefix="tuckersegment-curves-") as work:
        points = compression_curves(
            [Path(i) for i in args.image],
            args.model,
            [m.strip() for m in args.methods.split(",") if m.strip()],
            args.removed,
            Path(work),
            Path(args.weights_dir) if args.weights_dir else None,
            args.rank_floor,
            args.device,
            trained=[Path(t) for t in args.trained],
        )
    table, picture = write_curves(points, stem)
    for p in points:
        dice = "-" if p.mean_dice is None else f"{p.mean_dice:.3f}"
        print(f"{p.method:14} removed {p.removed:.2f} ({p.params:,} params): mean Dice {dice}")
    print(f"wrote {table} and {picture}")
    return 0
