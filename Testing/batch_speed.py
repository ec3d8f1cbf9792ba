"""Cohort throughput and memory: `tucker-segment batch --fast --df 0.3` against running plain
TotalSegmentator (`TotalSegmentator --fast --ml`) once per case, one after the other, and
against `tucker-segment segment` once per case — the same N copies of one CT, same machine,
same run. Prints cases per minute of each, the ratios (goals: ≥ 3× vs TS, ≥ 1.5× vs segment),
the scaling from 1 to 2 LocalCluster workers, and each batch worker's peak resident memory
against one `segment` run's (goal: within 10 %).

TS's weights can't be downloaded here, so every arm uses a full-size TS 3 mm model folder with
seeded random weights (speed does not depend on weight values). The CT is TotalSegmentator's
own small example CT when ../shared has it, else a phantom on its grid.

    .venv/bin/python Testing/batch_speed.py [--cases 20] [--jobs 1 2] [--ct CT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from e2e_speed import PYTHON, TS_COMMAND, descendants, process_table, timed  # noqa: E402

EXAMPLE_CT = HERE.parent.parent / "shared" / "data" / "ts-examples" / "example_ct_sm.nii.gz"


def timed_per_process(command: list[str], env: dict) -> tuple[float, float, list[float]]:
    """(wall seconds, the command's own peak GiB, the peak GiB of each of its descendants)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peaks: dict[int, int] = {}
    while process.poll() is None:
        table = process_table()
        for pid in descendants(process.pid, table):
            peaks[pid] = max(peaks.get(pid, 0), table.get(pid, (0, 0))[1])
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read()
    if process.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{stderr[-3000:]}")
    own = peaks.pop(process.pid, 0) / 2**20
    return seconds, own, sorted((kib / 2**20 for kib in peaks.values()), reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--df", default="0.3")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ct", help="the CT to copy (default: TS's example CT)")
    parser.add_argument(
        "--no-baselines", action="store_true", help="only the batch rows (scaling, memory)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent / "TuckerSegment"))
    from model_folder_writer import write_random_ts_folder
    from TuckerSegmentLib.ts.weights import total_models

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = Path(args.ct) if args.ct else EXAMPLE_CT
        if not source.exists():
            from e2e_speed import real_size_ct

            source = tmp / "phantom.nii.gz"
            real_size_ct(source, shape=(122, 101, 112), spacing=(3.0, 3.0, 3.0))
        cohort = tmp / "cohort"
        cohort.mkdir()
        for i in range(args.cases):
            shutil.copyfile(source, cohort / f"case{i:03d}.nii.gz")
        weights = tmp / "weights"
        (model,) = total_models(True)
        write_random_ts_folder(model.folder(weights), "3mm", model.name, seed=0)
        env = {
            **os.environ,
            "HOME": str(tmp),
            "TUCKERSEGMENT_CACHE": str(tmp / "cache"),
            "PYTHONPATH": str(HERE.parent / "TuckerSegment"),
        }
        common = ["--fast", "--df", args.df, "--device", "cpu", "--precision", "fp32"]
        common += ["--weights-dir", str(weights)]
        cases = sorted(cohort.iterdir())
        ours = [PYTHON, "-m", "TuckerSegmentLib"]
        # the cache is filled once first (as for any cohort), so no arm pays the decomposition
        timed([*ours, "segment", "-i", str(cases[0]), "-o", str(tmp / "w.nii.gz"), *common], env)
        ts_s, segment_s, segment_gib = 0.0, 0.0, 0.0
        for i, case in enumerate([] if args.no_baselines else cases):
            script = TS_COMMAND.format(
                lib=str(HERE.parent / "TuckerSegment"),
                weights=str(weights),
                ct=str(case),
                out=str(tmp / f"ts{i}.nii.gz"),
                mode=["--fast"],
            )
            seconds, _ = timed([PYTHON, "-c", script], env)
            ts_s += seconds
            command = [*ours, "segment", "-i", str(case), "-o", str(tmp / f"s{i}.nii.gz")]
            seconds, gib = timed([*command, *common, "--progress", "none"], env)
            segment_s += seconds
            segment_gib = max(segment_gib, gib)
        if args.no_baselines:  # the single run that filled the cache stands for segment's memory
            ts_s = segment_s = float("nan")
            _, segment_gib = timed(
                [*ours, "segment", "-i", str(cases[0]), "-o", str(tmp / "m.nii.gz"), *common], env
            )
        rows = {}
        for jobs in args.jobs:
            out = tmp / f"batch-{jobs}"
            command = [*ours, "batch", str(cohort), "-o", str(out), *common]
            seconds, driver, others = timed_per_process(
                [*command, "--jobs", str(jobs), "--progress", "none"], env
            )
            rows[jobs] = {
                "seconds": round(seconds, 1),
                "cases_per_min": round(args.cases / seconds * 60, 2),
                "peak_gib_driver": round(driver, 2),
                # the workers (the largest), then Dask's nannies and helpers
                "peak_gib_workers": [round(g, 2) for g in others[:jobs]],
                "worker_vs_segment": round(others[0] / segment_gib, 2) if others else None,
            }
        ts_rate = args.cases / ts_s * 60
        segment_rate = args.cases / segment_s * 60
        best = max(rows, key=lambda j: rows[j]["cases_per_min"])
        print(
            json.dumps(
                {
                    "ct": str(source if args.ct or source == EXAMPLE_CT else "phantom"),
                    "cases": args.cases,
                    "df": float(args.df),
                    "cpu_count": os.cpu_count(),
                    "totalsegmentator_per_case": {
                        "seconds": round(ts_s, 1),
                        "cases_per_min": round(ts_rate, 2),
                    },
                    "segment_per_case": {
                        "seconds": round(segment_s, 1),
                        "cases_per_min": round(segment_rate, 2),
                        "peak_gib": round(segment_gib, 2),
                    },
                    "batch": rows,
                    "best_jobs": best,
                    "speedup_vs_totalsegmentator": round(rows[best]["cases_per_min"] / ts_rate, 2),
                    "speedup_vs_segment": round(rows[best]["cases_per_min"] / segment_rate, 2),
                    "scaling_2_vs_1": round(rows[2]["cases_per_min"] / rows[1]["cases_per_min"], 2)
                    if 1 in rows and 2 in rows
                    else None,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
