"""The review's MRML scene: the CT, both segmentations and the three views, in Slicer's own
classes (slicer-core, through trame-slicer's SlicerApp), so the page draws what Slicer draws.

Each segmentation's display node is restricted to its own slice view (original left, compressed
right), as the panel does in Slicer (panel/comparison_view.py); both slice views are axial, in
one view group, with linked composite nodes, so Slicer's slice link logic moves the other view
when the reader scrolls, pans or zooms one. The 3D view shows both as surfaces.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import TuckerSegmentError
from ..panel.comparison_view import by_layout_name
from .result_folder import ReviewResult

ORIGINAL_VIEW, COMPRESSED_VIEW, THREE_D_VIEW = "Original", "Compressed", "ThreeD"
# an abdomen window, as a radiologist reads a body CT (width, level in HU)
CT_WINDOW = (400.0, 40.0)
# Slicer's binary labelmap → closed surface rule: surface nets, smoothed inside the filter
# (with "Joint smoothing" too, slicer-core 5.11 returned empty surfaces)
SURFACE_CONVERSION = {"Conversion method": "1", "SurfaceNets smoothing": "1"}


def _labels_as_seg_nrrd(path: Path, task: str, folder: Path) -> Path:
    """A NIfTI label map written as the .seg.nrrd the CLI writes (names, colors, SNOMED CT
    terminology of the task): the page shows the same segments as the panel."""
    if path.name.endswith(".seg.nrrd"):
        return path
    import nibabel as nib
    import numpy as np

    from ..pipeline.output_files import stem, write_seg_nrrd

    image = nib.load(str(path))
    target = folder / f"{stem(path)}.seg.nrrd"
    write_seg_nrrd(np.asanyarray(image.dataobj), image.affine, target, task)
    return target


def _ct_as_volume_file(path: Path, folder: Path) -> Path:
    """A DICOM series becomes a NIfTI in the review's own temp folder (the reader used by
    `segment`, so the same series gives the same image)."""
    if path.is_file():
        return path
    import nibabel as nib

    from ..pipeline.input_image import load_ct

    target = folder / "ct.nii.gz"
    nib.save(load_ct(path).image, str(target))
    return target


class ReviewScene:
    """The scene and its views; every change the page asks for goes through here."""

    def __init__(self, result: ReviewResult, slicer_app: Any) -> None:
        from ..storage.scratch import run_scratch

        self.result = result
        self.app = slicer_app
        io = slicer_app.io_manager
        # files made on the way (a DICOM series as NIfTI, a NIfTI result as .seg.nrrd) live in
        # the project's private run folder, removed once loaded (swept if the process dies)
        with run_scratch() as folder:
            try:
                self.volume = io.load_volumes(str(_ct_as_volume_file(result.ct, folder)))[0]
            except (IndexError, RuntimeError) as error:
                raise TuckerSegmentError(f"cannot read the CT {result.ct}: {error}") from None
            self.segmentations = {}
            for side, path in (
                (ORIGINAL_VIEW, result.original),
                (COMPRESSED_VIEW, result.compressed),
            ):
                node = io.load_segmentation(str(_labels_as_seg_nrrd(path, result.task, folder)))
                if node is None:
                    raise TuckerSegmentError(f"cannot read {path} as a segmentation")
                node.SetName(f"{result.name} {side.lower()}")
                node.CreateDefaultDisplayNodes()
                self.segmentations[side] = node
        display = self.volume.GetDisplayNode()
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(*CT_WINDOW)
        self.views: dict[str, Any] = {}

    def create_views(self) -> dict[str, Any]:
        """The two axial slice views and the 3D view, through the view manager's factories
        (remote views on the page; offscreen ones in tests)."""
        from trame_slicer.views import ViewLayoutDefinition

        manager = self.app.view_manager
        for side in (ORIGINAL_VIEW, COMPRESSED_VIEW):
            self.views[side] = manager.create_view(
                ViewLayoutDefinition.slice_view("Axial", label=side)
            )
        self.views[THREE_D_VIEW] = manager.create_view(ViewLayoutDefinition.threed_view())
        for side in (ORIGINAL_VIEW, COMPRESSED_VIEW):
            view = self.views[side]
            view.set_background_volume_id(self.volume.GetID())
            by_layout_name(self.app.scene, "vtkMRMLSliceCompositeNode", side).SetLinkedControl(True)
            display = self.segmentations[side].GetDisplayNode()
            modifying = display.StartModify()
            display.RemoveAllViewNodeIDs()
            display.AddViewNodeID(view.get_view_node_id())
            display.AddViewNodeID(self.views[THREE_D_VIEW].get_view_node_id())
            display.EndModify(modifying)
        self._surfaces()
        for view in self.views.values():
            view.fit_view_to_content()
        return self.views

    def _surfaces(self) -> None:
        """Both segmentations as surfaces for the 3D view, by Slicer's surface nets (one pass
        over all labels): 2 s where the default flying edges took 20 s for 29 structures of a
        512×512×20 series."""
        for segmentation in self.segmentations.values():
            segments = segmentation.GetSegmentation()
            for name, value in SURFACE_CONVERSION.items():
                segments.SetConversionParameter(name, value)
            segmentation.CreateClosedSurfaceRepresentation()

    # what the page changes -------------------------------------------------------------

    def slice_nodes(self) -> list[Any]:
        return [self.views[s].get_view_node() for s in (ORIGINAL_VIEW, COMPRESSED_VIEW)]

    def slice_offset(self) -> float:
        return float(self.views[ORIGINAL_VIEW].get_slice_value())

    def slice_range(self) -> tuple[float, float, float]:
        """First and last slice position (mm) and the step between slices."""
        view = self.views[ORIGINAL_VIEW]
        low, high = view.get_slice_range()
        return float(low), float(high), float(view.get_slice_step())

    def set_slice_offset(self, offset: float) -> None:
        for side in (ORIGINAL_VIEW, COMPRESSED_VIEW):
            self.views[side].set_slice_value(float(offset))

    def structure_center(self, name: str) -> list[float] | None:
        """The center (RAS, mm) of a structure: of the original's segment where it has one,
        else of the compressed one's."""
        for side in (ORIGINAL_VIEW, COMPRESSED_VIEW):
            segmentation = self.segmentations[side]
            segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName(name)
            if segment_id:
                center = segmentation.GetSegmentCenterRAS(segment_id)
                if center is not None and all(math.isfinite(v) for v in center):
                    return [float(v) for v in center]
        return None

    def jump_to(self, name: str) -> list[float] | None:
        """Both slice views through the structure's center (the slice moves; the frame and
        zoom stay, as Slicer's default jump does)."""
        center = self.structure_center(name)
        if center is None:
            return None
        for node in self.slice_nodes():
            node.JumpSliceByOffsetting(*center)
        return center

    def show_structures(self, names: set[str] | None) -> None:
        """Only these structures (all when None), in every view."""
        for segmentation, segment_id, segment in self._segments():
            visible = names is None or segment.GetName() in names
            segmentation.GetDisplayNode().SetSegmentVisibility(segment_id, visible)

    def set_fill_opacity(self, opacity: float) -> None:
        for segmentation in self.segmentations.values():
            segmentation.GetDisplayNode().SetOpacity2DFill(float(opacity))

    def set_outline(self, visible: bool) -> None:
        for segmentation in self.segmentations.values():
            segmentation.GetDisplayNode().SetVisibility2DOutline(bool(visible))

    def _segments(self) -> Any:
        """Every (segmentation node, segment id, segment) of both results."""
        for segmentation in self.segmentations.values():
            segments = segmentation.GetSegmentation()
            for i in range(segments.GetNumberOfSegments()):
                segment_id = segments.GetNthSegmentID(i)
                yield segmentation, segment_id, segments.GetSegment(segment_id)

    def segment_colors(self) -> dict[str, tuple[int, int, int]]:
        """Each structure's color as 0–255 RGB, as the segmentation file gives it."""
        return {
            segment.GetName(): tuple(round(255 * c) for c in segment.GetColor())
            for _, _, segment in self._segments()
        }

    def segment_terms(self) -> dict[str, str]:
        """Each structure's terminology type as Slicer reads it from the file, shown as
        "meaning (scheme code)" — e.g. "Spleen (SCT 78961009)"."""
        terms = {}
        for _, _, segment in self._segments():
            fields = (segment.GetTerminology() or "").split("~")
            code = fields[2].split("^") if len(fields) > 2 else []
            if len(code) == 3 and code[1]:
                terms[segment.GetName()] = f"{code[2]} ({code[0]} {code[1]})"
        return terms
