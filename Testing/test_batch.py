"""`tucker-segment batch`: a real Dask LocalCluster (two worker processes on 127.0.0.1) over
small phantom CTs with the committed test models: each case as `segment` writes it, failures
recorded, cohort tables, resumption, a worker killed mid-case, and no CT copy left behind."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS, load_labels, run_cli

RUN = ["--fast", "--df", "0.5", "--weights-dir", str(MODELS), "--device", "cpu"]
RUN += ["--precision", "fp32"]


def _phantom(path: Path, seed: int, spacing: float = 3.0) -> None:
    import nibabel as nib
    from TuckerSegmentLib.demo.phantom import make_phantom

    ct, _ = make_phantom(seed, spacing=spacing).to_nifti()
    nib.save(ct, str(path))


@pytest.fixture(scope="module")
def cohort_input(tmp_path_factory) -> Path:
    """Two phantom CTs and a file that is not a CT."""
    folder = tmp_path_factory.mktemp("cohort") / "cts"
    folder.mkdir()
    _phantom(folder / "case_a.nii.gz", 11)
    _phantom(folder / "case_b.nii.gz", 12)
    (folder / "broken.nii.gz").write_text("not a CT")
    return folder


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def first_batch(cohort_input, isolated_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort-out") / "cohort"
    args = ["batch", str(cohort_input), "-o", str(out), *RUN, "--compare", "--jobs", "2"]
    result = run_cli(*args, "--progress", "json", env=isolated_home, timeout=600)
    return out, result, args


@pytest.fixture(scope="module")
def segment_runs(cohort_input, isolated_home, tmp_path_factory) -> Path:
    """`segment` on each good case with the cohort's settings, for comparison."""
    folder = tmp_path_factory.mktemp("segment-runs")
    for case in ("case_a", "case_b"):
        result = run_cli(
            "segment",
            "-i",
            str(cohort_input / f"{case}.nii.gz"),
            "-o",
            str(folder / f"{case}.nii.gz"),
            *RUN,
            "--compare",
            "--statistics",
            env=isolated_home,
        )
        assert result.returncode == 0, result.stderr
    return folder


def test_each_case_is_what_segment_writes(first_batch, segment_runs):
    out, result, _ = first_batch
    assert result.returncode == 3, result.stderr  # one case failed, the others finished
    for case in ("case_a", "case_b"):
        folder = out / case
        assert (folder / "done.json").exists()
        labels, image = load_labels(folder / "segmentation.nii.gz")
        expected, expected_image = load_labels(segment_runs / f"{case}.nii.gz")
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_allclose(image.affine, expected_image.affine)
        assert (folder / "segmentation.statistics.json").read_text() == (
            segment_runs / f"{case}.statistics.json"
        ).read_text()
        assert (folder / "segmentation.agreement.csv").read_text() == (
            segment_runs / f"{case}.agreement.csv"
        ).read_text()
        sidecar = json.loads((folder / "segmentation.json").read_text())
        assert sidecar["models"]["3mm"]["df"] == 0.5
        # two workers share the cores (TS alone would give each network every core)
        assert sidecar["settings"]["network_threads"] == max(1, (os.cpu_count() or 1) // 2)
        alone = json.loads((segment_runs / f"{case}.json").read_text())
        assert alone["settings"]["network_threads"] == os.cpu_count()
        assert not (folder / ".running.json").exists()
    assert not list(out.rglob(".tmp-*"))
    lines = _json_lines(result.stdout)
    last = [line for line in lines if line["stage"] == "batch"][-1]
    assert (last["done"], last["failed"], last["total"]) == (2, 1, 3)
    assert last["cases_per_min"] > 0 and last["eta_s"] == 0


def test_a_bad_case_is_recorded_and_the_cohort_tables_are_written(first_batch):
    import pandas as pd

    out, _, _ = first_batch
    with open(out / "failures.csv") as handle:
        failures = list(csv.DictReader(handle))
    assert [f["case_id"] for f in failures] == ["broken"]
    assert "cannot read" in failures[0]["reason"] and "\n" not in failures[0]["reason"]
    assert not (out / "broken").exists()  # nothing half-written
    table = pd.read_parquet(out / "statistics.parquet")
    assert sorted(table["case_id"].unique()) == ["case_a", "case_b"]
    assert len(table) == 2 * 117
    pd.testing.assert_frame_equal(table, pd.read_csv(out / "statistics.csv"), check_dtype=False)
    stats = json.loads((out / "case_a" / "segmentation.statistics.json").read_text())
    row = table[(table.case_id == "case_a") & (table.structure == "spleen")].iloc[0]
    assert row.volume_ml == pytest.approx(stats["spleen"]["volume"] / 1000)
    assert row.mean_hu == pytest.approx(stats["spleen"]["intensity"])
    assert row.volume_ml > 0
    agreement = pd.read_parquet(out / "agreement.parquet")
    assert len(agreement) == 2 * 117 and {"case_id", "dice", "nsd"} <= set(agreement.columns)


def test_a_second_run_skips_finished_cases(first_batch, isolated_home, monkeypatch):
    """The Python API on the same folder: the two done cases are skipped (untouched), the
    broken one is tried again; the cohort table comes back as a DataFrame."""
    from TuckerSegmentLib.cohort.batch import BatchOptions, batch
    from TuckerSegmentLib.pipeline.progress import Progress
    from TuckerSegmentLib.pipeline.segment import SegmentOptions

    out, _, args = first_batch
    for key, value in isolated_home.items():
        monkeypatch.setenv(key, value)
    before = {p: p.stat().st_mtime_ns for p in out.glob("case_*/*")}
    updates = []

    class Recorder(Progress):
        def update(self, stage, fraction, message="", **fields):
            updates.append((stage, message, fields))

    options = BatchOptions(
        input=Path(args[1]),
        output=out,
        segment=SegmentOptions(
            input=Path(args[1]),
            output=Path("segmentation.nii.gz"),
            fast=True,
            df=0.5,
            compare=True,
            statistics=True,
            device="cpu",
            precision="fp32",
            weights_dir=MODELS,
        ),
        jobs=1,
    )
    table = batch(options, Recorder("none"))
    assert updates[0][1] == "1 to segment, 2 done before"
    assert updates[-1][2] == {"done": 2, "failed": 1, "skipped": 2}
    assert {p: p.stat().st_mtime_ns for p in out.glob("case_*/*")} == before
    assert sorted(table["case_id"].unique()) == ["case_a", "case_b"]


def test_other_settings_and_bad_input_are_refused(first_batch, cohort_input, cli, tmp_path):
    out, _, args = first_batch
    other = cli(*[a if a != "0.5" else "0.3" for a in args])
    assert other.returncode == 1
    assert "other settings (df)" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    missing = cli("batch", str(tmp_path / "nothing"), "-o", str(tmp_path / "o"), *RUN)
    assert missing.returncode == 1 and "input not found" in missing.stderr
    inside = cli("batch", str(cohort_input), "-o", str(cohort_input / "out"), *RUN)
    assert inside.returncode == 1 and "inside the input folder" in inside.stderr
    table = tmp_path / "cases.csv"
    table.write_text(f"path\n{cohort_input / 'case_a.nii.gz'}\n{cohort_input / 'case_a.nii.gz'}\n")
    twice = cli("batch", str(table), "-o", str(tmp_path / "o"), *RUN)
    assert twice.returncode == 1 and "two cases would be named 'case_a'" in twice.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = cli("batch", str(empty), "-o", str(tmp_path / "o"), *RUN)
    assert nothing.returncode == 1 and "no NIfTI files" in nothing.stderr
    header = tmp_path / "header.csv"
    header.write_text("path\n")
    no_rows = cli("batch", str(header), "-o", str(tmp_path / "o"), *RUN)
    assert no_rows.returncode == 1 and "lists no cases (a header row only)" in no_rows.stderr
    address = cli("batch", str(cohort_input), "-o", str(tmp_path / "o"), *RUN, "--scheduler", "x")
    assert address.returncode == 1 and "--scheduler x: missing port number" in address.stderr
    bad_df = cli("batch", str(cohort_input), "-o", str(tmp_path / "o"), *RUN, "--df", "0")
    assert bad_df.returncode == 1 and "DF must be in (0, 1]" in bad_df.stderr
    for refused in (missing, inside, twice, nothing, no_rows, address, bad_df):
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not (tmp_path / "o").exists(), "a refused batch writes nothing, not even batch.json"


def _scratch(isolated_home: dict) -> Path:
    return Path(isolated_home["TUCKERSEGMENT_SCRATCH"])


def _wait_for_ct_copy(scratch: Path, pid: int | None, timeout: float = 120) -> Path:
    """The run folder of ``pid`` (any, if None) once TS has written the CT into it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pattern = f"run-{pid}-*/nnunet_tmp_*/*.nii.gz" if pid else "run-*/nnunet_tmp_*/*.nii.gz"
        found = list(scratch.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"no CT copy appeared under {scratch}")


def test_a_worker_killed_mid_case_loses_nothing(
    cohort_input, segment_runs, isolated_home, tmp_path
):
    """SIGKILL (an OOM kill) of the worker segmenting a case: Dask runs the case again, the
    cohort finishes, nothing half-written stays, and the killed run's CT copy is swept. The
    input is a CSV with case ids."""
    table = tmp_path / "cohort.csv"
    table.write_text(
        "case_id,path\n"
        f"first,{cohort_input / 'case_a.nii.gz'}\n"
        f"second,{os.path.relpath(cohort_input / 'case_b.nii.gz', tmp_path)}\n"
    )
    out = tmp_path / "out"
    started = time.time()
    exe = Path(sys.executable).with_name("tucker-segment")
    process = subprocess.Popen(
        [str(exe), "batch", str(table), "-o", str(out), *RUN, "--jobs", "2", "--progress", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **isolated_home},
    )
    try:
        running = None
        deadline = time.monotonic() + 180
        while running is None and time.monotonic() < deadline and process.poll() is None:
            notes = list(out.glob("*/.running.json"))
            running = notes[0] if notes else None
            time.sleep(0.01)
        assert running is not None, f"no case started: {process.communicate()[1][-2000:]}"
        victim = json.loads(running.read_text())["pid"]
        copy = _wait_for_ct_copy(_scratch(isolated_home), victim)
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert not copy.exists() and not list(_scratch(isolated_home).glob("run-*"))
    assert not [
        p for p in Path(tempfile.gettempdir()).glob("nnunet_tmp_*") if p.stat().st_mtime >= started
    ]
    for case, source in (("first", "case_a"), ("second", "case_b")):
        labels, _ = load_labels(out / case / "segmentation.nii.gz")
        expected, _ = load_labels(segment_runs / f"{source}.nii.gz")
        np.testing.assert_array_equal(labels, expected)
        assert (out / case / "done.json").exists()
    assert not list(out.rglob(".tmp-*")) and not list(out.rglob(".running.json"))
    assert (out / "failures.csv").read_text().strip() == "case_id,input,reason"


def test_a_case_whose_worker_dies_more_often_than_allowed_is_recorded_failed(
    cohort_input, isolated_home, tmp_path
):
    """With --retries 0 one death is enough: the case lands in failures.csv, no folder stays."""
    table = tmp_path / "one.csv"
    table.write_text(f"{cohort_input / 'case_a.nii.gz'},doomed\n")  # no header: path, id
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("tucker-segment")
    command = [str(exe), "batch", str(table), "-o", str(out), *RUN, "--jobs", "1"]
    process = subprocess.Popen(
        [*command, "--retries", "0", "--progress", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **isolated_home},
    )
    try:
        note = out / "doomed" / ".running.json"
        deadline = time.monotonic() + 180
        while not note.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        os.kill(json.loads(note.read_text())["pid"], signal.SIGKILL)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 3, stderr
    with open(out / "failures.csv") as handle:
        (failure,) = list(csv.DictReader(handle))
    assert (
        failure["case_id"] == "doomed" and "worker died in each of its 1 runs" in failure["reason"]
    )
    assert not (out / "doomed").exists()


def test_a_killed_segment_leaves_no_ct_copy_after_the_next_start(
    cohort_input, isolated_home, cli, tmp_path
):
    """`segment` killed with SIGKILL can't clean up: its CT copy stays in its run folder (under
    the project's scratch root, not the system temp) until the next run sweeps it."""
    exe = Path(sys.executable).with_name("tucker-segment")
    ct = cohort_input / "case_a.nii.gz"
    process = subprocess.Popen(
        [str(exe), "segment", "-i", str(ct), "-o", str(tmp_path / "a.nii.gz"), *RUN],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **isolated_home},
    )
    try:
        copy = _wait_for_ct_copy(_scratch(isolated_home), process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert copy.exists()  # what a killed run leaves
    assert not (tmp_path / "a.nii.gz").exists()
    again = cli("segment", "-i", str(ct), "-o", str(tmp_path / "b.nii.gz"), *RUN)
    assert again.returncode == 0, again.stderr
    assert not copy.exists() and not list(_scratch(isolated_home).glob("run-*"))


def test_scratch_sweep_keeps_live_runs_and_removes_ended_ones(tmp_path):
    """Folders of ended processes, and of an earlier process that had a reused pid, go; the
    folders of running processes stay."""
    from TuckerSegmentLib.storage.scratch import owned_folder, sweep_stale

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    mine = owned_folder(tmp_path)
    gone = tmp_path / f"run-{ended.pid}-0-a"
    reused = tmp_path / f"run-{os.getpid()}-1-b"  # our pid, another start time
    live_parent = tmp_path / f"run-{os.getppid()}-0-c"
    for folder in (gone, reused, live_parent):
        folder.mkdir()
        (folder / "ct.nii.gz").write_bytes(b"patient data")
    assert sorted(sweep_stale(tmp_path)) == sorted([gone, reused])
    assert mine.exists() and live_parent.exists()
    assert oct(tmp_path.stat().st_mode & 0o777) == "0o700"


def test_the_local_cluster_refuses_clients_without_its_certificate():
    """The LocalCluster speaks TLS with a per-run certificate: a local process without it (another
    user on a shared machine) can't submit work to it."""
    import distributed
    from TuckerSegmentLib.cohort.cluster import dask_client

    with dask_client(1, None, 2) as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert client.submit(sum, [1, 2]).result() == 3
        with pytest.raises((OSError, TypeError, ValueError)):
            distributed.Client(address.replace("tls://", "tcp://"), timeout="3s")
        with pytest.raises((OSError, TypeError, ValueError)):
            distributed.Client(address, timeout="3s")


def test_a_worker_keeps_its_prepared_networks_between_cases(
    cohort_input, isolated_home, monkeypatch, tmp_path
):
    """What a cohort worker does between cases (case_run.py): the second case reuses the first
    case's prepared network (no load from the cache), with the same labels as a fresh load."""
    from TuckerSegmentLib.pipeline import warm_cache
    from TuckerSegmentLib.pipeline.segment import SegmentOptions, segment

    for key, value in isolated_home.items():
        monkeypatch.setenv(key, value)
    options = dict(fast=True, df=0.5, device="cpu", precision="fp32", weights_dir=MODELS)
    fresh = segment(
        SegmentOptions(cohort_input / "case_b.nii.gz", tmp_path / "f.nii.gz", **options)
    )
    warm_cache.keep_models()
    try:
        first = segment(
            SegmentOptions(cohort_input / "case_a.nii.gz", tmp_path / "a.nii.gz", **options)
        )
        second = segment(
            SegmentOptions(cohort_input / "case_b.nii.gz", tmp_path / "b.nii.gz", **options)
        )
    finally:
        warm_cache.keep_models(False)
    assert "kept_in_worker" not in first["models"]["3mm"]
    assert second["models"]["3mm"]["kept_in_worker"] is True
    assert fresh["models"]["3mm"].get("kept_in_worker") is None
    np.testing.assert_array_equal(
        load_labels(tmp_path / "b.nii.gz")[0], load_labels(tmp_path / "f.nii.gz")[0]
    )


def test_scheduler_connects_to_a_users_cluster(cohort_input, segment_runs, isolated_home, tmp_path):
    """--scheduler ADDRESS: the cases run on a cluster that exists already (here a Dask
    LocalCluster started by the test, as a user's cluster would be), which stays up after."""
    import distributed

    table = tmp_path / "one.csv"
    table.write_text(f"path\n{cohort_input / 'case_a.nii.gz'}\n")
    env = {**isolated_home}
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        out = tmp_path / "out"
        result = run_cli(
            "batch",
            str(table),
            "-o",
            str(out),
            *RUN,
            "--scheduler",
            cluster.scheduler_address,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert len(cluster.scheduler.workers) == 1  # the user's cluster is still there
    labels, _ = load_labels(out / "case_a" / "segmentation.nii.gz")
    np.testing.assert_array_equal(labels, load_labels(segment_runs / "case_a.nii.gz")[0])
    unreachable = run_cli(
        "batch",
        str(table),
        "-o",
        str(tmp_path / "o2"),
        *RUN,
        "--scheduler",
        "tcp://127.0.0.1:9",
        env=env,
    )
    assert unreachable.returncode == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in unreachable.stderr
