"""End-to-end speed and memory: `tucker-segment segment --fast --df 0.3` against
TotalSegmentator's own command (`TotalSegmentator --fast --ml`) on the same real-size CT, same
machine, same run. Memory is the peak resident memory summed over each command's whole process
tree (its workers included), sampled every 50 ms from /proc (Linux).

TS's weights can't be downloaded here, so both use a full-size TS 3 mm model folder with seeded
random weights (speed does not depend on weight values; the labels are meaningless). The CT is a
phantom on a typical abdomen grid (512×512×200 at 0.7×0.7×1.5 mm). Each command runs in its own
process, timed from start to exit; TS runs with its defaults (usage statistics off).

    .venv/bin/python Testing/e2e_speed.py [--df 0.3] [--repeats 2] [--full] [--ct CT]

``--full``: TS's default mode (five full-size 1.5 mm experts with seeded random weights) instead
of ``--fast``.

With ``--warm``: the Slicer panel's two clicks instead — the first run through a new warm worker
(Python start-up, imports, decomposition), then a second run on the same CT with another DF
(``--second-df``), each timed from sending the run to its exit code, with and without
``--compare``; the labels of each warm run are checked against a cold command-line run.
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
        sys.argv = ["TotalSegmentator", "-i", {ct!r}, "-o", {out!r}, *{mode!r}, "--ml",
                    "--device", {ts_device!r}, "--quiet"]
        main()
"""


def real_size_ct(path: Path, seed: int = 7, shape=SHAPE, spacing=SPACING) -> None:
    """A phantom placed in a real-size grid (512×512×200 abdomen by default; air around it)."""
    import nibabel as nib

    sys.path.insert(0, str(HERE.parent / "TuckerSegment"))
    from TuckerSegmentLib.demo.phantom import make_phantom

    phantom = make_phantom(seed, spacing)
    volume = np.full(shape, -1000, dtype=np.int16)
    rng = np.random.default_rng(seed)
    volume += rng.normal(0, 8, shape).astype(np.int16)
    offset = [max(0, (s - p) // 2) for s, p in zip(shape, phantom.ct.shape, strict=True)]
    window = tuple(slice(o, o + p) for o, p in zip(offset, phantom.ct.shape, strict=True))
    volume[window] = phantom.ct
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-s * d / 2 for s, d in zip(shape, spacing, strict=True)]
    nib.save(nib.Nifti1Image(volume, affine), path)


def process_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, resident KiB), from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        table[int(entry.name)] = (
            int(fields.get("PPid", "0").strip()),
            int(fields.get("VmRSS", "0 kB").split()[0]),
        )
    return table


def descendants(root: int, table: dict[int, tuple[int, int]]) -> set[int]:
    """``root`` and every process below it in ``table``."""
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [c for c, (parent, _) in table.items() if parent == pid and c not in tree]
        tree.update(children)
        frontier.extend(children)
    return tree


def _tree_rss_kib(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, from /proc."""
    table = process_table()
    return sum(table.get(pid, (0, 0))[1] for pid in descendants(root, table))


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak GiB of the process tree) of one command."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss_kib(process.pid))
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read()
    if process.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{stderr[-3000:]}")
    return seconds, peak / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--df", default="0.3")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--runtime", default="auto", help="tucker-segment's --runtime")
    parser.add_argument("--ct", help="a CT of your own (default: the 512×512×200 phantom grid)")
    parser.add_argument("--full", action="store_true", help="TS's default (full) mode: 5 experts")
    parser.add_argument(
        "--large", action="store_true", help="a 512×512×400 grid at 0.8 mm (the memory goal)"
    )
    parser.add_argument("--warm", action="store_true", help="time the panel's second click")
    parser.add_argument("--second-df", default="0.5", help="the DF of the second click")
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (fp32, as measured in README) or cuda (TS runs on its 'gpu', ours at --precision auto)",
    )
    args = parser.parse_args()
    if args.warm:
        return warm_clicks(args)
    sys.path.insert(0, str(HERE.parent / "TuckerSegment"))
    from model_folder_writer import write_random_ts_folder
    from TuckerSegmentLib.ts.weights import total_models

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ct = Path(args.ct) if args.ct else tmp / "ct.nii.gz"
        if not args.ct:
            large = {"shape": (512, 512, 400), "spacing": (0.8,) * 3} if args.large else {}
            real_size_ct(ct, **large)
        weights = tmp / "weights"
        for i, model in enumerate(total_models(not args.full)):
            kind = "1.5mm" if args.full else "3mm"
            write_random_ts_folder(model.folder(weights), kind, model.name, seed=i)
        mode = [] if args.full else ["--fast"]
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
            *mode,
            "--df",
            args.df,
            "--device",
            args.device,
            "--precision",
            "fp32" if args.device == "cpu" else "auto",
            "--weights-dir",
            str(weights),
            "--runtime",
            args.runtime,
            "--progress",
            "none",
        ]
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE.parent / "TuckerSegment"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        first, first_gib = timed(ours, env)  # decomposes (and converts), as a first run does
        script = TS_COMMAND.format(
            lib=str(HERE.parent / "TuckerSegment"),
            weights=str(weights),
            ct=str(ct),
            out=str(tmp / "ts.nii.gz"),
            mode=mode,
            ts_device="cpu" if args.device == "cpu" else args.device.replace("cuda", "gpu"),
        )
        ts_runs, our_runs = [], []
        for _ in range(args.repeats):  # interleaved
            ts_runs.append(timed([PYTHON, "-c", script], env))
            our_runs.append(timed(ours, env))
        if not args.repeats:  # --repeats 0: one TS run, the first run of ours (memory goals)
            ts_runs.append(timed([PYTHON, "-c", script], env))
            our_runs.append((first, first_gib))
        ts_times, our_times = [t for t, _ in ts_runs], [t for t, _ in our_runs]
        ts_gib, our_gib = max(g for _, g in ts_runs), max(g for _, g in our_runs)
        sidecar = json.loads((tmp / "ours.json").read_text())
        ts_s, our_s = statistics.median(ts_times), statistics.median(our_times)
        print(
            json.dumps(
                {
                    "ct": args.ct
                    or (
                        "phantom on a 512×512×400 grid at 0.8 mm"
                        if args.large
                        else f"phantom on a {SHAPE} grid at {SPACING} mm"
                    ),
                    "mode": "full" if args.full else "fast",
                    "device": args.device,
                    "df": float(args.df),
                    "totalsegmentator_s": [round(t, 1) for t in ts_times],
                    "tucker_segment_s": [round(t, 1) for t in our_times],
                    "tucker_segment_first_run_s": round(first, 1),
                    "speedup": round(ts_s / our_s, 2),
                    "peak_gib_totalsegmentator": round(ts_gib, 2),
                    "peak_gib_tucker_segment": round(our_gib, 2),
                    "peak_gib_tucker_segment_first_run": round(first_gib, 2),
                    "memory_ratio": round(max(our_gib, first_gib) / ts_gib, 2),
                    "runtime": sorted({m.get("runtime") for m in sidecar["models"].values()}),
                    "our_timings": sidecar["timings"],
                    "patches": sidecar["patches"],
                },
                indent=2,
            )
        )
    return 0


def warm_clicks(args: argparse.Namespace) -> int:
    """First and second Segment click through one warm worker, as the panel runs them."""
    sys.path.insert(0, str(HERE.parent / "TuckerSegment"))
    import nibabel as nib
    from model_folder_writer import write_random_ts_folder
    from TuckerSegmentLib.panel.warm_worker import WarmWorker
    from TuckerSegmentLib.ts.weights import total_models

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ct = Path(args.ct) if args.ct else tmp / "ct.nii.gz"
        if not args.ct:
            real_size_ct(ct)
        weights = tmp / "weights"
        write_random_ts_folder(total_models(True)[0].folder(weights), "3mm", seed=0)
        for compare in (False, True):
            cache = tmp / f"cache-{compare}"  # each pair decomposes its DFs, as a first use does
            env = {"HOME": str(tmp), "TUCKERSEGMENT_CACHE": str(cache)}
            env["PYTHONPATH"] = os.pathsep.join(
                [str(HERE.parent / "TuckerSegment"), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
            worker = WarmWorker(python=PYTHON, env=env)
            times = []
            try:
                for i, df in enumerate((args.df, args.second_df)):
                    out = tmp / f"warm-{compare}-{i}.nii.gz"
                    command = ["segment", "-i", str(ct), "-o", str(out), "--fast", "--df", df]
                    precision = "fp32" if args.device == "cpu" else "auto"
                    command += ["--device", args.device, "--precision", precision]
                    command += ["--weights-dir", str(weights), "--progress", "json"]
                    command += ["--compare"] if compare else []
                    start = time.perf_counter()
                    run = worker.submit(command)
                    if run.wait(timeout=3600) != 0:
                        sys.exit("\n".join(run.state.log[-20:]))
                    times.append(time.perf_counter() - start)
                    cold = tmp / f"cold-{compare}-{i}.nii.gz"
                    cold_command = [PYTHON, "-m", "TuckerSegmentLib", *command[:4], str(cold)]
                    cold_command += command[5:]
                    subprocess.run(
                        cold_command, env={**os.environ, **env}, check=True, capture_output=True
                    )
                    same = np.array_equal(
                        np.asanyarray(nib.load(str(out)).dataobj),
                        np.asanyarray(nib.load(str(cold)).dataobj),
                    )
                    if not same:
                        sys.exit(f"warm run {i} (DF {df}) differs from the cold run")
            finally:
                worker.close()
            results["with --compare" if compare else "without --compare"] = {
                "first_click_s": round(times[0], 1),
                "second_click_s": round(times[1], 1),
                "second_over_first": round(times[1] / times[0], 2),
                "labels_identical_to_cold_runs": True,
            }
    print(
        json.dumps(
            {"ct": args.ct or "phantom grid", "dfs": [args.df, args.second_df], **results}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
