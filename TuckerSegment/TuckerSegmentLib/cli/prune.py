"""`tucker-segment prune`: the pruning baselines, written in the compressed-model format.

tucker-segment prune --model 3mm --method l2 --ratio 0.5 -o pruned-3mm
tucker-segment segment -i ct.nii.gz -o ct.seg.nrrd --fast --compressed-model pruned-3mm
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import TuckerSegmentError


def add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune",
        help="the pruning baselines (the paper's L2, the thesis's random-widest) as zeroed filters",
        description="Zero a fraction of the filters of an installed TS model: l2 removes each "
        "layer's output channels with the smallest kernel norms (the Tucker paper's baseline); "
        "random-widest removes random filters from the widest layers (the STAMP thesis's "
        "finding). Written in the compressed-model format: run it with `segment "
        "--compressed-model OUT`, compare it, fine-tune from it like a Tucker model.",
    )
    p.add_argument("--model", required=True, help="3mm, 6mm, organs, vertebrae, cardiac, …")
    p.add_argument("--method", required=True, choices=("l2", "random-widest"))
    p.add_argument("--ratio", required=True, type=float, help="fraction removed, e.g. 0.5")
    p.add_argument("--seed", type=int, default=0, help="random-widest's random choice")
    p.add_argument("--weights-dir", help="TS weights folder (default: where TS keeps them)")
    p.add_argument("-o", "--output", required=True, help="folder for the pruned model")
    p.set_defaults(run=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    from ..storage.pruned import write_pruned_model
    from .plan import model_folder

    output = Path(args.output)
    if output.exists():
        raise TuckerSegmentError(f"{output} exists; choose another output (it is never replaced)")
    folder = model_folder(args.model, Path(args.weights_dir) if args.weights_dir else None)
    made = write_pruned_model(folder, args.model, args.method, args.ratio, args.seed, output)
    removed = made.params_original - made.params_left
    print(
        f"wrote {output}: {args.model}, {args.method} {args.ratio:g}: {made.zeroed_share:.1%} of "
        f"the factorizable layers' kernel weights zeroed ({removed:,} of "
        f"{made.params_original:,} parameters)",
        file=sys.stdout,
    )
    return 0
