"""The panel's process controller with real child processes: progress, errors, cancel."""

import json
import sys
import time

from conftest import process_alive as _alive
from TuckerSegmentLib.panel.process_controller import SegmentProcess, cli_command

CHILD = r"""
import json, os, subprocess, sys, time
# a grandchild, like nnU-Net's workers, that must die with the run
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1], "w").write(str(worker.pid))
for i in range(1, 4):
    print(json.dumps({"stage": "segment", "fraction": i / 4, "message": f"step {i}"}), flush=True)
    print(f"log line {i}", file=sys.stderr, flush=True)
    time.sleep(0.05)
if sys.argv[2] == "fail":
    print("tucker-segment: error: input not found: x.nii.gz", file=sys.stderr, flush=True)
    sys.exit(1)
if sys.argv[2] == "hang":
    time.sleep(60)
worker.kill()
print(json.dumps({"stage": "done", "fraction": 1.0, "message": "ok"}), flush=True)
"""


def test_progress_and_log_are_separated(tmp_path):
    run = SegmentProcess([sys.executable, "-c", CHILD, str(tmp_path / "pid"), "ok"])
    assert run.wait(timeout=30) == 0
    assert [e.fraction for e in run.state.events] == [0.25, 0.5, 0.75, 1.0]
    assert run.latest.stage == "done"
    assert run.state.log == ["log line 1", "log line 2", "log line 3"]
    assert run.state.error is None


def test_failure_shows_the_cli_message(tmp_path):
    run = SegmentProcess([sys.executable, "-c", CHILD, str(tmp_path / "pid"), "fail"])
    assert run.wait(timeout=30) == 1
    assert run.state.error == "input not found: x.nii.gz"


def test_cancel_ends_the_whole_process_tree(tmp_path):
    pid_file = tmp_path / "pid"
    run = SegmentProcess([sys.executable, "-c", CHILD, str(pid_file), "hang"])
    deadline = time.monotonic() + 20
    while (run.latest is None or run.latest.fraction < 0.75) and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    assert _alive(worker)
    run.cancel(grace_seconds=2)
    assert run.poll() is not None and run.state.cancelled
    deadline = time.monotonic() + 30  # the kernel reaps it soon; a loaded machine may lag
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)


def test_cli_command_runs_the_real_cli(isolated_home):
    run = SegmentProcess(cli_command(["stats", "--json"]), env=isolated_home)
    assert run.wait(timeout=120) == 0
    assert run.state.events == []  # stats prints a JSON list, which is no progress event
    assert json.loads(run.state.log[-1])[0]["df"] == 1.0


def test_cancelling_a_real_segment_run_leaves_nothing(phantom_files, isolated_home, tmp_path):
    import tempfile
    from pathlib import Path

    from conftest import SEGMENT_CPU

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    temp_before = set(Path(tempfile.gettempdir()).glob("nnunet_tmp_*"))
    args = [
        *SEGMENT_CPU[1:],
        "-i",
        str(phantom_files[0]),
        "-o",
        str(out_dir / "seg.nii.gz"),
        "--fast",
        "--df",
        "0.5",
        "--progress",
        "json",
    ]
    run = SegmentProcess(cli_command(["segment", *args]), env=isolated_home)
    deadline = time.monotonic() + 300
    while (run.latest is None or run.latest.stage != "segment") and time.monotonic() < deadline:
        assert run.poll() is None, run.state.log
        time.sleep(0.1)
    run.cancel(grace_seconds=10)
    assert run.state.cancelled and run.state.returncode != 0
    assert list(out_dir.iterdir()) == []
    assert set(Path(tempfile.gettempdir()).glob("nnunet_tmp_*")) <= temp_before
