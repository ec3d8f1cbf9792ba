"""Shared fixtures. Every test runs under the network guard: any connection attempt fails it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTING = Path(__file__).resolve().parent
REPO = TESTING.parent
SHARED = REPO.parent / "shared" / "data" / "ts-examples"
# tests on TotalSegmentator's own example CT and outputs (../shared, beside the checkout)
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(),
    reason=f"TotalSegmentator's example data is not at {SHARED} (the shared/ folder beside the "
    "checkout); these tests compare against TS's own outputs",
)
GUARD_DIR = TESTING / "network_guard"

sys.path.insert(0, str(GUARD_DIR))
import sitecustomize as network_guard  # noqa: E402  (the guard, see network_guard/)

warnings.filterwarnings("ignore", message="Detected old nnU-Net plans format")


@pytest.fixture(scope="session", autouse=True)
def _guard_environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the guard here and, through PYTHONPATH, in every child process."""
    log = tmp_path_factory.mktemp("network-guard") / "attempts.log"
    log.touch()
    os.environ["TUCKERSEGMENT_NETWORK_GUARD"] = str(log)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(GUARD_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    network_guard.install()
    return log


@pytest.fixture(scope="session", autouse=True)
def _own_temp_folder() -> Iterator[None]:
    """This session's (this pytest-xdist worker's) own ``tempfile`` folder, in this process and
    through TMPDIR in its children: tests that look for what a run left in the temp folder
    (TS's ``nnunet_tmp_*``) see only their own session's runs. A short path: Unix sockets live
    there. Emptied at the end but for multiprocessing's own ``pymp-*`` folder, which
    multiprocessing removes as this process exits."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="tst-"))
    previous_dir, previous_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = str(folder)
    yield
    tempfile.tempdir = previous_dir
    if previous_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous_env
    for path in folder.iterdir():
        if path.name.startswith("pymp-"):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # still there when multiprocessing made its folder
        folder.rmdir()


@pytest.fixture(autouse=True)
def _no_network(_guard_environment: Path) -> None:
    """Fail the test if it, or any process it started, tried to reach the network."""
    start_in_process = len(network_guard.attempts)
    start_log = _guard_environment.stat().st_size
    yield
    new = network_guard.attempts[start_in_process:]
    with open(_guard_environment) as handle:
        handle.seek(start_log)
        logged = handle.read()
    if new or logged:
        pytest.fail("network access attempted:\n" + ("".join(new) or logged), pytrace=False)


MODELS = REPO / "TuckerSegment" / "TuckerSegmentLib" / "demo" / "models"  # shipped for the demo
# `segment` on the committed test models, on the CPU in fp32 (what every test machine has)
SEGMENT_CPU = ["segment", "--weights-dir", str(MODELS), "--device", "cpu", "--precision", "fp32"]


def run_cli(
    *args: str, check: bool = False, timeout: float = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the installed ``tucker-segment`` command in a child process."""
    exe = Path(sys.executable).with_name("tucker-segment")
    result = subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"tucker-segment {' '.join(args)} failed:\n{result.stderr}")
    return result


def start_serving(
    *args: str, env: dict | None = None, timeout: float = 600
) -> tuple[subprocess.Popen, str, str]:
    """``tucker-segment ARGS`` that ends by serving a review page (review, segment --review,
    demo --review), in a child process: the process, the address it printed and everything
    it printed before. Stop it with :func:`stop_serving`."""
    import re
    import time

    exe = Path(sys.executable).with_name("tucker-segment")
    process = subprocess.Popen(
        [str(exe), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    printed = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"tucker-segment {' '.join(args)} ended: {process.stderr.read()}")
        printed.append(line)
        found = re.search(r"^review of .*: (http://\S+)", line)
        if found:
            return process, found.group(1), "".join(printed)
    process.kill()
    raise AssertionError(f"no review address in {timeout:.0f} s")


def stop_serving(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, isolated_home: dict):
    """Run ``tucker-segment ARGS`` in this process (``main([...])``) with the isolated home;
    returns the exit code and what it printed. For runs where a child process adds nothing."""
    from types import SimpleNamespace

    from TuckerSegmentLib.cli.main import main

    def run(*args: str) -> SimpleNamespace:
        for key, value in isolated_home.items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def run_segment(
    ct: Path, output: Path, *args: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``tucker-segment segment -i CT -o OUTPUT ARGS`` on the test models (CPU, fp32)."""
    return run_cli(*SEGMENT_CPU, "-i", str(ct), "-o", str(output), *args, env=env)


@pytest.fixture(scope="session")
def random_3mm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-size TS 3 mm model folder (Dataset297 layout) with seeded random weights."""
    from model_folder_writer import write_random_ts_folder

    return write_random_ts_folder(tmp_path_factory.mktemp("models") / "Dataset297", "3mm", seed=1)


def shared_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temp folder all pytest-xdist workers of this session share (without xdist the
    session's own): where a costly result is made once, under a file lock, for every worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Environment for CLI runs: a fresh HOME (so the user's TS config is never touched) and a
    session-wide compressed-model cache."""
    import tempfile

    home = tmp_path_factory.mktemp("home")
    # run folders (TS's temp files) in a short private path of this session's own
    scratch = tempfile.mkdtemp(prefix="tss-")
    yield {
        "HOME": str(home),
        "TUCKERSEGMENT_CACHE": str(home / "cache"),
        "XDG_CACHE_HOME": "",
        "TUCKERSEGMENT_SCRATCH": scratch,
        # `--runtime auto` tries OpenVINO on an image the fused runtime was measured to need
        # >= 10 s for; on a loaded CI machine (two test workers) a multi-patch test image can,
        # and tests that compare two runs' labels exactly would then compare two runtimes. The
        # tests of that rule set their own threshold (test_openvino, the drop-in's auto test).
        "TUCKERSEGMENT_EXPLORE_S": "1e9",
    }
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh phantom (not one the test models were trained on) at 1.5 mm: CT and truth."""
    import nibabel as nib
    from TuckerSegmentLib.demo.phantom import make_phantom

    folder = tmp_path_factory.mktemp("phantom")
    ct, truth = make_phantom(4242, spacing=1.5).to_nifti()
    nib.save(ct, str(folder / "ct.nii.gz"))
    nib.save(truth, str(folder / "truth.nii.gz"))
    return folder / "ct.nii.gz", folder / "truth.nii.gz"


def load_labels(path: Path):
    import nibabel as nib
    import numpy as np

    image = nib.load(str(path))
    return np.asanyarray(image.dataobj), image


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, counts as gone); Linux /proc."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            return "zombie" not in handle.read()
    except FileNotFoundError:
        return False
