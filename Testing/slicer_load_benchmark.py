"""Benchmark (not a test): how long the Slicer panel takes to show a finished run, and how long
the DF slider takes to update the model size.

Builds a synthetic 512×512×300 result with 104 structures in the files `segment --compare`
writes (two .seg.nrrd, the agreement CSV, the sidecar JSON), then loads it the way the panel
does (TuckerSegmentLib.panel.segmentation_run.load_run_folder) into a slicer-core MRML scene with
the comparison layout. Goal (issue: Slicer panel): ≤ 20 s after the process ends; slider ≤ 50 ms.

    .venv/bin/python Testing/slicer_load_benchmark.py [--shape 512 512 300] [--structures 104]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_run_folder(folder: Path, shape: tuple[int, int, int], structures: int) -> None:
    """Label boxes of TS ids 1..structures tiling the volume; the 'original' shifted by 1 voxel."""
    from TuckerSegmentLib.pipeline.agreement import compare_labels
    from TuckerSegmentLib.pipeline.output_files import write_seg_nrrd
    from TuckerSegmentLib.ts.structures import structure_names

    labels = np.zeros(shape, np.uint8)
    per_axis = int(np.ceil(structures ** (1 / 3)))
    steps = [s // per_axis for s in shape]
    label = 0
    for i in range(per_axis):
        for j in range(per_axis):
            for k in range(per_axis):
                label += 1
                if label > structures:
                    break
                box = tuple(
                    slice(a * st + 2, (a + 1) * st - 2)
                    for a, st in zip((i, j, k), steps, strict=True)
                )
                labels[box] = label
    original = np.roll(labels, 1, axis=0)
    affine = np.diag([0.8, 0.8, 1.0, 1.0])
    write_seg_nrrd(labels, affine, folder / "result.seg.nrrd")
    write_seg_nrrd(original, affine, folder / "result.original.seg.nrrd")
    report = compare_labels(original, labels, (0.8, 0.8, 1.0), structure_names())
    (folder / "result.agreement.csv").write_text(report.to_csv())
    sidecar = {
        "models": {"3mm": {"df": 0.3}},
        "timings": {
            "segment_s": 0,
            "segment_network_s": 0,
            "original_s": 0,
            "original_network_s": 0,
        },
        "comparison": {
            "original_output": str(folder / "result.original.seg.nrrd"),
            "report": str(folder / "result.agreement.csv"),
            "summary": report.summary,
        },
    }
    (folder / "result.json").write_text(json.dumps(sidecar))


def load_seconds(folder: Path, shape: tuple[int, int, int]) -> float:
    import slicer
    import vtk
    from TuckerSegmentLib.panel.segmentation_run import RunRequest, load_run_folder

    scene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    layout = slicer.vtkMRMLLayoutLogic()
    layout.SetMRMLScene(scene)
    logics = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.SetSliceNode(scene.GetNthNodeByClass(i, "vtkMRMLSliceNode"))
        logics.append(logic)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    image = vtk.vtkImageData()
    image.SetDimensions(*shape)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    volume.SetAndObserveImageData(image)
    volume.SetSpacing(0.8, 0.8, 1.0)
    start = time.perf_counter()
    result = load_run_folder(
        scene, folder, RunRequest(volume.GetID(), compare=True), layout.GetLayoutNode()
    )
    seconds = time.perf_counter() - start
    assert result.compressed.GetSegmentation().GetNumberOfSegments() > 0 and result.table
    return seconds


def slider_milliseconds(changes: int = 200) -> tuple[float, float, float]:
    """(first call incl. the one-time count, median per change, worst per change) in ms."""
    from TuckerSegmentLib.panel.model_size import ModelSizes

    sizes = ModelSizes()
    start = time.perf_counter()
    sizes.text(False, 0.3, 8)
    first = (time.perf_counter() - start) * 1e3
    times = []
    for i in range(changes):
        df = 0.05 + 0.05 * (i % 20)
        t = time.perf_counter()
        sizes.text(i % 2 == 0, df, 8)
        times.append((time.perf_counter() - t) * 1e3)
    return first, statistics.median(times[2:]), max(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--structures", type=int, default=104)
    args = parser.parse_args()
    shape = tuple(args.shape)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        synthetic_run_folder(folder, shape, args.structures)
        seconds = load_seconds(folder, shape)
    print(
        f"results loaded (compressed + original .seg.nrrd, agreement table, comparison layout), "
        f"{'×'.join(map(str, shape))}, {args.structures} structures: {seconds:.1f} s (goal ≤ 20 s)"
    )
    first, median, worst = slider_milliseconds()
    print(
        f"DF slider model size: first use {first:.0f} ms (counts the original networks once), "
        f"then {median:.3f} ms per change (worst {worst:.3f} ms; goal ≤ 50 ms)"
    )


if __name__ == "__main__":
    main()
