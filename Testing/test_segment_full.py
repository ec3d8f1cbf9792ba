"""Full mode (TS's five 1.5 mm experts merged into 117 labels) and DF 1 = plain TotalSegmentator."""

import json
import os

import numpy as np
import pytest
from conftest import MODELS, SEGMENT_CPU, load_labels, run_cli
from TuckerSegmentLib.demo import truth_dice
from TuckerSegmentLib.structures import structure_names

SEG = [*SEGMENT_CPU, "--progress", "none"]


def _plain_totalsegmentator(ct_path, fast, cache_dir):
    """TotalSegmentator's own python API, untouched, on the test weights (statistics off)."""
    import nibabel as nib
    from totalsegmentator.python_api import totalsegmentator
    from TuckerSegmentLib.segment import spawned_workers
    from TuckerSegmentLib.ts_environment import ts_environment

    saved = os.environ.get("TUCKERSEGMENT_CACHE")
    os.environ["TUCKERSEGMENT_CACHE"] = str(cache_dir)
    try:
        with ts_environment(MODELS), spawned_workers():
            image = totalsegmentator(
                nib.load(str(ct_path)),
                None,
                ml=True,
                fast=fast,
                device="cpu",
                quiet=True,
                nr_thr_resamp=1,
                nr_thr_saving=1,
            )
    finally:
        if saved is None:
            os.environ.pop("TUCKERSEGMENT_CACHE")
        else:
            os.environ["TUCKERSEGMENT_CACHE"] = saved
    return np.asanyarray(image.dataobj)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "full"])
def test_df_one_gives_labels_identical_to_plain_ts(fast, phantom_files, isolated_home, tmp_path):
    out = tmp_path / "df1.nii.gz"
    args = [*SEG, "-i", str(phantom_files[0]), "-o", str(out), "--df", "1"]
    result = run_cli(*args, *(["--fast"] if fast else []), env=isolated_home)
    assert result.returncode == 0, result.stderr
    ours, _ = load_labels(out)
    plain = _plain_totalsegmentator(phantom_files[0], fast, isolated_home["TUCKERSEGMENT_CACHE"])
    assert ours.shape == plain.shape
    assert np.array_equal(ours, plain)
    assert len(np.unique(ours)) > 10


def test_full_mode_compressed_agrees_with_original(phantom_files, isolated_home, tmp_path):
    out = tmp_path / "full.seg.nrrd"
    result = run_cli(
        *SEG,
        "-i",
        str(phantom_files[0]),
        "-o",
        str(out),
        "--df",
        "0.5",
        "--expert-df",
        "ribs=0.7",
        "--compare",
        env=isolated_home,
    )
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(out.with_name("full.json").read_text())
    assert list(sidecar["models"]) == ["organs", "vertebrae", "cardiac", "muscles", "ribs"]
    assert sidecar["models"]["ribs"]["df"] == 0.7 and sidecar["models"]["organs"]["df"] == 0.5
    assert sidecar["comparison"]["summary"]["mean_dice"] >= 0.9, sidecar["comparison"]["summary"]
    import slicerio

    original = slicerio.read_segmentation(str(out.with_name("full.original.seg.nrrd")))
    truth, _ = load_labels(phantom_files[1])
    dice = truth_dice(truth, np.asarray(original["voxels"]), structure_names())
    large = ["liver", "spleen", "heart", "lung_upper_lobe_left", "lung_lower_lobe_left"]
    assert all(dice[name] >= 0.9 for name in large), dice
