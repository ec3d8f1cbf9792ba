"""`tucker-totalsegmentator`: TotalSegmentator's own command line with compressed networks.
With --df 1 each output equals plain TotalSegmentator's for the same arguments (files, names,
voxels, headers, statistics); compressed runs write the same file set; what TS rejects comes
back as one line. Both commands run on the committed test models in child processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import MODELS, REPO, SHARED, needs_shared, shared_temp

TS_SCRIPT = """
import sys
from pathlib import Path
from TuckerSegmentLib.ts.environment import ts_environment
if __name__ == "__main__":
    with ts_environment(Path({weights!r})):   # TS's own config, usage statistics off
        from totalsegmentator.bin.TotalSegmentator import main
        sys.argv = ["TotalSegmentator", *{args!r}]
        main()
"""


def _env(isolated_home: dict) -> dict:
    return {**os.environ, **isolated_home, "TOTALSEG_WEIGHTS_PATH": str(MODELS)}


def _one_export_worker(args: list[str]) -> list[str]:
    """TS's default export pool is six spawned processes, each importing torch and nnU-Net: on
    2 cores that is a third of a test run (29 s against 21 s with one). The pool's size changes
    no output, so both commands get ``-ns 1`` unless a test passes its own (post-processing)."""
    return args if {"-ns", "--nr_thr_saving"} & set(args) else [*args, "-ns", "1"]


def plain_ts(args: list[str], isolated_home: dict) -> subprocess.CompletedProcess:
    script = TS_SCRIPT.format(weights=str(MODELS), args=_one_export_worker(args))
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=_env(isolated_home),
        timeout=600,
    )


def ours(args: list[str], isolated_home: dict) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("tucker-totalsegmentator")
    return subprocess.run(
        [str(exe), *_one_export_worker(args)],
        capture_output=True,
        text=True,
        env=_env(isolated_home),
        timeout=600,
    )


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    import nibabel as nib
    from TuckerSegmentLib.demo.phantom import make_phantom

    path = tmp_path_factory.mktemp("dropin") / "ct.nii.gz"
    image, _ = make_phantom(4242, spacing=3.0).to_nifti()
    nib.save(image, str(path))
    return path


@pytest.fixture(scope="module")
def tall_ct(tmp_path_factory) -> Path:
    """Two phantoms stacked head to foot (96 slices at 3 mm): TS's --force_split cuts a CT in
    thirds with 20-slice margins, more than the single phantom has."""
    import nibabel as nib
    from TuckerSegmentLib.demo.phantom import make_phantom

    phantom = make_phantom(4243, spacing=3.0)
    path = tmp_path_factory.mktemp("dropin-tall") / "tall.nii.gz"
    stacked = np.concatenate([phantom.ct, make_phantom(4244, spacing=3.0).ct], axis=2)
    nib.save(nib.Nifti1Image(stacked, phantom.affine), str(path))
    return path


@pytest.fixture(scope="module")
def ts_ml(tmp_path_factory):
    """Plain TS's `--ml` output for (CT, options), run once per test session: several tests
    compare with the same TS run, and under pytest-xdist they may sit on different workers, so
    the runs lie in the folder the workers share, each made under a file lock by the first
    worker that needs it. Returns the output file; what TS writes beside it lies in its folder."""
    from filelock import FileLock

    root = shared_temp(tmp_path_factory) / "ts-ml"
    root.mkdir(exist_ok=True)

    def reference(ct: Path, options: list[str], isolated_home: dict) -> Path:
        # the CT fixtures are deterministic phantoms with distinct names: a name stands for
        # the same voxels on every worker
        key = hashlib.sha256(json.dumps([ct.name, options]).encode()).hexdigest()[:16]
        folder = root / key
        output = folder / "ts.nii.gz"
        done = root / f"{key}.done"  # beside the folder: tests list what TS wrote in it
        with FileLock(str(root / f"{key}.lock")):
            if not done.is_file():
                shutil.rmtree(folder, ignore_errors=True)  # a failed run's leftovers
                folder.mkdir()
                args = ["-i", str(ct), "-o", str(output), "-d", "cpu", "-q", "--ml"]
                run = plain_ts([*args, *options], isolated_home)
                assert run.returncode == 0, run.stderr
                done.touch()
        return output

    return reference


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_images(a: Path, b: Path) -> None:
    import nibabel as nib

    first, second = nib.load(str(a)), nib.load(str(b))
    np.testing.assert_array_equal(np.asanyarray(first.dataobj), np.asanyarray(second.dataobj))
    np.testing.assert_allclose(first.affine, second.affine)
    assert first.header.get_data_dtype() == second.header.get_data_dtype()
    assert [e.get_code() for e in first.header.extensions] == [
        e.get_code() for e in second.header.extensions
    ]


def _same_folders(expected_folder: Path, got_folder: Path) -> dict[str, Path]:
    """The same file names; images voxel- and header-identical, statistics within 1e-6."""
    expected, got = _files(expected_folder), _files(got_folder)
    assert got.keys() == expected.keys()
    for relative, path in expected.items():
        if relative.endswith(".nii.gz"):
            _same_images(path, got[relative])
        elif relative.endswith(".json"):
            _same_statistics(path, got[relative])
    return got


def _same_statistics(a: Path, b: Path) -> None:
    first, second = json.loads(a.read_text()), json.loads(b.read_text())
    assert first.keys() == second.keys()
    for name in first:
        for key, value in first[name].items():
            assert second[name][key] == pytest.approx(value, rel=1e-6, abs=1e-6), (name, key)


def test_df_1_gives_totalsegmentators_own_folder_and_statistics(ct, isolated_home, tmp_path):
    """TS's default output (a file per structure) with --statistics: at --df 1 the same files,
    voxels, headers and statistics; compressed, only the networks differ: the same file set
    and statistics entries."""
    common = ["-i", str(ct), "-d", "cpu", "-q", "--fast", "--statistics"]
    ts = plain_ts([*common, "-o", str(tmp_path / "ts")], isolated_home)
    assert ts.returncode == 0, ts.stderr
    run = ours([*common, "-o", str(tmp_path / "ours"), "--df", "1"], isolated_home)
    assert run.returncode == 0, run.stderr
    assert "networks: 3mm original" in run.stderr
    assert len(_same_folders(tmp_path / "ts", tmp_path / "ours")) >= 117
    compressed = tmp_path / "compressed"
    run = ours([*common, "-o", str(compressed), "--df", "0.5"], isolated_home)
    assert run.returncode == 0, run.stderr
    assert "networks: 3mm DF 0.5 (fused)" in run.stderr
    assert _files(compressed).keys() == _files(tmp_path / "ts").keys()
    assert (
        json.loads((compressed / "statistics.json").read_text()).keys()
        == json.loads((tmp_path / "ts" / "statistics.json").read_text()).keys()
    )


def test_ml_output_statistics_report_and_probabilities_are_tss_own(ct, isolated_home, tmp_path):
    """--ml (one label file) at --df 1, with what TS writes beside it, in one run each (a run
    per option took CI 80 s more and tests nothing these don't): --statistics lands beside the
    output file, -rp is TS's JSON run report, -sp nnU-Net's class probabilities."""
    runs = {}
    for who, runner, extra in (("ts", plain_ts, []), ("ours", ours, ["--df", "1"])):
        folder = tmp_path / who
        folder.mkdir()
        args = ["-i", str(ct), "-o", str(folder / "seg.nii.gz"), "-d", "cpu", "-q", "--fast"]
        args += ["--ml", "--statistics", "-rp", str(folder / "report.json")]
        args += ["-sp", str(folder / "probs.npz")]
        runs[who] = runner([*args, *extra], isolated_home)
        assert runs[who].returncode == 0, runs[who].stderr
    assert "networks: 3mm original" in runs["ours"].stderr
    _same_images(tmp_path / "ts" / "seg.nii.gz", tmp_path / "ours" / "seg.nii.gz")
    assert _files(tmp_path / "ours").keys() == _files(tmp_path / "ts").keys()
    _same_statistics(tmp_path / "ts" / "statistics.json", tmp_path / "ours" / "statistics.json")
    reports = {w: json.loads((tmp_path / w / "report.json").read_text()) for w in ("ts", "ours")}
    assert reports["ours"].keys() == reports["ts"].keys()
    differ = {"input", "output", "runtime_seconds"}  # each run's own paths and time
    assert {"task", "multilabel", "classes", "num_classes", "output_files"} <= reports["ts"].keys()
    for key in reports["ts"].keys() - differ:
        assert reports["ours"][key] == reports["ts"][key], key
    probabilities = {w: sorted((tmp_path / w).glob("probs*")) for w in ("ts", "ours")}
    assert [p.name for p in probabilities["ours"]] == [p.name for p in probabilities["ts"]]
    assert probabilities["ts"]
    for a, b in zip(probabilities["ts"], probabilities["ours"], strict=True):
        if a.suffix == ".npz":
            first, second = np.load(a), np.load(b)
            for name in first.files:
                np.testing.assert_allclose(first[name], second[name], atol=1e-5)


def test_what_ts_rejects_comes_back_in_one_line(ct, isolated_home, tmp_path):
    bad_type = ours(["-i", str(ct), "-o", str(tmp_path / "o"), "-ot", "png"], isolated_home)
    assert bad_type.returncode == 1
    assert (
        bad_type.stderr.strip()
        .splitlines()[-1]
        .startswith("tucker-totalsegmentator: error: Invalid output types: ['png']")
    )
    bad_number = ours(["-i", str(ct), "-o", str(tmp_path / "o"), "-nr", "x"], isolated_home)
    assert bad_number.returncode == 2 and "argument -nr/--nr_thr_resamp" in bad_number.stderr
    missing = ours(
        ["-i", str(ct), "-o", str(tmp_path / "o"), "-d", "cpu", "-q", "-ta", "body"], isolated_home
    )
    assert missing.returncode == 1  # the test models have no body model (Dataset299)
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("tucker-totalsegmentator: error: TotalSegmentator's model for task 299")
    assert "--download" in last and not (tmp_path / "o").exists()
    small = ours(
        ["-i", str(ct), "-o", str(tmp_path / "o"), "-d", "cpu", "-q", "-ms", "small"], isolated_home
    )
    assert small.returncode == 1 and small.stderr.strip().splitlines()[-1] == (
        "tucker-totalsegmentator: error: model_size='small' is currently only supported for "
        "task 'total_v3'."
    )
    bad_df = ours(["-i", str(ct), "-o", str(tmp_path / "o"), "--df", "1.5"], isolated_home)
    assert bad_df.returncode == 1 and "DF" in bad_df.stderr


def test_help_shows_ts_options_and_ours(isolated_home):
    result = ours(["-h"], isolated_home)
    assert result.returncode == 0
    assert "--roi_subset" in result.stdout and "--expert-df" in result.stdout


def test_the_command_is_declared():
    text = (REPO / "pyproject.toml").read_text()
    assert (
        'tucker-totalsegmentator = "TuckerSegmentLib.cli.totalsegmentator_dropin:tucker_totalsegmentator"'
        in text
    )


@needs_shared
def test_dicom_seg_and_rtstruct_equal_totalsegmentators(isolated_home, tmp_path):
    """From TS's example DICOM series, `-ot dicom_seg dicom_rtstruct` with --df 1, paired with
    --statistics and --roi_subset (one run covers each: a run of all 117 structures took CI
    100 s more and tests nothing these don't): the same segments (names, SNOMED CT codes,
    frames), the same contours and the same statistics as TotalSegmentator's."""
    import pydicom

    series = SHARED / "example_ct_dicom"
    common = ["-i", str(series), "-d", "cpu", "-q", "--fast", "-ot", "dicom_seg", "dicom_rtstruct"]
    common += ["--statistics", "--roi_subset", "liver", "spleen"]
    # each command in a folder of its own: TS writes statistics.json beside its output
    (tmp_path / "ts").mkdir(), (tmp_path / "ours").mkdir()
    ts = plain_ts([*common, "-o", str(tmp_path / "ts" / "out")], isolated_home)
    assert ts.returncode == 0, ts.stderr
    run = ours([*common, "-o", str(tmp_path / "ours" / "out"), "--df", "1"], isolated_home)
    assert run.returncode == 0, run.stderr
    seg_ts, seg_ours = (pydicom.dcmread(tmp_path / w / "out_seg.dcm") for w in ("ts", "ours"))

    def segments(seg) -> list[tuple[str, str, str]]:
        return [
            (
                s.SegmentLabel,
                s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
                s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
            )
            for s in seg.SegmentSequence
        ]

    assert segments(seg_ours) == segments(seg_ts)
    labels = {label for label, _, _ in segments(seg_ours)}
    assert seg_ours.Modality == "SEG"
    assert _files(tmp_path / "ours").keys() == _files(tmp_path / "ts").keys()
    assert labels == {"liver", "spleen"}
    _same_statistics(tmp_path / "ts" / "statistics.json", tmp_path / "ours" / "statistics.json")
    np.testing.assert_array_equal(seg_ours.pixel_array, seg_ts.pixel_array)
    rt_ts, rt_ours = (pydicom.dcmread(tmp_path / w / "out_rtstruct.dcm") for w in ("ts", "ours"))
    names = [r.ROIName for r in rt_ours.StructureSetROISequence]
    assert names == [r.ROIName for r in rt_ts.StructureSetROISequence] and "liver" in names

    def contours(rt) -> list[list[float]]:
        return [
            [float(v) for c in getattr(roi, "ContourSequence", []) for v in c.ContourData]
            for roi in rt.ROIContourSequence
        ]

    assert contours(rt_ours) == contours(rt_ts)


@pytest.mark.parametrize(
    "options, networks, compression",
    [
        (["--fastest"], ["6mm"], ["--df", "0.5"]),
        (["--fast", "--roi_subset", "liver", "spleen"], ["6mm", "3mm"], ["--df", "0.5"]),
        (["--fast", "--body_seg"], ["body", "3mm"], ["--expert-df", "body=0.5,3mm=0.5"]),
        (["-ta", "body", "--fast"], ["body"], ["--expert-df", "body=0.5"]),
    ],
    ids=["fastest", "roi_subset", "body_seg", "task_body"],
)
def test_the_crop_and_task_model_paths_equal_totalsegmentators(
    options, networks, compression, ct, ts_ml, isolated_home, tmp_path
):
    """--fastest (the 6 mm model), --roi_subset (the 6 mm crop model, then the 3 mm model on the
    crop), --body_seg (TS's 6 mm body model crops) and another task (`-ta body --fast`,
    Dataset300) with --df 1 give TS's labels; compressed, every network they load is compressed
    (under its task's name)."""
    common = ["-i", str(ct), "-d", "cpu", "-q", "--ml", *options]
    reference = ts_ml(ct, options, isolated_home)
    run = ours([*common, "-o", str(tmp_path / "ours.nii.gz"), "--df", "1"], isolated_home)
    assert run.returncode == 0, run.stderr
    assert "networks: " + ", ".join(f"{n} original" for n in networks) in run.stderr
    _same_images(reference, tmp_path / "ours.nii.gz")
    compressed = ours([*common, "-o", str(tmp_path / "c.nii.gz"), *compression], isolated_home)
    assert compressed.returncode == 0, compressed.stderr
    assert "networks: " + ", ".join(f"{n} DF 0.5 (fused)" for n in networks) in compressed.stderr


def test_auto_runtime_measures_fused_then_tries_openvino(ct, isolated_home, tmp_path):
    """`--runtime auto` (the default) as in `segment`: a model's first run measures the fused
    runtime; where trying OpenVINO pays (forced here: the test models take milliseconds) the
    next run measures it; the labels agree within fp32 tolerance."""
    env = {**isolated_home, "TUCKERSEGMENT_CACHE": str(tmp_path / "cache")}
    env["TUCKERSEGMENT_EXPLORE_S"] = "0"
    labels = []
    for i, runtime in enumerate(("fused", "openvino")):
        out = tmp_path / f"run{i}.nii.gz"
        run = ours(
            ["-i", str(ct), "-o", str(out), "-d", "cpu", "--fast", "--ml", "--df", "0.5"], env
        )
        assert run.returncode == 0, run.stderr
        assert f"networks: 3mm DF 0.5 ({runtime})" in run.stderr
        labels.append(np.asanyarray(nib.load(str(out)).dataobj))
    assert np.mean(labels[0] == labels[1]) > 0.999


# TS's other options: each group with --df 1 gives TS's own files (they act around the networks)
PASS_THROUGH = {
    # (groups of options that act in different places run together: one TS run per group)
    # -ss: statistics.json only
    "statistics-options": ["--fast", "-ss", "--statistics", "-sii", "-sa", "median", "-sx"]
    + ["--higher_order_resampling_LEGACY", "-v"],
    "post-processing": ["--fast", "--ml", "-rmb", "20", "-ns", "1", "-nr", "1", "-ro", "0", "-ndm"]
    # -ms only changes task total_v3 (small is refused elsewhere, below) and TS 2.18 no longer
    # reads -cp: accepted all the same
    + ["-v1o", "-ms", "big", "-cp", "/tmp", "-sl", "-ho"],
    # the same TS run as segment's post-processing case (tall: -fs needs more than 60 slices)
    "force-split": ["--fast", "--ml", "-rmb", "20", "-ho", "-fs"],
    "roi-subset-robust": ["--fast", "--ml", "-rsr", "liver", "spleen"],
    "full-roi-subset": ["--ml", "--roi_subset", "liver", "spleen"],
    # the pairs users combine most, with TS's default output (a folder per structure); -rc: the
    # 3 mm model crops, not the 6 mm one
    "roi-subset-statistics-folder": ["--fast", "--statistics", "-rs", "liver", "spleen", "-rc"],
}


@pytest.mark.parametrize("name", list(PASS_THROUGH))
def test_ts_options_pass_through_unchanged(name, request, ts_ml, isolated_home, tmp_path):
    options = PASS_THROUGH[name]
    ct = request.getfixturevalue("tall_ct" if "-fs" in options else "ct")
    common = ["-i", str(ct), "-d", "cpu", "-q", *options]
    if "--ml" in options:
        reference = ts_ml(ct, [o for o in options if o != "--ml"], isolated_home)
        run = ours([*common, "-o", str(tmp_path / "ours.nii.gz"), "--df", "1"], isolated_home)
        assert run.returncode == 0, run.stderr
        _same_images(reference, tmp_path / "ours.nii.gz")
        ts_named = sorted(p.name.removeprefix("ts") for p in reference.parent.iterdir())
        assert sorted(p.name.removeprefix("ours") for p in tmp_path.iterdir()) == ts_named
        return
    ts = plain_ts([*common, "-o", str(tmp_path / "ts")], isolated_home)
    assert ts.returncode == 0, ts.stderr
    run = ours([*common, "-o", str(tmp_path / "ours"), "--df", "1"], isolated_home)
    assert run.returncode == 0, run.stderr
    _same_folders(tmp_path / "ts", tmp_path / "ours")


def test_listing_tasks_and_classes_is_tss_own(isolated_home):
    for args in (["-lt"], ["-lc", "body"]):
        ts, run = plain_ts(args, isolated_home), ours(args, isolated_home)
        assert ts.returncode == run.returncode == 0, run.stderr
        assert run.stdout == ts.stdout and run.stdout.strip()
    assert "body_trunc" in run.stdout


def test_a_licence_number_is_stored_in_the_private_config_without_a_connection(
    ct, isolated_home, tmp_path
):
    """TS would check a -l licence online (a connection the network guard refuses); here it is
    stored, offline, in the config TS reads under this project (not ~/.totalsegmentator)."""
    licence = "aca_TESTTESTTESTTE"  # TS's offline check: 18 characters
    args = ["-i", str(ct), "-o", str(tmp_path / "o.nii.gz"), "-d", "cpu", "-q", "--fast", "--ml"]
    run = ours([*args, "-l", licence, "--df", "1"], isolated_home)
    assert run.returncode == 0, run.stderr
    assert "without TotalSegmentator's online check" in run.stderr
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from TuckerSegmentLib.ts.environment import private_ts_home as h\nprint(h())",
        ],
        capture_output=True,
        text=True,
        env=_env(isolated_home),
        check=True,
    )
    config = json.loads((Path(probe.stdout.strip()) / "config.json").read_text())
    assert config["license_number"] == licence and config["send_usage_stats"] is False
    assert not (Path(isolated_home["HOME"]) / ".totalsegmentator").exists()


def tucker_segment(args: list[str], isolated_home: dict) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("tucker-segment")
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        env=_env(isolated_home),
        timeout=600,
    )


@pytest.mark.parametrize(
    "ts_options, our_options, models, compress",
    [
        (
            ["--fast", "--roi_subset", "liver", "spleen"],
            ["--fast", "--roi-subset", "liver", "spleen"],
            ["6mm", "3mm"],
            False,
        ),
        (["--fastest"], ["--fastest"], ["6mm"], False),
        (
            ["--roi_subset", "liver", "spleen"],
            ["--roi-subset", "liver", "spleen"],
            ["6mm", "organs"],
            True,
        ),
        (["--fast", "--body_seg"], ["--fast", "--body-seg"], ["body", "3mm"], True),
        # options that act around the 3 mm network, one run (compressed runs of it abound)
        (
            ["--fast", "-rmb", "20", "-ho", "-fs"],
            ["--fast", "--remove-small-blobs", "20", "--higher-order-resampling", "--force-split"],
            ["3mm"],
            False,
        ),
    ],
    # compressed runs: the two with two networks of different kinds (6 mm crop + 1.5 mm expert,
    # body crop + 3 mm); the drop-in's model-path test compresses the other networks' paths,
    # which go through the same seam
    ids=["fast-roi_subset", "fastest", "full-roi_subset", "body_seg", "post-processing"],
)
def test_segment_gains_roi_subset_and_fastest(
    ts_options, our_options, models, compress, request, ts_ml, isolated_home, tmp_path
):
    """`tucker-segment segment` has TS's --roi_subset and --fastest too: at --df 1 TS's labels
    from exactly the networks TS runs for them (full mode: only the experts that know the
    structures); compressed, each of those is compressed, and the sidecar says so. Likewise
    --body_seg (the 6 mm body model crops), and TS's --remove_small_blobs,
    --higher_order_resampling, --force_split."""
    ct = request.getfixturevalue("tall_ct" if "-fs" in ts_options else "ct")
    reference = ts_ml(ct, ts_options, isolated_home)
    common = ["segment", "-i", str(ct), "--device", "cpu", "--progress", "none", *our_options]
    run = tucker_segment([*common, "-o", str(tmp_path / "ours.nii.gz"), "--df", "1"], isolated_home)
    assert run.returncode == 0, run.stderr
    _same_images(reference, tmp_path / "ours.nii.gz")
    sidecar = json.loads((tmp_path / "ours.json").read_text())
    assert list(sidecar["models"]) == models
    if compress:
        compressed = tucker_segment([*common, "-o", str(tmp_path / "c.nii.gz")], isolated_home)
        assert compressed.returncode == 0, compressed.stderr
        sidecar = json.loads((tmp_path / "c.json").read_text())
        assert list(sidecar["models"]) == models
        assert all(m["compressed"] and m["df"] == 0.3 for m in sidecar["models"].values())


def test_segment_refuses_unknown_roi_subset_names_in_one_line(ct, cli, tmp_path):
    run = cli("segment", "-i", ct, "-o", tmp_path / "o.nii.gz", "--roi-subset", "livr")
    assert run.returncode == 1 and not (tmp_path / "o.nii.gz").exists()
    assert run.stderr.strip().splitlines() == [
        "tucker-segment: error: unknown structure livr for --roi_subset; the names are "
        "TotalSegmentator's (`tucker-totalsegmentator -lc` lists them), e.g. liver spleen"
    ]


def test_segment_runs_tss_other_tasks(ct, ts_ml, isolated_home, tmp_path):
    """`segment --task body --fast` (Dataset300): at --df 1 TS's own `-ta body --fast` labels;
    compressed at the body default (0.3), written as a .seg.nrrd with the task's names."""
    import slicerio

    reference = ts_ml(ct, ["-ta", "body", "--fast"], isolated_home)
    common = ["segment", "-i", str(ct), "--device", "cpu", "--progress", "none"]
    common += ["--task", "body", "--fast"]
    run = tucker_segment([*common, "-o", str(tmp_path / "ours.nii.gz"), "--df", "1"], isolated_home)
    assert run.returncode == 0, run.stderr
    _same_images(reference, tmp_path / "ours.nii.gz")
    compressed = tucker_segment([*common, "-o", str(tmp_path / "c.seg.nrrd")], isolated_home)
    assert compressed.returncode == 0, compressed.stderr
    sidecar = json.loads((tmp_path / "c.json").read_text())
    assert sidecar["task"] == "body" and sidecar["labels"] == {
        "1": "body_trunc",
        "2": "body_extremities",
    }
    assert {n: m["df"] for n, m in sidecar["models"].items()} == {"body": 0.3}
    segments = slicerio.read_segmentation(str(tmp_path / "c.seg.nrrd"), skip_voxels=True)
    assert [s["name"] for s in segments["segments"]] == ["body_trunc"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "total_mr"], "task total_mr is one of TotalSegmentator's MR tasks"),
        (["--task", "nope"], "unknown task nope; TotalSegmentator's open CT tasks: total, "),
        (["--task", "heartchambers_highres"], "needs a TotalSegmentator licence"),
        (
            ["--task", "cerebral_bleed", "--fast"],
            "task cerebral_bleed does not work with option --fast",
        ),
        (["--task", "body", "--roi-subset", "liver"], "TS's options of task total, not body"),
        (["--task", "lung_vessels"], "weights missing"),
        (["--fast", "--fastest"], "--fast and --fastest are two models (3 mm, 6 mm): choose one"),
        (["--task", "body", "--body-seg"], "drop it for --task body"),
    ],
    ids=[
        "mr",
        "unknown",
        "licensed",
        "no-fast",
        "roi-subset",
        "missing-model",
        "fast+fastest",
        "body+body-seg",
    ],
)
def test_segment_refuses_tasks_it_cannot_run_in_one_line(args, message, ct, cli, tmp_path):
    # in this process (a refusal before any work needs no child process of its own)
    run = cli(
        "segment",
        "-i",
        ct,
        "-o",
        tmp_path / "o.nii.gz",
        "--weights-dir",
        MODELS,
        "--progress",
        "none",
        *args,
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1 and message in lines[0], run.stderr
    assert not (tmp_path / "o.nii.gz").exists()


def test_full_mode_roi_subset_needs_every_expert_ts_asks_for(ct, isolated_home, tmp_path):
    """TS asks for all five experts' weights before it picks the ones --roi_subset needs: a
    missing one is named in one line before any work, never downloaded unasked."""
    weights = tmp_path / "weights"
    weights.mkdir()
    for folder in MODELS.iterdir():
        if folder.is_dir() and "ribs" not in folder.name:
            (weights / folder.name).symlink_to(folder)
    run = tucker_segment(
        ["segment", "-i", str(ct), "-o", str(tmp_path / "o.nii.gz"), "--progress", "none"]
        + ["--roi-subset", "liver", "--weights-dir", str(weights)],
        isolated_home,
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1 and "Dataset295" in lines[0], run.stderr


def test_a_given_3mm_model_is_placed_on_the_3mm_model_not_the_6mm_one(ct, isolated_home, tmp_path):
    """The 3 mm and 6 mm models have the same labels; a given model goes to the one whose
    weights it was made from (--fast --roi_subset runs both)."""
    folder = next(MODELS.glob("Dataset297*/*__3d_fullres"))
    made = tucker_segment(
        ["compress", "--model-dir", str(folder), "--df", "0.5", "-o", str(tmp_path / "m")],
        isolated_home,
    )
    assert made.returncode == 0, made.stderr
    run = tucker_segment(
        ["segment", "-i", str(ct), "-o", str(tmp_path / "o.nii.gz"), "--progress", "none"]
        + ["--fast", "--roi-subset", "liver", "--compressed-model", str(tmp_path / "m")],
        isolated_home,
    )
    assert run.returncode == 0, run.stderr
    models = json.loads((tmp_path / "o.json").read_text())["models"]
    assert models["3mm"]["cache"] == "given" and models["6mm"]["cache"] != "given"


def test_tss_own_refusal_of_a_missing_input_is_shown(isolated_home, tmp_path):
    """TS ends with sys.exit("ERROR: …"); run in process, that message must still be seen."""
    run = ours(["-i", str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "seg")], isolated_home)
    assert run.returncode == 1
    assert "The input file or directory does not exist" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "seg").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-d", "bogus"], "Invalid device type: 'bogus'"),  # TS's own words
        (["--expert-df", "liverr=0.3"], "--expert-df: no TotalSegmentator model is called liverr"),
        (["-i", "EMPTY"], "is an empty folder"),
        (["-o", "/proc/seg"], "output folder does not accept files: /proc"),  # not at the end
    ],
    ids=["device", "expert", "empty-folder", "unwritable-output"],
)
def test_drop_in_refuses_in_one_line(extra, message, ct, isolated_home, tmp_path):
    (tmp_path / "empty").mkdir()
    extra = [str(tmp_path / "empty") if a == "EMPTY" else a for a in extra]
    args = ["-i", str(ct), "-o", str(tmp_path / "seg"), "--fast", "-d", "cpu", *extra]
    run = ours(args, isolated_home)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and message in lines[-1], run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "seg").exists()
