"""The panel's warm worker with real processes and real segment runs on the test models: labels
identical to a cold run, the original networks' result kept for the next click on the same CT,
one owner only, ends with its owner, survives a failed run, nothing left after Cancel or close."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing.connection import AuthenticationError, Client
from pathlib import Path

import numpy as np
import pytest
from conftest import SEGMENT_CPU, load_labels
from conftest import process_alive as _alive
from TuckerSegmentLib.cli.worker import connection_family
from TuckerSegmentLib.panel.warm_worker import WarmWorker

pytestmark = pytest.mark.skipif(os.name == "nt", reason="process checks read /proc")


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_until(predicate, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture()
def worker(isolated_home: dict):
    owned = WarmWorker(env=isolated_home)
    yield owned
    owned.terminate(grace_seconds=2)


def _segment_args(ct: Path, output: Path, df: str) -> list[str]:
    return [
        *SEGMENT_CPU,
        "-i",
        str(ct),
        "-o",
        str(output),
        "--fast",
        "--df",
        df,
        "--compare",
        "--progress",
        "json",
    ]


def test_warm_runs_match_cold_runs_and_keep_the_original(worker, phantom_files, tmp_path, cli):
    ct, _ = phantom_files
    warm = [tmp_path / "warm-0.5.nii.gz", tmp_path / "warm-0.3.nii.gz"]
    first = worker.submit(_segment_args(ct, warm[0], "0.5"))
    assert first.wait(timeout=600) == 0, first.state.log
    assert any(e.stage == "segment" for e in first.state.events)  # progress comes through
    pid = worker.process.pid
    second = worker.submit(_segment_args(ct, warm[1], "0.3"))
    assert second.wait(timeout=600) == 0, second.state.log
    assert worker.process.pid == pid and worker.alive  # the same process served both

    sidecars = [
        json.loads(p.with_name(p.name.replace(".nii.gz", ".json")).read_text()) for p in warm
    ]
    assert sidecars[0]["comparison"]["original_reused"] is False
    assert sidecars[1]["comparison"]["original_reused"] is True

    for path, df in zip(warm, ("0.5", "0.3"), strict=True):
        cold = tmp_path / f"cold-{df}.nii.gz"
        assert cli(*_segment_args(ct, cold, df)).returncode == 0
        for suffix in ("", ".original"):
            a = load_labels(path.with_name(path.name.replace(".nii.gz", f"{suffix}.nii.gz")))[0]
            b = load_labels(cold.with_name(cold.name.replace(".nii.gz", f"{suffix}.nii.gz")))[0]
            assert np.array_equal(a, b), (df, suffix)
        cold_report = cold.with_name(cold.name.replace(".nii.gz", ".agreement.csv")).read_text()
        warm_report = path.with_name(path.name.replace(".nii.gz", ".agreement.csv")).read_text()
        assert warm_report == cold_report


def test_survives_a_failed_run(worker, phantom_files, tmp_path):
    failed = worker.submit(["segment", "-i", str(tmp_path / "missing.nii.gz"), "-o", "x.nii.gz"])
    assert failed.wait(timeout=120) == 1
    assert failed.state.error == f"input not found: {tmp_path / 'missing.nii.gz'}"
    usage = worker.submit(["segment", "--no-such-option"])
    assert usage.wait(timeout=60) == 2
    ct, _ = phantom_files
    ok = worker.submit([*SEGMENT_CPU, "-i", str(ct), "-o", str(tmp_path / "ok.nii.gz"), "--fast"])
    assert ok.wait(timeout=600) == 0, ok.state.log
    assert (tmp_path / "ok.nii.gz").is_file()
    assert worker.alive


def test_one_owner_only(worker):
    assert _wait_until(lambda: Path(worker.address).exists(), 60)  # the worker listens
    with pytest.raises(AuthenticationError):  # a client without the key is turned away
        Client(worker.address, connection_family(worker.address), authkey=b"guess")
    assert worker.submit(["info", "--json"]).wait(timeout=120) == 0  # the owner gets in
    assert not Path(worker.address).exists()  # listener closed once the owner connected
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        Client(worker.address, connection_family(worker.address), authkey=worker._key)
    assert worker.submit(["info", "--json"]).wait(timeout=120) == 0  # owner unaffected


def test_a_second_run_waits_its_turn(worker, phantom_files, tmp_path):
    ct, _ = phantom_files
    run = worker.submit([*SEGMENT_CPU, "-i", str(ct), "-o", str(tmp_path / "a.nii.gz"), "--fast"])
    from TuckerSegmentLib.panel.warm_worker import WorkerError

    with pytest.raises(WorkerError, match="busy"):
        worker.submit(["info"])
    assert run.wait(timeout=600) == 0


def test_cancel_leaves_no_process_and_no_output(worker, phantom_files, tmp_path):
    ct, _ = phantom_files
    output = tmp_path / "out" / "result.nii.gz"
    output.parent.mkdir()
    run = worker.submit(_segment_args(ct, output, "0.5"))
    assert _wait_until(lambda: run.latest is not None and run.latest.stage == "segment", 300)
    pgid = os.getpgid(worker.process.pid)
    run.cancel(grace_seconds=5)
    assert run.poll() is not None and run.state.cancelled
    assert not worker.alive and _wait_until(lambda: _group_gone(pgid))
    assert list(output.parent.iterdir()) == []  # nothing half-written
    assert not worker.folder.exists()  # socket folder removed


def test_close_ends_the_worker_and_removes_its_socket(isolated_home):
    worker = WarmWorker(env=isolated_home)
    assert worker.submit(["info", "--json"]).wait(timeout=120) == 0
    pid = worker.process.pid
    worker.close()
    assert not _alive(pid) and not worker.folder.exists()


OWNER = textwrap.dedent(
    """
    import sys, time
    from TuckerSegmentLib.panel.warm_worker import WarmWorker
    worker = WarmWorker()
    run = worker.submit(sys.argv[1:])
    while run.latest is None and run.poll() is None:
        time.sleep(0.05)
    print(worker.process.pid, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "mid-run"])
def test_ends_with_its_owner(busy, phantom_files, tmp_path, isolated_home):
    """The owner (Slicer) is killed: the worker ends too, idle or in the middle of a run."""
    ct, _ = phantom_files
    out = tmp_path / "out"
    out.mkdir()
    args = (
        [*SEGMENT_CPU, "-i", str(ct), "-o", str(out / "r.nii.gz"), "--progress", "json"]
        if busy
        else ["info", "--progress-never-matches"]  # fails at once: the worker is then idle
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **isolated_home},
    )
    try:
        worker_pid = int(owner.stdout.readline())
        assert _alive(worker_pid)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    # a generous deadline: correctness, not speed, on a loaded machine
    assert _wait_until(lambda: not _alive(worker_pid), 60), "the worker outlived its owner"
    assert list(out.iterdir()) == []  # a run cut short leaves nothing half-written


def test_worker_command_needs_an_owner(cli):
    result = cli("worker")
    assert result.returncode == 1
    assert "started by its owner" in result.stderr
