"""MRML helpers with slicer-core (real vtkMRMLScene, segmentation nodes, Segmentations logic)."""

import numpy as np
import pytest
import slicer  # noqa: E402  (slicer-core, installed by .ci/setup)
from conftest import SHARED, needs_shared
from TuckerSegmentLib.panel.slicer_nodes import agreement_table_node, load_result  # noqa: E402
from TuckerSegmentLib.pipeline.compare_files import compare_files, read_labels  # noqa: E402
from TuckerSegmentLib.ts.structures import structure_colors, structure_names  # noqa: E402

FULL = SHARED / "example_seg.nii.gz"
FAST = SHARED / "example_seg_fast.nii.gz"
pytestmark = needs_shared


@pytest.fixture()
def scene():
    return slicer.vtkMRMLScene()


def _segments(node):
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    return {segmentation.GetSegment(i).GetName(): segmentation.GetSegment(i) for i in ids}


def test_ts_result_becomes_a_segmentation_node_with_names_and_colors(scene):
    node = load_result(scene, FULL, "TS full")
    segments = _segments(node)
    labels, _ = read_labels(FULL)
    names, colors = structure_names(), structure_colors()
    assert set(segments) == {names[i] for i in np.unique(labels) if i}
    assert len(segments) == 41
    for label in np.unique(labels):
        if label:
            color = segments[names[label]].GetColor()
            assert np.allclose(color, colors[label], atol=1e-6)
    assert node.GetClassName() == "vtkMRMLSegmentationNode"


def _terminology(segment) -> str:
    import vtk

    value = vtk.mutable("")
    segment.GetTag("TerminologyEntry", value)
    return str(value)


def test_segments_carry_snomed_terminology_from_ts(scene):
    node = load_result(scene, FULL, "TS full")
    segments = _segments(node)
    liver = _terminology(segments["liver"])
    assert "SCT^10200004^Liver" in liver and "SCT^123037004^Anatomical Structure" in liver
    kidney = _terminology(segments["kidney_left"])
    assert "SCT^64033007^Kidney" in kidney and "SCT^7771000^Left" in kidney
    assert all(_terminology(s) for s in segments.values())


def test_two_nodes_share_colors(scene):
    full = _segments(load_result(scene, FULL, "full"))
    fast = _segments(load_result(scene, FAST, "fast"))
    shared = set(full) & set(fast)
    assert len(shared) >= 40
    for name in shared:
        assert np.allclose(full[name].GetColor(), fast[name].GetColor())


def test_segment_voxels_match_the_label_file(scene):
    node = load_result(scene, FULL, "full")
    liver_id = node.GetSegmentation().GetSegmentIdBySegmentName("liver")
    labelmap = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(liver_id, labelmap)
    extent = labelmap.GetExtent()
    from vtk.util import numpy_support

    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    count = int((voxels.reshape(dims[::-1]) > 0).sum())
    labels, _ = read_labels(FULL)
    assert count == int((labels == 5).sum())


def test_agreement_table_node(scene):
    report = compare_files(FULL, FAST)
    table = agreement_table_node(scene, report)
    assert table.GetNumberOfRows() == 41
    assert table.GetCellText(0, 0) == "lung_middle_lobe_right"  # worst first
    assert float(table.GetCellText(0, 1)) == 0.0
    rows = {table.GetCellText(r, 0): r for r in range(table.GetNumberOfRows())}
    liver = next(s for s in report.structures if s.name == "liver")
    assert float(table.GetCellText(rows["liver"], 1)) == pytest.approx(liver.dice, abs=1e-4)
    assert float(table.GetCellText(rows["liver"], 3)) == pytest.approx(liver.volume_a_ml, abs=0.01)
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == [
        "Structure",
        "Dice",
        "NSD 3 mm",
        "Original ml",
        "Compressed ml",
        "Volume difference %",
    ]
