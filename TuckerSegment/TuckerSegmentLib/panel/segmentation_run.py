"""One Segment click: export the CT, run the CLI in the background, load what it wrote.

The CLI runs in the panel's warm worker (warm_worker.py) or, without one, in a process of its
own. The request is captured when the run starts (node IDs and settings), so changing the panel's
selection during a run changes nothing; results go to the nodes chosen at the start. The CT
export and the CLI's outputs live in a private run folder that is removed when the run is
loaded, fails, is cancelled, or its owner goes away (scene close, module cleanup, Slicer exit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import run_folder
from .process_controller import ProgressEvent, SegmentProcess, cli_command
from .scene_io import export_volume, load_segmentation
from .warm_worker import WarmWorker, WorkerRun


class RunError(RuntimeError):
    """A run could not start or its results could not be loaded; one line for the user."""


@dataclass(frozen=True)
class RunRequest:
    """Everything a run needs, captured at Segment time."""

    volume_id: str
    output_id: str | None = None
    fast: bool = True
    df: float = 0.3
    device: str = "cpu"
    precision: str = "fp32"
    compare: bool = False
    rank_floor: int = 8
    method: str = "hosvd"
    expert_df: str = ""
    weights_dir: str | None = None
    compressed_models: tuple[str, ...] = ()  # fine-tuned, pruned models (`finetune`, `prune -o`)
    roi_subset: tuple[str, ...] = ()  # TS's --roi_subset (structure_picker.py)
    task: str = "total"  # TS's --task
    statistics: bool = False  # TS's --statistics, shown as a table
    max_params: float | None = None  # "fit my budget": this share of the networks' parameters

    def cli_args(self, ct: Path, result: Path) -> list[str]:
        """The `tucker-segment segment` command line a user would type for this run."""
        from ..engine.fidelity import is_default_df

        args = ["segment", "-i", str(ct), "-o", str(result)]
        if self.max_params is not None:  # planned ranks instead of one DF
            args += ["--max-params", f"{self.max_params * 100:g}%"]
        elif not is_default_df(self.df):  # at the default, each model runs at its own default DF
            args += ["--df", f"{self.df:g}"]
        args += ["--device", self.device, "--precision", self.precision]
        args += ["--rank-floor", str(self.rank_floor), "--method", self.method]
        args += ["--progress", "json"]
        if self.fast:
            args.append("--fast")
        if self.compare:
            args.append("--compare")
        if self.expert_df and self.max_params is None:
            args += ["--expert-df", self.expert_df]
        if self.weights_dir:
            args += ["--weights-dir", self.weights_dir]
        for model in self.compressed_models:
            args += ["--compressed-model", model]
        if self.roi_subset:
            args += ["--roi-subset", *self.roi_subset]
        if self.statistics:
            args.append("--statistics")
        if self.task != "total":
            args += ["--task", self.task]
        return args


@dataclass
class RunResult:
    """What the panel shows after loading: the nodes, the agreement table and a summary."""

    compressed: Any
    original: Any | None = None
    table: Any | None = None
    text: str = ""
    statistics: Any | None = None  # TS's statistics as a table node


class SegmentationRun:
    """A background CLI run for one request, in its own run folder."""

    RESULT = "result.seg.nrrd"

    def __init__(
        self,
        scene: Any,
        request: RunRequest,
        python: str | None = None,
        env: dict[str, str] | None = None,
        temp_root: Path | None = None,
        worker: WarmWorker | None = None,
    ) -> None:
        """Start the run: in ``worker`` when given (warm_worker.py), else in a new process."""
        self.scene = scene
        self.request = request
        volume = scene.GetNodeByID(request.volume_id)
        if volume is None:
            raise RunError("the input volume is no longer in the scene")
        self.volume_name = volume.GetName()
        self.folder: Path | None = run_folder.new_run_folder(temp_root)
        try:
            ct = self.folder / "ct.nii.gz"
            export_volume(scene, volume, ct)
            args = request.cli_args(ct, self.folder / self.RESULT)
            self.process: SegmentProcess | WorkerRun | None = (
                worker.submit(args)
                if worker is not None
                else SegmentProcess(cli_command(args, python), env=env)
            )
        except BaseException:
            self.cleanup()
            raise

    @property
    def latest(self) -> ProgressEvent | None:
        return self.process.latest if self.process else None

    @property
    def log(self) -> list[str]:
        return self.process.state.log if self.process else []

    @property
    def error(self) -> str | None:
        return self.process.state.error if self.process else None

    def poll(self) -> int | None:
        """The CLI's exit code once it has finished, else None."""
        return self.process.poll() if self.process else -1

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout) if self.process else -1

    def cancel(self) -> None:
        """End the CLI and every worker; remove the run folder. Nothing is loaded."""
        if self.process is not None:
            self.process.cancel()
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the run folder (the exported CT is patient data)."""
        run_folder.remove(self.folder)
        self.folder = None

    def load(self, layout_node: Any | None = None) -> RunResult:
        """Load the finished run into the scene, then remove the run folder."""
        try:
            return self._load(layout_node)
        finally:
            self.cleanup()

    def _load(self, layout_node: Any | None) -> RunResult:
        if self.folder is None:
            raise RunError("the run's files were already removed")
        if self.scene.GetNodeByID(self.request.volume_id) is None:
            raise RunError(f"the input volume {self.volume_name!r} was removed during the run")
        return load_run_folder(self.scene, self.folder, self.request, layout_node)


def _result_label(models: list[dict[str, Any]]) -> str:
    """What made the networks, for the result's name: their DFs ("DF 0.3/0.5"), and how a given
    pruned model was pruned ("l2 pruned 50%"): a pruned model's DF (1) would say "original"."""
    dfs = sorted({m["df"] for m in models if "prune" not in m})
    parts = ["DF " + "/".join(f"{df:g}" for df in dfs)] if dfs else []
    parts += dict.fromkeys(
        f"{m['prune']['method']} pruned {m['prune']['ratio']:.0%}" for m in models if "prune" in m
    )
    return " + ".join(parts)


def load_run_folder(
    scene: Any, folder: Path, request: RunRequest, layout_node: Any | None = None
) -> RunResult:
    """Load what `segment` wrote into ``folder`` (result.seg.nrrd, result.json and, with
    --compare, the original's .seg.nrrd and the agreement CSV): nothing is recomputed."""
    from ..pipeline.agreement import read_agreement_csv
    from .comparison_view import show_side_by_side
    from .slicer_nodes import agreement_table_node, statistics_table_node

    volume = scene.GetNodeByID(request.volume_id)
    output = scene.GetNodeByID(request.output_id) if request.output_id else None
    sidecar = json.loads((folder / "result.json").read_text())
    label = _result_label(list(sidecar["models"].values()))
    if request.max_params is not None:  # planned ranks: the budget says what was asked
        label = f"plan {request.max_params:.0%}"
    if request.task != "total":
        label = f"{request.task} {label}"
    compressed = load_segmentation(
        scene,
        folder / SegmentationRun.RESULT,
        f"{volume.GetName()} TuckerSegment {label}",
        volume,
        into=output,
    )
    _same_folder(scene, volume, compressed)
    compressed.GetDisplayNode().RemoveAllViewNodeIDs()  # every view, until a comparison says
    t = sidecar["timings"]
    result = RunResult(compressed)
    text = f"TS pipeline {t['segment_s']:.1f} s (networks {t['segment_network_s']:.1f} s)"
    comparison = sidecar.get("comparison")
    if comparison is not None:
        result.original = load_segmentation(
            scene,
            Path(comparison["original_output"]),
            f"{volume.GetName()} TotalSegmentator"
            + (f" {request.task}" if request.task != "total" else ""),
            volume,
        )
        _same_folder(scene, volume, result.original)
        report = read_agreement_csv(Path(comparison["report"]).read_text())
        result.table = agreement_table_node(scene, report, f"{volume.GetName()} agreement")
        if layout_node is not None:
            show_side_by_side(scene, layout_node, volume, result.original, compressed)
        mean = comparison["summary"].get("mean_dice")
        text += f"; original {t['original_s']:.1f} s (networks {t['original_network_s']:.1f} s)"
        if mean is not None:
            text += f"; mean Dice {mean:.3f}"
    if sidecar.get("statistics"):
        statistics = json.loads(Path(sidecar["statistics"]).read_text())
        result.statistics = statistics_table_node(
            scene, statistics, f"{volume.GetName()} statistics"
        )
    result.text = text
    return result


def _same_folder(scene: Any, volume: Any, node: Any) -> None:
    """Put ``node`` beside ``volume`` in the subject hierarchy (same patient/study)."""
    hierarchy = (
        scene.GetSubjectHierarchyNode() if hasattr(scene, "GetSubjectHierarchyNode") else None
    )
    if hierarchy is None:
        import slicer

        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    volume_item, item = hierarchy.GetItemByDataNode(volume), hierarchy.GetItemByDataNode(node)
    if volume_item and item:  # items exist once Slicer's subject hierarchy plugins run
        hierarchy.SetItemParent(item, hierarchy.GetItemParent(volume_item))


def center_of(result: RunResult, structure: str) -> tuple[float, float, float] | None:
    """World (RAS) center of a structure, for jumping the views to it: from the compressed
    result, or the original's when the compressed result lacks it (the worst rows of the table).
    ``GetSegmentCenterRAS`` already applies the node's parent transform."""
    for node in (result.compressed, result.original):
        if node is None:
            continue
        segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(structure)
        center = node.GetSegmentCenterRAS(segment_id) if segment_id else None
        if center is not None:
            return (center[0], center[1], center[2])
    return None
