"""MRML helpers: segmentation nodes with TS names and fixed colors, the agreement table, the
side-by-side review layout. ``slicer`` is imported inside the functions only, so this module
imports anywhere; the functions take the scene they work on (tested headless with slicer-core).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def load_result(scene: Any, path: Path, name: str, reference_volume=None):
    """Load a TuckerSegment/TS result (.nii.gz or .seg.nrrd) as a segmentation node, through the
    panel's one path: a NIfTI label map is written as the .seg.nrrd `segment` writes (TS names,
    fixed colors, SNOMED CT terminology) and read by MRML's segmentation storage node, which
    builds all segments at once instead of one labelmap per structure."""
    import tempfile

    from ..pipeline.compare_files import read_labels
    from ..pipeline.output_files import write_seg_nrrd
    from .scene_io import load_segmentation

    path = Path(path)
    if path.name.endswith(".seg.nrrd"):
        return load_segmentation(scene, path, name, reference_volume)
    labels, affine = read_labels(path)
    with tempfile.TemporaryDirectory(prefix="tuckersegment-load-") as folder:
        seg = Path(folder) / "result.seg.nrrd"
        write_seg_nrrd(labels, affine, seg)
        return load_segmentation(scene, seg, name, reference_volume)


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


def statistics_table_node(scene: Any, statistics: dict, name: str = "TuckerSegment statistics"):
    """A table node of TotalSegmentator's own ``--statistics`` (volume in mm³ and mean
    intensity per structure; TS's JSON as `segment` wrote it): structures found, by name."""
    import vtk

    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    columns = [
        ("Structure", vtk.vtkStringArray),
        ("Volume ml", vtk.vtkDoubleArray),
        ("Mean HU", vtk.vtkDoubleArray),
    ]
    arrays = []
    for title, kind in columns:
        array = kind()
        array.SetName(title)
        arrays.append(array)
    for structure in sorted(statistics):
        values = statistics[structure]
        if not values.get("volume"):
            continue  # not found (or TS left it out: touching the image border)
        arrays[0].InsertNextValue(structure)
        arrays[1].InsertNextValue(values["volume"] / 1000.0)
        arrays[2].InsertNextValue(values["intensity"])
    for array in arrays:
        table.AddColumn(array)
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetLocked(True)
    return table


def table_row(table: Any, view_row: int) -> int:
    """The vtkTable row behind a row index of Slicer's table view (qMRMLTableModel): with
    UseColumnTitleAsColumnHeader off, Slicer's default, the view's row 0 holds the column names."""
    return view_row if table.GetUseColumnTitleAsColumnHeader() else view_row - 1


def structure_at(table: Any, view_row: int) -> str | None:
    """The structure named in the agreement table row the user clicked, or None."""
    row = table_row(table, view_row)
    return table.GetCellText(row, 0) if 0 <= row < table.GetNumberOfRows() else None
