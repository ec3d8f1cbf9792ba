"""Move data between an MRML scene and the CLI's files, with MRML's own storage nodes.

The CT is written by a volume storage node (what ``slicer.util.exportNode`` does underneath,
without its shared default-properties dict) in the volume's own coordinates; results are read
from the CLI's ``.seg.nrrd`` (segment names, colors and terminology already in it) and placed
under the CT's parent transform, so a transformed CT and its segmentation stay together.
Works in Slicer and in slicer-core's headless MRML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class SceneIOError(RuntimeError):
    """A node could not be written or read; the message says which and where."""


def _slicer():
    from .slicer_nodes import _slicer as ensure

    return ensure()


def export_volume(scene: Any, volume: Any, path: Path) -> None:
    """Write ``volume`` (voxels and geometry, no parent transform) to ``path`` (.nii.gz)."""
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    try:
        storage.SetFileName(str(path))
        storage.SetUseCompression(True)
        if not storage.WriteData(volume) or not Path(path).is_file():
            raise SceneIOError(f"could not write {volume.GetName()} to {path}")
    finally:
        scene.RemoveNode(storage)


def load_segmentation(
    scene: Any, path: Path, name: str, volume: Any | None = None, into: Any | None = None
) -> Any:
    """Read a ``.seg.nrrd`` into a segmentation node; returns the node.

    ``into``: an existing node the user chose as output; its segments are replaced and its name,
    display settings and place in the subject hierarchy stay. ``volume``: the CT, whose parent
    transform the result goes under and whose geometry it references."""
    _slicer()  # converter rules, for headless MRML
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    try:
        storage.SetFileName(str(path))
        if not storage.ReadData(node):
            raise SceneIOError(f"could not read the segmentation {path}")
    finally:
        scene.RemoveNode(storage)
    if into is not None:
        into.GetSegmentation().DeepCopy(node.GetSegmentation())
        scene.RemoveNode(node)
        node = into
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    if volume is not None:
        node.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    return node
