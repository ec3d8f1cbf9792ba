"""End-to-end speed: `tucker-segment segment --fast --df 0.3` against TotalSegmentator's own
command (`TotalSegmentator --fast --ml`) on the same real-size CT, same machine, same run.

TS's weights can't be downloaded here, so both use a full-size TS 3 mm model folder with seeded
random weights (speed does not depend on weight values; the labels are meaningless). The CT is a
phantom on a typical abdomen grid (512×512×200 at 0.7×0.7×1.5 mm). Each command runs in its own
process, timed from start to exit; TS runs with its defaults (usage statistics off).

    .venv/bin/python Testing/e2e_speed.py [--df 0.3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
SHAPE = (512, 512, 200)
SPACING = (0.7, 0.7, 1.5)

TS_COMMAND = """
import sys
from pathlib import Path
sys.path.insert(0, {lib!r})
from TuckerSegmentLib.ts.environment import ts_environment
if __name__ == "__main__":
    with ts_environment(Path({weights!r})):
        from totalsegmentator.bin.TotalSegmentator import main
        sys.argv = ["TotalSegmentator", "-i", {ct!r}, "-o", {out!r}, "--fast", "--ml",
                    "--device", "cpu", "--quiet"]
        main()
"""


def real_size_ct(path: Path, seed: int = 7) -> None:
    """A phantom placed in a 512×512×200 abdomen-sized grid (air around it)."""
    import nibabel as nib

    sys.path.insert(0, str(HERE.parent / "TuckerSegment"))
    from TuckerSegmentLib.demo.phantom import make_phantom

    phantom = make_phantom(seed, SPACING)
    volume = np.full(SHAPE, -1000, dtype=np.int16)
    rng = np.random.default_rng(seed)
    volume += rng.normal(0, 8, SHAPE).astype(np.int16)
    offset = [(s - p) // 2 for s, p in zip(SHAPE, phantom.ct.shape, strict=True)]
    window = tuple(slice(o, o + p) for o, p in zip(offset, phantom.ct.shape, strict=True))
    volume[window] = phantom.ct
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-s * d / 2 for s, d in zip(SHAPE, SPACING, strict=True)]
    nib.save(nib.Nifti1Image(volume, affine), path)


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--df", default="0.3")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent / "TuckerSegment"))
    from model_folder_writer import write_random_ts_folder
    from TuckerSegmentLib.ts.weights import total_models

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ct = tmp / "ct.nii.gz"
        real_size_ct(ct)
        weights = tmp / "weights"
        write_random_ts_folder(total_models(True)[0].folder(weights), "3mm", seed=0)
        env = {**os.environ, "HOME": str(tmp), "TUCKERSEGMENT_CACHE": str(tmp / "cache")}
        ours = [
            PYTHON,
            "-m",
            "TuckerSegmentLib",
            "segment",
            "-i",
            str(ct),
            "-o",
            str(tmp / "ours.nii.gz"),
            "--fast",
            "--df",
            args.df,
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--weights-dir",
            str(weights),
            "--progress",
            "none",
        ]
        env["PYTHONPATH"] = str(HERE.parent / "TuckerSegment")
        first = timed(ours, env)  # decomposes and fills the cache, as a user's first run does
        script = TS_COMMAND.format(
            lib=str(HERE.parent / "TuckerSegment"),
            weights=str(weights),
            ct=str(ct),
            out=str(tmp / "ts.nii.gz"),
        )
        ts_times, our_times = [], []
        for _ in range(args.repeats):  # interleaved
            ts_times.append(timed([PYTHON, "-c", script], env))
            our_times.append(timed(ours, env))
        sidecar = json.loads((tmp / "ours.json").read_text())
        ts_s, our_s = statistics.median(ts_times), statistics.median(our_times)
        print(
            json.dumps(
                {
                    "ct_shape": SHAPE,
                    "spacing_mm": SPACING,
                    "df": float(args.df),
                    "totalsegmentator_s": [round(t, 1) for t in ts_times],
                    "tucker_segment_s": [round(t, 1) for t in our_times],
                    "tucker_segment_first_run_s": round(first, 1),
                    "speedup": round(ts_s / our_s, 2),
                    "our_timings": sidecar["timings"],
                    "patches": sidecar["patches"],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
