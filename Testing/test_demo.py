"""`demo`, the README's first command: offline, the committed test models, both segmentations,
the report and the picture."""

import json

import numpy as np
import pytest
from conftest import load_labels, run_cli, start_serving, stop_serving


@pytest.fixture(scope="module")
def demo_run(isolated_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "tuckersegment-demo"
    args = ["demo", "-o", str(out), "--device", "cpu", "--precision", "fp32", "--progress", "none"]
    result = run_cli(*args, env=isolated_home)
    assert result.returncode == 0, result.stderr
    return out, result


def test_demo_writes_what_a_person_looks_at(demo_run):
    out, result = demo_run
    assert {
        "ct.nii.gz",
        "truth.nii.gz",
        "segmentation.nii.gz",
        "segmentation.original.nii.gz",
        "segmentation.agreement.csv",
        "segmentation.json",
        "comparison.png",
        "demo_report.json",
    } <= {p.name for p in out.iterdir()}
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    compressed, image = load_labels(out / "segmentation.nii.gz")
    original, _ = load_labels(out / "segmentation.original.nii.gz")
    ct, ct_image = load_labels(out / "ct.nii.gz")
    assert compressed.shape == original.shape == ct.shape
    assert np.allclose(image.affine, ct_image.affine)
    assert "mean Dice" in result.stdout and "parameters at DF 0.3" in result.stdout


def test_demo_runs_the_five_experts_compressed_at_their_default_dfs(demo_run):
    from TuckerSegmentLib.engine.fidelity import default_df

    out, _ = demo_run
    report = json.loads((out / "demo_report.json").read_text())
    assert list(report["models"]) == ["organs", "vertebrae", "cardiac", "muscles", "ribs"]
    for name, model in report["models"].items():
        assert model["df"] == default_df(name)  # 0.3; the cardiac expert 0.5 (fidelity.py)
        assert model["params"] < 0.5 * model["params_original"]
    assert report["models"]["cardiac"]["df"] == 0.5
    # measured 0.87 on the demo phantom with the committed test experts (README "Test models")
    assert report["agreement_summary"]["mean_dice"] >= 0.8, report["agreement_summary"]
    for name in ("liver", "spleen", "lung_lower_lobe_left"):
        assert report["truth_dice_original"][name] >= 0.9, report["truth_dice_original"]
        assert report["truth_dice_compressed"][name] >= 0.9, report["truth_dice_compressed"]


def test_demo_fast_runs_the_3mm_model_and_opens_the_review(isolated_home, tmp_path):
    """`demo --fast --review`: the 3 mm model's demo, then its result served in the browser."""
    import urllib.request

    out = tmp_path / "fast-demo"
    args = ["demo", "--fast", "-o", str(out), "--device", "cpu", "--precision", "fp32"]
    process, address, printed = start_serving(
        *args, "--progress", "none", "--review", env=isolated_home
    )
    try:
        page = urllib.request.urlopen(address, timeout=60)
        assert page.status == 200 and address.startswith("http://127.0.0.1:")
    finally:
        stop_serving(process)
    assert "mean Dice" in printed
    report = json.loads((out / "demo_report.json").read_text())
    assert list(report["models"]) == ["3mm"] and report["models"]["3mm"]["df"] == 0.3
    assert report["truth_dice_original"]["liver"] >= 0.9, report["truth_dice_original"]


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["--df", "0"], "DF must be in (0, 1]"),
        (None, ["--precision", "fp16"], "fp16"),
        ("notes.txt", [], "holds files the demo did not make"),
        ("ct.nii.gz", [], "holds files the demo did not make"),  # a CT of the user's: kept
    ],
)
def test_demo_refuses_before_writing_anything(setup, args, message, cli, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    if setup:
        (out / setup).write_text("the user's")
    result = cli("demo", "-o", out, "--device", "cpu", "--progress", "none", *args)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ([setup] if setup else [])
    if setup:
        assert (out / setup).read_text() == "the user's"


def test_demo_output_that_is_a_file_is_refused(cli, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    result = cli("demo", "-o", target, "--device", "cpu", "--progress", "none")
    assert result.returncode == 1 and "is a file" in result.stderr
    assert target.read_text() == "x"


def test_a_demo_folder_can_take_the_next_demo(demo_run):
    from TuckerSegmentLib.demo.demo import MARKER, _prepare_output

    out, _ = demo_run
    assert (out / MARKER).exists()
    _prepare_output(out)  # a second `demo -o` of the same folder replaces its own files
