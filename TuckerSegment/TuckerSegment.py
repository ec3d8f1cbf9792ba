"""TuckerSegment: TotalSegmentator with Tucker-compressed networks, in 3D Slicer.

A thin window over TuckerSegmentLib: the panel starts the same `tucker-segment` command line a
user runs in a terminal, in a background process (PythonSlicer), reads its JSON progress lines,
and loads the result into segmentation nodes.
"""

import os
import sys
import tempfile
from pathlib import Path

import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:  # Slicer 5.2+: the panel's settings live in a parameter node, saved with the scene
    from typing import Annotated

    from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
    from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
except ImportError:  # older Slicer: the widgets alone hold the settings
    parameterNodeWrapper = None

sys.path.insert(0, os.path.dirname(__file__))

# Versions tested with this release (see .ci/constraints.txt); torch comes from SlicerPyTorch.
TORCH_REQUIREMENT = ">=2.14,<2.15"
TORCHVISION_REQUIREMENT = ">=0.29,<0.30"
REQUIREMENTS = [
    "TotalSegmentator==2.18.0",
    "nnunetv2==2.8.1",
    "tensorly==0.10.0",
    "SimpleITK==2.5.7",
    "slicerio==1.4.0",
]


class TuckerSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        super().__init__(parent)
        self.parent.title = "TuckerSegment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["TuckerSegment developers"]
        self.parent.helpText = (
            "Segments 117 structures in CT with TotalSegmentator's own pipeline, using "
            "Tucker-compressed networks that run on weak GPUs and CPUs. DF 1.0 runs the "
            "original networks; 'Compare with original' runs both and lists the agreement."
        )
        self.parent.acknowledgementText = (
            "Based on TotalSegmentator (Wasserthal et al.) and the post-training Tucker "
            "compression of its networks (Radiology: AI, 2025)."
        )


if parameterNodeWrapper is not None:

    @parameterNodeWrapper
    class TuckerSegmentParameterNode:
        """The panel's settings; each is bound to the widget whose SlicerParameterName matches."""

        inputVolume: vtkMRMLScalarVolumeNode
        outputSegmentation: vtkMRMLSegmentationNode
        quality: str = "fast (3 mm)"
        df: Annotated[float, WithinRange(0.05, 1.0)] = 0.3
        precision: str = "fp32"
        compare: bool = False
        rankFloor: Annotated[int, WithinRange(1, 64)] = 8
        method: str = "hosvd"
        expertDf: str = ""


class TuckerSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Panel: inputs, live model size for the chosen DF, device and precision, Segment/Cancel."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.process = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onPoll)

    def setup(self):
        super().setup()
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/TuckerSegment.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = TuckerSegmentLogic()
        self.ui.dfSlider.valueChanged.connect(self.updateModelSize)
        self.ui.qualityComboBox.currentIndexChanged.connect(self.updateModelSize)
        self.ui.rankFloorSpinBox.valueChanged.connect(self.updateModelSize)
        self.ui.segmentButton.clicked.connect(self.onSegmentButton)
        self.ui.inputVolumeSelector.currentNodeChanged.connect(self.updateButton)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.fillDevices()
        self.initializeParameterNode()
        self.updateModelSize()
        self.updateButton()

    def cleanup(self):
        self.timer.stop()
        if self.process is not None:
            self.process.cancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        """Bind the panel to the module's parameter node; pick the first volume as input."""
        if parameterNodeWrapper is None or self.logic is None:
            return
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, node):
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        self._parameterNode = node
        if node is not None:
            self._parameterNodeGuiTag = node.connectGui(self.ui)

    def fillDevices(self):
        """Device combo from GPU detection, the recommended choice marked and preselected."""
        try:
            from TuckerSegmentLib.devices import detect, recommend
        except ImportError:
            self.ui.deviceComboBox.addItem("cpu", "cpu")
            self.ui.recommendationLabel.text = "Dependencies are installed on first Segment."
            return
        report = detect()
        rec = recommend(report)
        entries = [
            (
                "cuda",
                f"GPU {g.index}: {g.name}, {g.memory_gib} GiB"
                + (", tensor cores" if g.tensor_cores else ""),
            )
            for g in report.gpus
        ]
        if report.mps:
            entries.append(("mps", "Apple GPU (MPS)"))
        entries.append(("cpu", f"CPU: {report.cpu.model}, {report.cpu.cores} cores"))
        for device, text in entries:
            marked = f"{text} (recommended)" if device == rec.device else text
            self.ui.deviceComboBox.addItem(marked, device)
        self.ui.deviceComboBox.currentIndex = [d for d, _ in entries].index(rec.device)
        self.ui.precisionComboBox.currentText = rec.precision
        self.ui.dfSlider.value = rec.df
        self.ui.recommendationLabel.text = (
            f"Recommended: {rec.precision}, DF {rec.df:g}. {rec.reason}."
        )

    def updateModelSize(self, *_):
        """Parameters, GFLOPs and compression ratio for the chosen DF, before any run."""
        try:
            self.ui.modelSizeLabel.text = self.logic.modelSizeText(
                self.ui.qualityComboBox.currentIndex == 0,
                self.ui.dfSlider.value,
                self.ui.rankFloorSpinBox.value,
            )
        except ImportError:
            self.ui.modelSizeLabel.text = ""

    def updateButton(self, *_):
        running = self.process is not None
        self.ui.segmentButton.text = "Cancel" if running else "Segment"
        self.ui.segmentButton.enabled = (
            running or self.ui.inputVolumeSelector.currentNode() is not None
        )

    def onSegmentButton(self):
        if self.process is not None:
            self.process.cancel()
            self.ui.statusLabel.text = "Cancelled."
            self.finish(load=False)
            return
        if not self.logic.ensureDependencies():
            return
        volume = self.ui.inputVolumeSelector.currentNode()
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        self.process = self.logic.start(
            volume,
            fast=self.ui.qualityComboBox.currentIndex == 0,
            df=self.ui.dfSlider.value,
            device=self.ui.deviceComboBox.currentData,
            precision=self.ui.precisionComboBox.currentText,
            compare=self.ui.compareCheckBox.checked,
            rank_floor=self.ui.rankFloorSpinBox.value,
            method=self.ui.methodComboBox.currentText,
            expert_df=self.ui.expertDfLineEdit.text.strip(),
        )
        self.timer.start()
        self.updateButton()

    def onPoll(self):
        event = self.process.latest
        if event is not None:
            self.ui.progressBar.value = int(100 * event.fraction)
            self.ui.statusLabel.text = f"{event.stage}: {event.message}"
        code = self.process.poll()
        if code is None:
            return
        self.ui.logTextEdit.setPlainText("\n".join(self.process.state.log))
        if code == 0:
            self.finish(load=True)
        else:
            slicer.util.errorDisplay(f"TuckerSegment failed: {self.process.state.error}")
            self.finish(load=False)

    def finish(self, load):
        self.timer.stop()
        process, self.process = self.process, None
        try:
            if load and process is not None:
                summary = self.logic.loadResults(
                    self.ui.inputVolumeSelector.currentNode(),
                    self.ui.outputSegmentationSelector.currentNode(),
                )
                self.ui.timingsLabel.text = summary["text"]
                if summary.get("table") is not None:
                    self.ui.agreementTableView.setMRMLTableNode(summary["table"])
                    self.ui.agreementTableView.clicked.connect(self.onTableRowClicked)
        finally:
            self.logic.cleanupRun()
            self.updateButton()

    def onTableRowClicked(self, index):
        self.logic.centerOnStructure(index.row())


class TuckerSegmentLogic(ScriptedLoadableModuleLogic):
    """Starts the CLI in the background and loads what it writes."""

    def __init__(self):
        super().__init__()
        self.run_dir = None
        self.nodes = {}

    def getParameterNode(self):
        return TuckerSegmentParameterNode(super().getParameterNode())

    def modelSizeText(self, fast, df, rank_floor):
        from TuckerSegmentLib.compress import CompressionSettings
        from TuckerSegmentLib.stats import compressed_count
        from TuckerSegmentLib.ts_architectures import builtin_spec

        specs = (
            [builtin_spec("3mm")]
            if fast
            else [
                builtin_spec("1.5mm", e)
                for e in ("organs", "vertebrae", "cardiac", "muscles", "ribs")
            ]
        )
        params = gflops = params0 = gflops0 = 0.0
        for spec in specs:
            original, _ = compressed_count(spec, CompressionSettings(df=1.0, rank_floor=rank_floor))
            count, _ = compressed_count(spec, CompressionSettings(df=df, rank_floor=rank_floor))
            params, gflops = params + count.params, gflops + count.gflops
            params0, gflops0 = params0 + original.params, gflops0 + original.gflops
        return (
            f"{params / 1e6:.2f} M parameters ({params0 / params:.1f}× fewer), "
            f"{gflops:.0f} GFLOPs per patch ({gflops0 / gflops:.1f}× fewer)"
        )

    def ensureDependencies(self):
        """Install the tested Python packages on first use, after asking."""
        try:
            import nnunetv2  # noqa: F401
            import tensorly  # noqa: F401
            import totalsegmentator  # noqa: F401

            return True
        except ImportError:
            pass
        if not slicer.util.confirmOkCancelDisplay(
            "TuckerSegment needs PyTorch, TotalSegmentator, nnU-Net and tensorly. Install now? "
            "(several GB; needs an internet connection once)"
        ):
            return False
        import PyTorchUtils

        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if not torch_logic.torchInstalled():
            # the CUDA build that fits this GPU, within the release series CI tests
            torch_logic.installTorch(
                askConfirmation=False,
                torchVersionRequirement=TORCH_REQUIREMENT,
                torchvisionVersionRequirement=TORCHVISION_REQUIREMENT,
            )
        if hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure"):
            slicer.packaging.pip_ensure(REQUIREMENTS)
        else:
            slicer.util.pip_install(" ".join(REQUIREMENTS))
        return True

    def start(self, volume, fast, df, device, precision, compare, rank_floor, method, expert_df):
        from TuckerSegmentLib.process_controller import SegmentProcess, cli_command

        self.run_dir = Path(tempfile.mkdtemp(prefix="TuckerSegment-"))
        ct = self.run_dir / "ct.nii.gz"
        slicer.util.exportNode(volume, str(ct))
        args = [
            "segment",
            "-i",
            str(ct),
            "-o",
            str(self.run_dir / "result.nii.gz"),
            "--df",
            f"{df:g}",
            "--device",
            device,
            "--precision",
            precision,
            "--rank-floor",
            str(rank_floor),
            "--method",
            method,
            "--progress",
            "json",
        ]
        if fast:
            args.append("--fast")
        if compare:
            args.append("--compare")
        if expert_df:
            args += ["--expert-df", expert_df]
        python = shutil_which_python_slicer()
        env = {
            "PYTHONPATH": os.pathsep.join(
                [os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]
            )
        }
        return SegmentProcess(cli_command(args, python), env=env)

    def loadResults(self, volume, output_node):
        import json

        from TuckerSegmentLib.compare_files import compare_files
        from TuckerSegmentLib.slicer_nodes import agreement_table_node, load_result

        scene = slicer.mrmlScene
        sidecar = json.loads((self.run_dir / "result.json").read_text())
        name = (
            f"{volume.GetName()} TuckerSegment DF {next(iter(sidecar['models'].values()))['df']:g}"
        )
        node = load_result(scene, self.run_dir / "result.nii.gz", name, volume)
        if output_node is not None:
            output_node.Copy(node)
            scene.RemoveNode(node)
            node = output_node
        self.nodes = {"compressed": node}
        shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
        shNode.SetItemParent(
            shNode.GetItemByDataNode(node), shNode.GetItemParent(shNode.GetItemByDataNode(volume))
        )
        t = sidecar["timings"]
        text = f"TS pipeline {t['segment_s']:.1f} s (networks {t['segment_network_s']:.1f} s)"
        table = None
        original = self.run_dir / "result.original.nii.gz"
        if original.exists():
            self.nodes["original"] = load_result(
                scene, original, f"{volume.GetName()} TotalSegmentator", volume
            )
            report = compare_files(original, self.run_dir / "result.nii.gz")
            table = agreement_table_node(scene, report)
            self.report = report
            self.showSideBySide(volume)
            text += (
                f"; original {t['original_s']:.1f} s (networks {t['original_network_s']:.1f} s); "
                f"mean Dice {report.summary['mean_dice']:.3f}"
            )
        return {"text": text, "table": table}

    def showSideBySide(self, volume):
        """Two linked slice views: original on the left, compressed on the right."""
        layout_manager = slicer.app.layoutManager()
        layout_manager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for view_name, key in (("Red", "original"), ("Yellow", "compressed")):
            widget = layout_manager.sliceWidget(view_name)
            if widget is None:
                continue
            composite = widget.mrmlSliceCompositeNode()
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetLinkedControl(True)
            node = self.nodes.get(key)
            if node is not None:
                node.GetDisplayNode().AddViewNodeID(widget.mrmlSliceNode().GetID())

    def centerOnStructure(self, row):
        structures = sorted(self.report.present(), key=lambda s: (s.dice, s.name))
        if row >= len(structures):
            return
        node = self.nodes["compressed"]
        segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(structures[row].name)
        if segment_id:
            center = node.GetSegmentCenterRAS(segment_id)
            slicer.modules.markups.logic().JumpSlicesToLocation(*center, True)

    def cleanupRun(self):
        import shutil

        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None


def shutil_which_python_slicer():
    """PythonSlicer runs Python scripts with Slicer's Python environment."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable


class TuckerSegmentTest(ScriptedLoadableModuleTest):
    """Runs the real flow inside Slicer on the project's test models (for anyone with Slicer)."""

    def runTest(self):
        self.setUp()
        self.test_segment_phantom_and_compare()

    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_segment_phantom_and_compare(self):
        import nibabel as nib
        from TuckerSegmentLib.demo import demo_models_dir
        from TuckerSegmentLib.phantom import make_phantom

        models = demo_models_dir()
        if not models.is_dir():
            self.delayDisplay("Test models not found; run from a source checkout")
            return
        folder = Path(tempfile.mkdtemp())
        ct, _ = make_phantom(7, spacing=3.0).to_nifti()
        nib.save(ct, str(folder / "ct.nii.gz"))
        volume = slicer.util.loadVolume(str(folder / "ct.nii.gz"))
        logic = TuckerSegmentLogic()
        os.environ["TOTALSEG_WEIGHTS_PATH"] = str(models)
        process = logic.start(
            volume,
            fast=True,
            df=0.5,
            device="cpu",
            precision="fp32",
            compare=True,
            rank_floor=4,
            method="hosvd",
            expert_df="",
        )
        self.assertEqual(process.wait(timeout=900), 0, process.state.error)
        summary = logic.loadResults(volume, None)
        node = logic.nodes["compressed"]
        self.assertGreater(node.GetSegmentation().GetNumberOfSegments(), 10)
        self.assertIsNotNone(summary["table"])
        logic.cleanupRun()
        self.delayDisplay("TuckerSegment test passed")
