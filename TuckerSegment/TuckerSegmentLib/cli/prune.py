"""`tucker-segment prune`: the pruning baselines, written in the compressed-model format.

tucker-segment prune --model 3mm --method l2 --ratio 0.5 -o pruned-3mm
tucker-segment prune --model 3mm --method l2 --ratio 0.5 --structured -o smaller-3mm
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
        help="the pruning baselines (the paper's L2, the thesis's random-widest): filters "
        "zeroed, or removed (--structured)",
        description="Zero a fraction of the filters of an installed TS model: l2 zeroes each "
        "layer's output channels with the smallest kernel norms (the Tucker paper's baseline); "
        "random-widest removes random filters from the widest layers (the STAMP thesis's "
        "finding). --structured removes them for real (Torch-Pruning: norms, next convs, skip "
        "concatenations shrink with them): a smaller, faster network. Written in the "
        "compressed-model format: run it with `segment "
        "--compressed-model OUT`, compare it, fine-tune from it like a Tucker model.",
    )
    p.add_argument("--model", required=True, help="3mm, 6mm, organs, vertebrae, cardiac, …")
    p.add_argument("--method", required=True, choices=("l2", "random-widest"))
    p.add_argument("--ratio", required=True, type=float, help="fraction removed, e.g. 0.5")
    p.add_argument("--seed", type=int, default=0, help="random-widest's random choice")
    p.add_argument(
        "--structured",
        action="store_true",
        help="remove the filters (channels) instead of zeroing them (needs torch-pruning: "
        "pip install 'tuckersegment[prune]')",
    )
    p.add_argument("--weights-dir", help="TS weights folder (default: where TS keeps them)")
    p.add_argument("-o", "--output", required=True, help="folder for the pruned model")
    p.set_defaults(run=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    from ..storage.pruned import write_pruned_model
    from .plan import model_folder

    output = Path(args.output)
    if output.exists():
        raise TuckerSegmentError(f"{output} exists; choose another output (it is never replaced)")
    if args.structured:
        import importlib.util

        if importlib.util.find_spec("torch_pruning") is None:
            raise TuckerSegmentError(
                "--structured needs Torch-Pruning: pip install 'tuckersegment[prune]'"
            )
    folder = model_folder(args.model, Path(args.weights_dir) if args.weights_dir else None)
    made = write_pruned_model(
        folder, args.model, args.method, args.ratio, args.seed, output, args.structured
    )
    removed = made.params_original - made.params_left
    how = "removed" if args.structured else "zeroed"
    print(
        f"wrote {output}: {args.model}, {args.method} {args.ratio:g}{' structured' * args.structured}: "
        f"{made.zeroed_share:.1%} of the factorizable layers' kernel weights {how} ({removed:,} "
        f"of {made.params_original:,} parameters)",
        file=sys.stdout,
    )
    return 0
