"""MRML helpers: segmentation nodes with TS names and fixed colors, the agreement table, the
side-by-side review layout. ``slicer`` is imported inside the functions only, so this module
imports anywhere; the functions take the scene they work on (tested headless with slicer-core).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _slicer():
    import slicer  # Slicer, or slicer-core's headless MRML

    _ensure_converter_rules(slicer)
    return slicer


def _ensure_converter_rules(slicer) -> None:  # noqa: ANN001
    """Slicer's Segmentations module registers the representation converters at start-up;
    headless MRML (slicer-core) has none until they are registered here."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if factory.GetConverterRules():
        return
    for rule in (
        slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
        slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
    ):
        factory.RegisterConverterRule(rule())


def labels_to_segmentation_node(
    scene: Any, labels: np.ndarray, ijk_to_ras: np.ndarray, name: str, reference_volume=None
):
    """A vtkMRMLSegmentationNode with one segment per TS structure present (TS names, the
    project's fixed colors, SNOMED CT terminology, label value = TS id)."""
    import vtk
    from vtk.util import numpy_support

    from ..ts.structures import structure_colors, structure_names
    from ..ts.terminology import terminology_entry

    slicer = _slicer()
    names, colors = structure_names(), structure_colors()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    segmentation = node.GetSegmentation()
    ijk_to_ras_matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            ijk_to_ras_matrix.SetElement(r, c, float(ijk_to_ras[r, c]))
    present = [int(v) for v in np.unique(labels) if v != 0]
    for label in present:
        mask = (labels == label).astype(np.uint8)
        image = slicer.vtkOrientedImageData()
        image.SetDimensions(*mask.shape)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        flat = mask.transpose(2, 1, 0).ravel()  # VTK order: i fastest
        image.GetPointData().SetScalars(
            numpy_support.numpy_to_vtk(flat, deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
        )
        image.SetImageToWorldMatrix(ijk_to_ras_matrix)
        segment_name = names.get(label, f"label_{label}")
        segment_id = segmentation.AddEmptySegment(
            segment_name, segment_name, list(colors.get(label, (0.5, 0.5, 0.5)))
        )
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            image, node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
        )
        entry = terminology_entry(label)
        if entry is not None:
            segmentation.GetSegment(segment_id).SetTag("TerminologyEntry", entry)
    if reference_volume is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    return node


def load_result(scene: Any, path: Path, name: str, reference_volume=None):
    """Load a TuckerSegment/TS result (.nii.gz or .seg.nrrd) as a segmentation node."""
    from ..pipeline.compare_files import read_labels

    labels, affine = read_labels(Path(path))
    return labels_to_segmentation_node(scene, labels, affine, name, reference_volume)


def agreement_table_node(scene: Any, report, name: str = "TuckerSegment agreement"):
    """A table node: structure, Dice, NSD, volumes and their difference, worst Dice first."""
    import vtk

    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    columns = [
        ("Structure", vtk.vtkStringArray),
        ("Dice", vtk.vtkDoubleArray),
        ("NSD 3 mm", vtk.vtkDoubleArray),
        ("Original ml", vtk.vtkDoubleArray),
        ("Compressed ml", vtk.vtkDoubleArray),
        ("Volume difference %", vtk.vtkDoubleArray),
    ]
    arrays = []
    for title, kind in columns:
        array = kind()
        array.SetName(title)
        arrays.append(array)
    for s in sorted(report.present(), key=lambda s: (s.dice, s.name)):
        arrays[0].InsertNextValue(s.name)
        arrays[1].InsertNextValue(s.dice)
        arrays[2].InsertNextValue(s.nsd)
        arrays[3].InsertNextValue(s.volume_a_ml)
        arrays[4].InsertNextValue(s.volume_b_ml)
        diff = (
            100.0 * (s.volume_b_ml - s.volume_a_ml) / s.volume_a_ml
            if s.volume_a_ml
            else float("nan")
        )
        arrays[5].InsertNextValue(diff)
    for array in arrays:
        table.AddColumn(array)
    table.SetUseColumnTitleAsColumnHeader(True)  # names in the header, not in an extra row 0
    table.SetLocked(True)  # a report, not for editing
    return table


def table_row(table: Any, view_row: int) -> int:
    """The vtkTable row behind a row index of Slicer's table view (qMRMLTableModel): with
    UseColumnTitleAsColumnHeader off, Slicer's default, the view's row 0 holds the column names."""
    return view_row if table.GetUseColumnTitleAsColumnHeader() else view_row - 1


def structure_at(table: Any, view_row: int) -> str | None:
    """The structure named in the agreement table row the user clicked, or None."""
    row = table_row(table, view_row)
    return table.GetCellText(row, 0) if 0 <= row < table.GetNumberOfRows() else None
