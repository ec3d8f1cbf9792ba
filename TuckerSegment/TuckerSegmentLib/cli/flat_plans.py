"""`tucker-segment flat-plans`: the Flat U-Net as an nnU-Net plans variant to train with nnU-Net.

    tucker-segment flat-plans --plans $nnUNet_preprocessed/Dataset042_X/nnUNetPlans.json \\
        -o $nnUNet_preprocessed/Dataset042_X/nnUNetPlansFlat.json
    nnUNetv2_train 42 3d_fullres_flat 0 -p nnUNetPlansFlat
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_flat_plans(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flat-plans",
        help="nnU-Net plans with a Flat U-Net configuration (every stage as wide as the first)",
        description="Copy an nnU-Net plans file and add CONFIGURATION_flat: the same "
        "configuration with every stage at the first stage's filter count (the Flat U-Net of "
        "the STAMP thesis). Train it with nnU-Net: nnUNetv2_train DATASET CONFIGURATION_flat "
        "FOLD -p NAME (NAME: the output file's stem). The data preprocessed for CONFIGURATION "
        "is reused. The plans given are never modified.",
    )
    p.add_argument("--plans", required=True, help="an nnU-Net plans file (nnUNetPlans.json)")
    p.add_argument("--configuration", default="3d_fullres", help="default 3d_fullres")
    p.add_argument("--width", type=int, help="filters per stage (default: the first stage's)")
    p.add_argument("-o", "--output", required=True, help="the new plans file (.json)")
    p.set_defaults(run=run_flat_plans)


def run_flat_plans(args: argparse.Namespace) -> int:
    from ..pipeline.output_files import check_output_file
    from ..ts.flat_unet import write_flat_plans

    output = check_output_file(Path(args.output), (".json",))
    name, features = write_flat_plans(Path(args.plans), output, args.configuration, args.width)
    print(f"wrote {output}: configuration {name}, filters per stage {features}")
    print(f"train it with nnU-Net: nnUNetv2_train DATASET {name} FOLD -p {output.stem}")
    return 0
