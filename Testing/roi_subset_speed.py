"""`--roi_subset liver spleen --df 0.3` in TS's full mode through `tucker-totalsegmentator`,
against plain TotalSegmentator with the same `--roi_subset` and without it, one after the other
on this machine (goals: ≥ 10× faster than plain TS without it, ≥ 1.5× faster than with it).

The CT is a phantom on the grid of TS's example CT (122×101×112 at 3 mm, air around it). The
five 1.5 mm experts and the 3 mm model are full-size TS architectures with seeded random weights
(TS's weights can't be downloaded here; speed does not depend on weight values). The 6 mm crop
model (Dataset298) is the project's trained 6 mm test model, so the crop around liver and spleen
is where those organs are (random weights would crop at random); its cost is small next to an
expert's. Each command runs in its own process, timed from start to exit; ours once before the
timed run to fill the compressed-model cache, as any first run does.

    .venv/bin/python Testing/roi_subset_speed.py [--df 0.3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from e2e_speed import PYTHON, TS_COMMAND, real_size_ct, timed  # noqa: E402

MODELS = HERE.parent / "TuckerSegment" / "TuckerSegmentLib" / "demo" / "models"
ROI = ["liver", "spleen"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--df", default="0.3")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent / "TuckerSegment"))
    from model_folder_writer import write_random_ts_folder
    from TuckerSegmentLib.ts.weights import fastest_model, total_models

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ct = tmp / "ct.nii.gz"
        real_size_ct(ct, shape=(122, 101, 112), spacing=(3.0, 3.0, 3.0))
        weights = tmp / "weights"
        for i, model in enumerate(total_models(False)):
            write_random_ts_folder(model.folder(weights), "1.5mm", model.name, seed=i)
        (fast,) = total_models(True)
        write_random_ts_folder(fast.folder(weights), "3mm", fast.name, seed=9)
        crop = fastest_model()
        shutil.copytree(crop.folder(MODELS), crop.folder(weights))
        env = {
            **os.environ,
            "HOME": str(tmp),
            "TUCKERSEGMENT_CACHE": str(tmp / "cache"),
            "TOTALSEG_WEIGHTS_PATH": str(weights),
            "PYTHONPATH": str(HERE.parent / "TuckerSegment"),
        }

        def plain(extra: list[str], out: str) -> list[str]:
            script = TS_COMMAND.format(
                lib=str(HERE.parent / "TuckerSegment"),
                weights=str(weights),
                ct=str(ct),
                out=str(tmp / out),
                mode=extra,
            )
            return [PYTHON, "-c", script]

        ours = [
            PYTHON,
            "-m",
            "TuckerSegmentLib.cli.totalsegmentator_dropin",
            "-i",
            str(ct),
            "-o",
            str(tmp / "ours.nii.gz"),
            "--ml",
            "-d",
            "cpu",
            "-q",
            "--roi_subset",
            *ROI,
            "--df",
            args.df,
        ]
        first_s, _ = timed(ours, env)  # decomposes the models it loads, once
        ours_s, ours_gib = timed(ours, env)
        roi_s, roi_gib = timed(plain(["--roi_subset", *ROI], "ts_roi.nii.gz"), env)
        full_s, full_gib = timed(plain([], "ts_full.nii.gz"), env)
        print(
            json.dumps(
                {
                    "ct": "phantom on a 122×101×112 grid at 3 mm (TS's example CT's size)",
                    "df": float(args.df),
                    "totalsegmentator_full_s": round(full_s, 1),
                    "totalsegmentator_roi_subset_s": round(roi_s, 1),
                    "tucker_totalsegmentator_roi_subset_s": round(ours_s, 1),
                    "tucker_totalsegmentator_first_run_s": round(first_s, 1),
                    "speedup_vs_full": round(full_s / ours_s, 2),
                    "speedup_vs_roi_subset": round(roi_s / ours_s, 2),
                    "peak_gib": {
                        "totalsegmentator_full": round(full_gib, 2),
                        "totalsegmentator_roi_subset": round(roi_gib, 2),
                        "tucker_totalsegmentator_roi_subset": round(ours_gib, 2),
                    },
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
