"""int8 (NNCF, `--runtime openvino-int8`) or bf16 (`--runtime openvino-bf16`) against
fp32 on the test models: the issue's rule is to make a reduced precision a default only where
the mean Dice against fp32 stays ≥ 0.99. Also the fp32 runtimes `fused` and `openvino`, which
hand nnU-Net their logits in fp16 (the dtype it sums them in). The reference is always torch
eager in fp32 with fp32 logits (`--runtime eager`); every OpenVINO candidate hands fp16 logits. Segments held-out phantoms in fast mode (3 mm model)
and full mode (five experts), at the default DFs, with the fp32 torch runtime and with the
candidate, and prints the mean Dice over the structures present and the share of identical
voxels.

    .venv/bin/python Testing/reduced_precision_agreement.py [--candidate int8|bf16|fused|openvino]
        [--seeds 701 702]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "TuckerSegment"))
MODELS = HERE.parent / "TuckerSegment" / "TuckerSegmentLib" / "demo" / "models"
CANDIDATES = {
    "int8": ("openvino-int8", "fp32"),
    "bf16": ("openvino-bf16", "fp32"),
    "fused": ("fused", "fp32"),  # fp32 networks, fp16 logits handed over
    "openvino": ("openvino", "fp32"),
}  # runtime, precision


def main() -> int:
    import nibabel as nib
    from TuckerSegmentLib.demo.phantom import make_phantom
    from TuckerSegmentLib.pipeline.agreement import compare_labels
    from TuckerSegmentLib.pipeline.segment import SegmentOptions, segment
    from TuckerSegmentLib.ts.structures import structure_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[701, 702])
    parser.add_argument("--candidate", choices=sorted(CANDIDATES), default="int8")
    args = parser.parse_args()
    candidate = (args.candidate, CANDIDATES[args.candidate])
    if args.candidate == "bf16":
        from TuckerSegmentLib.runtime.openvino_runtime import native_bf16

        if not native_bf16():
            parser.error("this CPU has no native bf16: OpenVINO would run f32, not bf16")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["TUCKERSEGMENT_CACHE"] = str(tmp / "cache")
        for fast in (True, False):
            dice, same = [], []
            for seed in args.seeds:
                ct, _ = make_phantom(seed, spacing=1.5).to_nifti()
                nib.save(ct, tmp / "ct.nii.gz")
                labels = {}
                for name, (runtime, precision) in (("eager", ("eager", "fp32")), candidate):
                    out = tmp / f"{name}.nii.gz"
                    segment(
                        SegmentOptions(
                            tmp / "ct.nii.gz",
                            out,
                            fast=fast,
                            device="cpu",
                            precision=precision,
                            runtime=runtime,
                            weights_dir=MODELS,
                        )
                    )
                    labels[name] = np.asanyarray(nib.load(out).dataobj)
                    spacing = tuple(float(z) for z in nib.load(out).header.get_zooms()[:3])
                report = compare_labels(
                    labels["eager"], labels[args.candidate], spacing, structure_names()
                )
                dice.append(report.summary["mean_dice"])
                same.append(float(np.mean(labels["eager"] == labels[args.candidate])))
            results["fast (3 mm)" if fast else "full (five experts)"] = {
                f"mean_dice_{args.candidate}_vs_fp32": round(float(np.mean(dice)), 4),
                "identical_voxels": round(float(np.mean(same)), 5),
                "phantoms": len(args.seeds),
            }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
