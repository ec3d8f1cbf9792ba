"""The side-by-side review: original on the left, compressed on the right, both axial, linked.

Slicer's side-by-side layout shows the Red and Yellow slice views, and the Yellow view keeps its
default sagittal orientation, so both are set to the same orientation here; each segmentation's
display node is restricted to its own view, and the views' composite nodes are linked so that
scrolling, zooming and window/level move both.
"""

from __future__ import annotations

from typing import Any

LEFT, RIGHT = "Red", "Yellow"


def by_layout_name(scene: Any, class_name: str, layout_name: str) -> Any:
    for i in range(scene.GetNumberOfNodesByClass(class_name)):
        node = scene.GetNthNodeByClass(i, class_name)
        if node.GetLayoutName() == layout_name:
            return node
    raise LookupError(f"no {class_name} for the {layout_name} view in the scene")


def show_side_by_side(
    scene: Any,
    layout_node: Any,
    volume: Any,
    original: Any,
    compressed: Any,
    orientation: str = "Axial",
) -> dict[str, Any]:
    """Switch to the side-by-side layout and put each segmentation in its own view.

    ``layout_node``: Slicer's layout node (``slicer.app.layoutManager().layoutLogic()
    .GetLayoutNode()`` in Slicer; the layout logic's node with slicer-core). Returns the slice
    nodes by side."""
    import slicer

    layout_node.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
    views = {}
    for side, segmentation in ((LEFT, original), (RIGHT, compressed)):
        slice_node = by_layout_name(scene, "vtkMRMLSliceNode", side)
        slice_node.SetOrientation(orientation)
        composite = by_layout_name(scene, "vtkMRMLSliceCompositeNode", side)
        composite.SetBackgroundVolumeID(volume.GetID())
        composite.SetLinkedControl(True)
        display = segmentation.GetDisplayNode()
        display.RemoveAllViewNodeIDs()
        display.AddViewNodeID(slice_node.GetID())
        views[side] = slice_node
    return views
