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
    from ..engine.compress import CompressionSettings
    from ..engine.counting import count_network
    from ..engine.prune import prune_network, zeroed_share
    from ..storage.compressed_format import Manifest, save_compressed
    from ..ts.model_folder import open_model_folder
    from .plan import model_folder

    output = Path(args.output)
    if output.exists():
        raise TuckerSegmentError(f"{output} exists; choose another output (it is never replaced)")
    folder = open_model_folder(
        model_folder(args.model, Path(args.weights_dir) if args.weights_dir else None)
    )
    network = folder.load_network("cpu")
    counts = count_network(network, folder.spec.patch_size, folder.spec.input_channels)
    pruned = prune_network(network, args.method, args.ratio, args.seed)
    share = zeroed_share(network, pruned)
    modules = dict(network.named_modules())
    zeroed_weights = sum(
        modules[p.name].weight.numel() // p.out_channels * len(p.zeroed) for p in pruned
    )
    manifest = Manifest(
        spec=folder.spec,
        settings=CompressionSettings(df=1.0),  # no Tucker layers: the pruned original
        layers=[],
        source_sha256=folder.checkpoint_sha256(),
        extra={
            "model": args.model,
            "source_model": folder.path.name,
            # the paper's measure: the zeroed filters' weights count as removed; the shapes
            # (and so the FLOPs run) are the original's
            "params": {"original": counts.params, "compressed": counts.params - zeroed_weights},
            "gflops_per_patch": {"original": counts.gflops, "compressed": counts.gflops},
            "prune": {
                "method": args.method,
                "ratio": args.ratio,
                "seed": args.seed if args.method == "random-widest" else None,
                "zeroed_share_of_pruned_layers": share,
                "layers": {p.name: [p.out_channels, len(p.zeroed)] for p in pruned},
            },
        },
    )
    save_compressed(output, network.eval(), manifest)
    print(
        f"wrote {output}: {args.model}, {args.method} {args.ratio:g}: {share:.1%} of the "
        f"factorizable layers' kernel weights zeroed ({zeroed_weights:,} of "
        f"{counts.params:,} parameters)",
        file=sys.stdout,
    )
    return 0
