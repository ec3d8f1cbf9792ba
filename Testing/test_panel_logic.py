"""The Slicer panel's logic end to end, headless: a real slicer-core MRML scene and layout logic,
the real `tucker-segment` CLI in a background process on the test models, results loaded from the
CLI's .seg.nrrd and agreement CSV, the comparison layout, Cancel, failures and temp-data removal."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import slicer
from conftest import MODELS
from TuckerSegmentLib.panel import run_folder
from TuckerSegmentLib.panel.segmentation_run import (
    RunError,
    RunRequest,
    SegmentationRun,
    center_of,
)
from TuckerSegmentLib.panel.slicer_nodes import structure_at, table_row


def _scene_with_layout():
    scene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # as Slicer's app logic does
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    slice_logics = []  # Slicer's slice widgets each hold one; it adds the view's composite node
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.SetSliceNode(scene.GetNthNodeByClass(i, "vtkMRMLSliceNode"))
        slice_logics.append(logic)
    layout_logic.slice_logics = slice_logics  # keep them alive with the scene
    return scene, layout_logic


def _load_volume(scene, path: Path):
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Phantom CT")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(volume)
    return volume


@pytest.fixture(scope="session")
def phantom_3mm(tmp_path_factory) -> Path:
    import nibabel as nib
    from TuckerSegmentLib.demo.phantom import make_phantom

    path = tmp_path_factory.mktemp("panel") / "ct.nii.gz"
    ct, _ = make_phantom(4242, spacing=3.0).to_nifti()
    nib.save(ct, str(path))
    return path


def _request(volume, **overrides) -> RunRequest:
    settings = dict(fast=True, df=0.5, device="cpu", precision="fp32", weights_dir=str(MODELS))
    settings.update(overrides)
    return RunRequest(volume.GetID(), **settings)


@pytest.fixture(scope="session")
def loaded_run(phantom_3mm, isolated_home, tmp_path_factory):
    """One real compare run through the panel logic, loaded into a scene with a layout; the CT
    sits under a translation so the transform handling is exercised."""
    import vtk

    scene, layout_logic = _scene_with_layout()
    volume = _load_volume(scene, phantom_3mm)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 40.0)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    yellow_before = next(
        scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode"))
        if scene.GetNthNodeByClass(i, "vtkMRMLSliceNode").GetLayoutName() == "Yellow"
    ).GetOrientation()
    root = tmp_path_factory.mktemp("runs")
    run = SegmentationRun(
        scene,
        _request(volume, compare=True),
        python=sys.executable,
        env=isolated_home,
        temp_root=root,
    )
    folder = run.folder
    assert (folder / "ct.nii.gz").is_file()
    code = run.wait(timeout=600)
    assert code == 0, "\n".join(run.log)
    csv = (folder / "result.agreement.csv").read_text()
    result = run.load(layout_logic.GetLayoutNode())
    return dict(
        scene=scene,
        volume=volume,
        transform=transform,
        result=result,
        folder=folder,
        csv=csv,
        yellow_before=yellow_before,
        layout=layout_logic.GetLayoutNode(),
        events=list(run.process.state.events),
    )


def _segment_names(node) -> list[str]:
    segmentation = node.GetSegmentation()
    return [
        segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())
    ]


def test_results_come_from_the_clis_seg_nrrd_with_names_colors_terminology(loaded_run):
    import vtk
    from TuckerSegmentLib.ts.structures import structure_colors, structure_names

    result = loaded_run["result"]
    names = _segment_names(result.compressed)
    assert "liver" in names and len(names) >= 10
    ids = {v: k for k, v in structure_names().items()}
    segmentation = result.compressed.GetSegmentation()
    liver = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("liver"))
    assert np.allclose(liver.GetColor(), structure_colors()[ids["liver"]], atol=1e-6)
    term = vtk.mutable("")
    liver.GetTag("TerminologyEntry", term)
    assert "SCT^10200004^Liver" in str(term)
    assert result.compressed.GetName() == "Phantom CT TuckerSegment DF 0.5"
    assert result.original.GetName() == "Phantom CT TotalSegmentator"
    assert loaded_run["events"] and loaded_run["events"][-1].stage == "done"


def test_agreement_table_rows_map_to_their_structures(loaded_run):
    """Rows are read from the CLI's CSV (worst Dice first) and a clicked row finds its structure."""
    from TuckerSegmentLib.pipeline.agreement import read_agreement_csv

    result = loaded_run["result"]
    report = read_agreement_csv(loaded_run["csv"])
    expected = [s.name for s in sorted(report.present(), key=lambda s: (s.dice, s.name))]
    table = result.table
    assert table.GetNumberOfRows() == len(expected) > 5
    for row, name in enumerate(expected):
        assert structure_at(table, row) == name  # the view's row index, as clicked
        assert table.GetCellText(row, 0) == name
        dice = next(s.dice for s in report.structures if s.name == name)
        assert float(table.GetCellText(row, 1)) == pytest.approx(dice, abs=1e-4)
    assert structure_at(table, len(expected)) is None
    assert structure_at(table, -1) is None


def test_view_rows_of_a_default_table_node_are_offset_by_the_name_row():
    """qMRMLTableModel shows a default table's column names as row 0 of the view."""
    table = slicer.vtkMRMLScene().AddNewNodeByClass("vtkMRMLTableNode")
    assert table_row(table, 1) == 0 and table_row(table, 0) == -1
    table.SetUseColumnTitleAsColumnHeader(True)
    assert table_row(table, 0) == 0


def test_comparison_layout_two_axial_linked_views_one_segmentation_each(loaded_run):
    scene, result = loaded_run["scene"], loaded_run["result"]
    assert loaded_run["yellow_before"] == "Sagittal"  # Slicer's default for the right-hand view
    assert (
        loaded_run["layout"].GetViewArrangement()
        == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    )
    red = scene.GetNodeByID("vtkMRMLSliceNodeRed")
    yellow = scene.GetNodeByID("vtkMRMLSliceNodeYellow")
    assert red.GetOrientation() == yellow.GetOrientation() == "Axial"
    for name in ("Red", "Yellow"):
        composite = scene.GetNodeByID(f"vtkMRMLSliceCompositeNode{name}")
        assert composite.GetBackgroundVolumeID() == loaded_run["volume"].GetID()
        assert composite.GetLinkedControl()
    original = result.original.GetDisplayNode()
    compressed = result.compressed.GetDisplayNode()
    assert [original.GetNthViewNodeID(i) for i in range(original.GetNumberOfViewNodeIDs())] == [
        red.GetID()
    ]
    assert [compressed.GetNthViewNodeID(i) for i in range(compressed.GetNumberOfViewNodeIDs())] == [
        yellow.GetID()
    ]


def test_results_follow_a_transformed_ct(loaded_run):
    result, transform = loaded_run["result"], loaded_run["transform"]
    for node in (result.compressed, result.original):
        assert node.GetTransformNodeID() == transform.GetID()
    node = result.compressed
    liver = node.GetSegmentation().GetSegmentIdBySegmentName("liver")
    node.SetAndObserveTransformNodeID(None)
    local = node.GetSegmentCenterRAS(liver)  # the CT's own coordinates
    node.SetAndObserveTransformNodeID(transform.GetID())
    world = center_of(result, "liver")  # where a table click jumps the views
    assert world[0] == pytest.approx(local[0] + 40.0)
    assert world[1:] == pytest.approx(tuple(local[1:]))


def test_a_structure_only_the_original_found_still_centers_the_views(loaded_run):
    result = loaded_run["result"]
    segmentation = result.compressed.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName("liver")
    segment = segmentation.GetSegment(segment_id)
    segmentation.RemoveSegment(segment_id)  # now only the original found the liver
    try:
        assert "liver" in _segment_names(result.original)
        assert "liver" not in _segment_names(result.compressed)
        original_id = result.original.GetSegmentation().GetSegmentIdBySegmentName("liver")
        expected = result.original.GetSegmentCenterRAS(original_id)
        assert center_of(result, "liver") == pytest.approx(tuple(expected))
    finally:
        segmentation.AddSegment(segment, segment_id)  # the session's run, as it was
    assert center_of(result, "no_such_structure") is None


def test_run_folder_with_the_exported_ct_is_removed_after_loading(loaded_run):
    assert not loaded_run["folder"].exists()


def test_existing_output_node_keeps_its_name_and_display(phantom_3mm, isolated_home, tmp_path):
    scene, _ = _scene_with_layout()
    volume = _load_volume(scene, phantom_3mm)
    mine = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "My segmentation")
    mine.CreateDefaultDisplayNodes()
    mine.GetDisplayNode().SetOpacity(0.25)
    run = SegmentationRun(
        scene,
        _request(volume, output_id=mine.GetID(), df=0.3),
        python=sys.executable,
        env=isolated_home,
        temp_root=tmp_path,
    )
    assert run.wait(timeout=600) == 0, "\n".join(run.log)
    result = run.load()
    assert result.compressed is mine
    assert mine.GetDisplayNode().GetNumberOfViewNodeIDs() == 0  # shown in every view
    assert mine.GetName() == "My segmentation"
    assert mine.GetDisplayNode().GetOpacity() == pytest.approx(0.25)
    assert "liver" in _segment_names(mine)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    assert result.table is None and result.original is None


def test_volume_removed_during_the_run_gives_a_clear_error(phantom_3mm, isolated_home, tmp_path):
    scene, _ = _scene_with_layout()
    volume = _load_volume(scene, phantom_3mm)
    run = SegmentationRun(
        scene, _request(volume), python=sys.executable, env=isolated_home, temp_root=tmp_path
    )
    scene.RemoveNode(volume)
    assert run.wait(timeout=600) == 0
    with pytest.raises(RunError, match="'Phantom CT' was removed during the run"):
        run.load()
    assert list(tmp_path.iterdir()) == []
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_cancel_ends_the_run_and_removes_the_ct(phantom_3mm, isolated_home, tmp_path):
    scene, _ = _scene_with_layout()
    volume = _load_volume(scene, phantom_3mm)
    run = SegmentationRun(
        scene, _request(volume), python=sys.executable, env=isolated_home, temp_root=tmp_path
    )
    deadline = time.monotonic() + 120
    while run.latest is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.latest is not None, "no progress from the CLI"
    run.cancel()
    assert run.process.state.cancelled and run.poll() is not None
    assert list(tmp_path.iterdir()) == []


def test_a_failing_run_reports_one_line_and_leaves_nothing(phantom_3mm, isolated_home, tmp_path):
    scene, _ = _scene_with_layout()
    volume = _load_volume(scene, phantom_3mm)
    run = SegmentationRun(
        scene,
        _request(volume, weights_dir=str(tmp_path / "no-weights")),
        python=sys.executable,
        env=isolated_home,
        temp_root=tmp_path / "runs",
    )
    assert run.wait(timeout=300) != 0
    assert "weights" in run.error.lower() and "\n" not in run.error
    run.cleanup()
    assert list((tmp_path / "runs").iterdir()) == []


def test_missing_volume_is_refused_before_any_work(tmp_path):
    scene, _ = _scene_with_layout()
    with pytest.raises(RunError, match="no longer in the scene"):
        SegmentationRun(scene, RunRequest("vtkMRMLScalarVolumeNode99"), temp_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_stale_run_folders_are_swept(tmp_path):
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"run-{dead.pid}-0-x1"  # as a process that has ended named its folder
    stale.mkdir()
    (stale / "ct.nii.gz").write_bytes(b"patient data")
    mine = run_folder.new_run_folder(tmp_path)
    assert mine.name.startswith(f"run-{os.getpid()}-")
    assert run_folder.sweep_stale_runs(tmp_path) == [stale]
    assert not stale.exists() and mine.exists()


def test_roi_subset_and_statistics_reach_the_cli_and_come_back_as_a_table(
    phantom_3mm, isolated_home, tmp_path
):
    """The picker's structures go to `segment --roi-subset` (TS's crop with its 6 mm model, then
    only those structures) and the statistics checkbox to `--statistics`; the loaded result has
    only the chosen structures and a table of TS's own statistics (volume ml, mean HU)."""
    import json

    scene, _ = _scene_with_layout()
    volume = _load_volume(scene, phantom_3mm)
    request = _request(volume, roi_subset=("liver", "spleen"), statistics=True)
    args = request.cli_args(Path("ct.nii.gz"), Path("r.seg.nrrd"))
    assert args[args.index("--roi-subset") :][:3] == ["--roi-subset", "liver", "spleen"]
    assert "--statistics" in args
    run = SegmentationRun(scene, request, sys.executable, isolated_home, tmp_path)
    assert run.wait(timeout=600) == 0, "\n".join(run.log)
    statistics = json.loads((run.folder / "result.statistics.json").read_text())
    result = run.load()
    segmentation = result.compressed.GetSegmentation()
    found = {
        name
        for name in _segment_names(result.compressed)
        if not segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))
        .GetRepresentation("Binary labelmap")
        .IsEmpty()
    }
    assert found and found <= {"liver", "spleen"}
    table = result.statistics
    assert table.GetNumberOfColumns() == 3 and table.GetColumnName(1) == "Volume ml"
    rows = {
        table.GetCellText(r, 0): (float(table.GetCellText(r, 1)), float(table.GetCellText(r, 2)))
        for r in range(table.GetNumberOfRows())
    }
    expected = {n: v for n, v in statistics.items() if v["volume"] > 0}
    assert rows.keys() == expected.keys() and rows
    for name, (ml, hu) in rows.items():
        assert ml == pytest.approx(expected[name]["volume"] / 1000, rel=1e-6)
        assert hu == pytest.approx(expected[name]["intensity"], rel=1e-6)


def test_another_task_runs_through_the_panel(phantom_3mm, isolated_home, tmp_path):
    """Task body (fast, the Dataset300 test model): `segment --task body --fast`, loaded with
    the task's structure names under a name that says the task."""
    scene, _ = _scene_with_layout()
    volume = _load_volume(scene, phantom_3mm)
    request = _request(volume, task="body", df=0.3)
    assert request.cli_args(Path("ct.nii.gz"), Path("r.seg.nrrd"))[-2:] == ["--task", "body"]
    run = SegmentationRun(scene, request, sys.executable, isolated_home, tmp_path)
    assert run.wait(timeout=600) == 0, "\n".join(run.log)
    result = run.load()
    assert "body_trunc" in _segment_names(result.compressed)
    assert result.compressed.GetName() == "Phantom CT TuckerSegment body DF 0.3"


def test_fit_my_budget_plans_each_model_and_loads_under_its_budget(
    phantom_3mm, isolated_home, tmp_path
):
    """ "Fit my budget" replaces the DF (and any DF per expert) by `segment --max-params`: the
    CLI plans the ranks for that share of the parameters; the result is named by the budget."""
    import json

    from TuckerSegmentLib.panel.model_size import ModelSizes

    scene, _ = _scene_with_layout()
    volume = _load_volume(scene, phantom_3mm)
    request = _request(volume, max_params=0.2, df=0.5, expert_df="organs=0.4")
    args = request.cli_args(Path("ct.nii.gz"), Path("r.seg.nrrd"))
    assert args[args.index("--max-params") + 1] == "20%"
    assert "--df" not in args and "--expert-df" not in args
    run = SegmentationRun(scene, request, sys.executable, isolated_home, tmp_path)
    assert run.wait(timeout=600) == 0, "\n".join(run.log)
    sidecar = json.loads((run.folder / "result.json").read_text())
    model = sidecar["models"]["3mm"]
    assert model["params"] <= 0.2 * model["params_original"]
    result = run.load()
    assert result.compressed.GetName() == "Phantom CT TuckerSegment plan 20%"
    assert "liver" in _segment_names(result.compressed)
    text = ModelSizes().budget_text(True, 0.2)
    assert text.startswith("at most 3.31 M parameters (20% of 16.55 M)")


def test_a_pruned_model_given_in_the_panel_is_the_one_that_runs(
    phantom_3mm, isolated_home, tmp_path, cli
):
    """A `prune --structured` model in "Fine-tuned / pruned models" goes to the CLI as
    --compressed-model: that smaller network runs (not a decomposition of the installed
    model), and the result is named by how it was pruned, not by a DF."""
    import json

    pruned = tmp_path / "pruned"
    made = cli(
        *["prune", "--model", "3mm", "--weights-dir", MODELS, "--method", "l2", "--ratio", "0.5"],
        *["--structured", "-o", pruned],
    )
    assert made.returncode == 0, made.stderr
    scene, _ = _scene_with_layout()
    volume = _load_volume(scene, phantom_3mm)
    request = _request(volume, compressed_models=(str(pruned),))
    run = SegmentationRun(scene, request, sys.executable, isolated_home, tmp_path / "runs")
    assert run.wait(timeout=600) == 0, "\n".join(run.log)
    model = json.loads((run.folder / "result.json").read_text())["models"]["3mm"]
    manifest = json.loads((pruned / "manifest.json").read_text())
    assert model["cache"] == "given" and model["prune"]["structured"] is True
    assert model["params"] == manifest["params"]["compressed"]
    result = run.load()
    assert result.compressed.GetName() == "Phantom CT TuckerSegment l2 pruned 50%"
    assert "liver" in _segment_names(result.compressed)
