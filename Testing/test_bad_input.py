"""Bad input: a clear one-line error, a non-zero exit, no partial output, the input untouched."""

import hashlib

import nibabel as nib
import numpy as np
import pytest
from conftest import MODELS, SEGMENT_CPU

SEG = [*SEGMENT_CPU, "--fast", "--progress", "none"]


def _nifti(path, data, spacing=3.0):
    nib.save(nib.Nifti1Image(data, np.diag([spacing] * 3 + [1.0])), str(path))
    return path


def _ct(shape=(40, 40, 40)):
    return np.full(shape, -1000, dtype=np.int16)


def _folder(path):
    path.mkdir()
    return path


def _junk(path):
    path.mkdir()
    (path / "readme.txt").write_text("not a DICOM file")
    return path


def _cases(tmp):
    ok = _nifti(tmp / "ok.nii.gz", _ct())
    nan = _ct().astype(np.float32)
    nan[3, 3, 3] = np.nan
    (tmp / "text.nii.gz").write_text("not an image")
    (tmp / "notes.txt").write_text("hello")
    (tmp / "afile").write_text("x")
    return {
        "missing file": ([str(tmp / "nope.nii.gz")], [], "input not found"),
        "non-image file": ([str(tmp / "text.nii.gz")], [], "cannot read"),
        "unknown file type": ([str(tmp / "notes.txt")], [], "neither a NIfTI file"),
        "2D image": (
            [str(_nifti(tmp / "2d.nii.gz", np.zeros((40, 40), np.int16)))],
            [],
            "2D image",
        ),
        "single slice": ([str(_nifti(tmp / "slice.nii.gz", _ct((40, 40, 1))))], [], "2D image"),
        "too small": ([str(_nifti(tmp / "small.nii.gz", _ct((5, 40, 40))))], [], "too small"),
        "NaN voxels": ([str(_nifti(tmp / "nan.nii.gz", nan))], [], "NaN"),
        "DF 0": ([str(ok)], ["--df", "0"], "DF must be in (0, 1]"),
        "DF above 1": ([str(ok)], ["--df", "1.5"], "DF must be in (0, 1]"),
        "unknown expert": ([str(ok)], ["--expert-df", "brain=0.3"], "unknown expert brain"),
        "fp16 on CPU": ([str(ok)], ["--precision", "fp16"], "fp16 is not supported on the CPU"),
        "output folder missing": (
            [str(ok)],
            ["-o", str(tmp / "no" / "out.nii.gz")],
            "output folder does not exist",
        ),
        "output under a file": (
            [str(ok)],
            ["-o", str(tmp / "afile" / "out.nii.gz")],
            "output folder does not exist",
        ),
        "output type": ([str(ok)], ["-o", str(tmp / "out.png")], "must end in .nii.gz"),
        "output folder refuses files": (
            [str(ok)],
            ["-o", "/proc/out.nii.gz"],
            "output folder does not accept files: /proc",
        ),
        "output is input": ([str(ok)], ["-o", str(ok)], "output must differ from the input"),
        "empty folder": ([str(_folder(tmp / "empty"))], [], "is an empty folder"),
        "folder without DICOM": ([str(_junk(tmp / "junk"))], [], "holds no DICOM files"),
        "small blobs below 0": ([str(ok)], ["--remove-small-blobs", "-5"], "a volume in mm³"),
        "small blobs NaN": ([str(ok)], ["--remove-small-blobs", "nan"], "a volume in mm³"),
        "sidecar name is a folder": (
            [str(ok)],
            ["-o", str(_folder(tmp / "k.json").with_name("k.nii.gz"))],
            "k.json is a folder; the run writes a file of that name",
        ),
        "no weights": ([str(ok)], ["--weights-dir", str(tmp)], "totalseg_download_weights"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "non-image file",
        "unknown file type",
        "2D image",
        "single slice",
        "too small",
        "NaN voxels",
        "DF 0",
        "DF above 1",
        "unknown expert",
        "fp16 on CPU",
        "output folder missing",
        "output under a file",
        "output type",
        "output folder refuses files",
        "output is input",
        "sidecar name is a folder",
        "empty folder",
        "folder without DICOM",
        "small blobs below 0",
        "small blobs NaN",
        "no weights",
    ],
)
def test_bad_input(case, tmp_path, cli):
    inputs, extra, message = _cases(tmp_path)[case]
    before = {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()
    }
    args = [*SEG, "-i", *inputs]
    if "-o" not in extra:
        args += ["-o", str(tmp_path / "result.nii.gz")]
    result = cli(*args, *extra)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tucker-segment: error:") and message in last, result.stderr
    assert "Traceback" not in result.stderr
    after = {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()
    }
    assert after == before, "no output written and no input modified"


def _other_commands(tmp):
    """Commands besides `segment` whose -o could overwrite an input or land nowhere."""
    ct = _nifti(tmp / "ct.nii.gz", _ct())
    labels = _nifti(tmp / "labels.nii.gz", np.zeros((40, 40, 40), np.uint8))
    (tmp / "a-folder").mkdir()
    plans = tmp / "plans.json"
    plans.write_text("{}")
    text = tmp / "text.nii.gz"
    text.write_text("not an image")
    return {
        "curves on a text file": (
            ["curves", "--model", "3mm", "--image", str(text), "-o", str(tmp / "c")],
            "cannot read",
        ),
        "curves nowhere": (
            ["curves", "--model", "3mm", "--image", str(ct), "-o", str(tmp / "no" / "c")],
            "output folder does not exist",
        ),
        "plan onto its CT": (
            ["plan", "--model", "3mm", "--max-params", "15%", "--image", str(ct), "-o", str(ct)],
            "give a file name ending in .json",
        ),
        "plan into a folder": (
            ["plan", "--model", "3mm", "--max-params", "15%", "-o", str(tmp / "a-folder")],
            "give a file name ending in .json",
        ),
        "plan nowhere": (
            ["plan", "--model", "3mm", "--max-params", "15%", "-o", str(tmp / "no" / "p.json")],
            "output folder does not exist",
        ),
        "plan full into its image folder": (
            ["plan", "--model", "full", "--max-params", "15%"]
            + ["--image", str(tmp / "a-folder"), "-o", str(tmp / "a-folder")],
            "is an input of this command",
        ),
        "plan above the original": (
            ["plan", "--model", "3mm", "--max-params", "150%", "--weights-dir", str(MODELS)],
            "is not below the original's",
        ),
        "compare onto an input": (
            ["compare", str(labels), str(labels), "-o", str(labels)],
            "give a file name ending in .csv",
        ),
        "compare tolerance NaN": (
            ["compare", str(labels), str(labels), "--tolerance", "nan"],
            "tolerance must be a positive number of mm",
        ),
        "benchmark csv nowhere": (
            ["benchmark", "--df", "0.5", "-o", str(tmp / "no" / "b.csv")],
            "output folder does not exist",
        ),
        "benchmark plot type": (
            ["benchmark", "--df", "0.5", "--plot", str(tmp / "a-folder")],
            "--plot",
        ),
        "benchmark patch": (["benchmark", "--patch", "0", "0", "0"], "--patch"),
        "report type": (["report", "--model", "3mm", "-o", str(ct)], "ending in .png"),
        "flat-plans onto its plans": (
            ["flat-plans", "--plans", str(plans), "-o", str(plans)],
            "-o must be a new file",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "curves on a text file",
        "curves nowhere",
        "plan onto its CT",
        "plan into a folder",
        "plan nowhere",
        "plan full into its image folder",
        "plan above the original",
        "compare onto an input",
        "compare tolerance NaN",
        "benchmark csv nowhere",
        "benchmark plot type",
        "benchmark patch",
        "report type",
        "flat-plans onto its plans",
    ],
)
def test_other_commands_refuse_outputs_before_any_work(case, tmp_path, cli):
    args, message = _other_commands(tmp_path)[case]
    before = {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()
    }
    result = cli(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tucker-segment: error:"), result.stderr
    assert message in lines[0]
    after = {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()
    }
    assert after == before, "no output written and no input modified"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ct.nii.gz", "labels.nii.gz", "a-folder", "plans.json", "text.nii.gz"]
    )
