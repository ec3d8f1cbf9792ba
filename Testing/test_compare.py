"""`compare` on TotalSegmentator's own reference outputs and on synthetic label maps."""

import csv
import io
import json

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED, needs_shared, run_cli
from TuckerSegmentLib.pipeline.agreement import compare_labels, surface_dice

FULL = SHARED / "example_seg.nii.gz"
FAST = SHARED / "example_seg_fast.nii.gz"


@needs_shared
def test_ts_full_vs_fast_reference_outputs(tmp_path):
    report_csv = tmp_path / "report.csv"
    result = run_cli("compare", str(FULL), str(FAST), "-o", str(report_csv), "--json", check=True)
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["structures_present"] == 41
    assert summary["structures_absent_in_both"] == 76
    assert summary["mean_dice"] == pytest.approx(0.902, abs=5e-4)  # the measured fact
    assert summary["worst"][0]["name"] == "lung_middle_lobe_right"
    assert summary["worst"][0]["status"] == "only_a"
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(report_csv.read_text()))}
    assert len(rows) == 117
    assert rows["pancreas"]["dice"].startswith("0.80")
    assert rows["brain"]["status"] == "absent" and rows["brain"]["dice"] == ""
    assert float(rows["liver"]["volume_a_ml"]) == pytest.approx(1043.1, abs=0.1)


@needs_shared
def test_table_output_lists_worst_first():
    result = run_cli("compare", str(FULL), str(FAST), check=True)
    lines = result.stdout.strip().splitlines()
    assert lines[1].startswith("lung_middle_lobe_right")
    assert lines[-1].startswith("mean Dice 0.902")


@needs_shared
def test_different_grids_are_refused(tmp_path):
    image = nib.load(str(FULL))
    other = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[:-1], image.affine), str(other))
    result = run_cli("compare", str(FULL), str(other))
    assert result.returncode != 0
    assert "different grids" in result.stderr


@needs_shared
def test_an_image_is_not_a_label_map():
    result = run_cli("compare", str(FULL), str(SHARED / "example_ct_sm.nii.gz"))
    assert result.returncode != 0
    assert "not a label map" in result.stderr


def test_metrics_on_known_shapes():
    a = np.zeros((30, 30, 30), np.uint8)
    b = np.zeros_like(a)
    a[5:15, 5:15, 5:15] = 1
    b[6:16, 5:15, 5:15] = 1  # shifted by one voxel of 2 mm
    a[20:25, 20:25, 20:25] = 3  # only in a
    report = compare_labels(a, b, (2.0, 2.0, 2.0), {1: "one", 2: "two", 3: "three"})
    rows = {s.name: s for s in report.structures}
    assert rows["one"].dice == pytest.approx(2 * 900 / 2000)
    assert rows["one"].nsd == 1.0  # every surface voxel within 3 mm of the other surface
    assert rows["two"].status == "absent" and rows["two"].dice is None
    assert rows["three"].status == "only_a" and rows["three"].dice == 0.0
    assert rows["one"].volume_a_ml == pytest.approx(1000 * 8 / 1000)
    assert report.summary["structures_present"] == 2


def test_surface_dice_tolerance():
    a = np.zeros((40, 40, 40), bool)
    b = np.zeros_like(a)
    a[10:30, 10:30, 10:30] = True
    b[14:34, 10:30, 10:30] = True  # 4 mm shift with 1 mm voxels
    assert surface_dice(a, b, (1.0, 1.0, 1.0), 5.0) == 1.0
    assert surface_dice(a, b, (1.0, 1.0, 1.0), 1.0) < 0.9


@pytest.mark.parametrize(
    "spacing, tolerance",
    [
        ((3.0, 3.0, 3.0), 3.0),
        ((1.5, 1.5, 1.5), 3.0),
        ((0.8, 0.8, 1.5), 2.0),
        ((1.0, 2.0, 0.7), 2.5),
    ],
)
def test_the_dilated_surface_counts_exactly_what_the_distance_transform_counts(
    spacing, tolerance, monkeypatch
):
    from scipy import ndimage
    from TuckerSegmentLib.pipeline import agreement

    rng = np.random.default_rng(7)
    a = ndimage.binary_opening(rng.random((30, 26, 22)) < 0.55, iterations=1)
    b = a.copy()
    b[rng.random(a.shape) < 0.15] ^= True
    fast = surface_dice(a, b, spacing, tolerance)
    monkeypatch.setattr(agreement, "MAX_BALL_OFFSETS", 0)  # the distance transform only
    assert surface_dice(a, b, spacing, tolerance) == fast
