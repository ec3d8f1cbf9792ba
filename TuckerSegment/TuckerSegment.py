"""TuckerSegment: TotalSegmentator with Tucker-compressed networks, in 3D Slicer.

A thin window over TuckerSegmentLib.panel: the panel starts the same `tucker-segment` command
line a user runs in a terminal, in a background process (PythonSlicer), reads its JSON progress
lines, and loads the .seg.nrrd and agreement report it writes.

This file must parse and import in any 3D Slicer (Python 3.9 in 5.8) so that an old Slicer shows
a clear message instead of a traceback: no 3.10+ syntax here, and TuckerSegmentLib is imported
only after the version check.
"""

import dataclasses
import importlib
import os
import sys

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 11)  # tensorly 0.10 needs 3.11; torch 2.14 and nnunetv2 2.8 need 3.10
MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS_FILE = os.path.join(MODULE_DIR, "Resources", "requirements.txt")

# The panel's choices (parameterNodeWrapper fills the combo boxes with exactly these texts).
QUALITIES = ["fast (3 mm)", "full (5 × 1.5 mm experts)"]
PRECISIONS = ["fp32", "fp16", "bf16"]
METHODS = ["hosvd", "hooi"]
# TotalSegmentator 2.18's CT tasks that need no licence (a test keeps this equal to TS's registry,
# ts/tasks.py open_ct_tasks); licensed ones run with `tucker-totalsegmentator -l`
TASKS = [
    "total",
    "abdominal_muscles",
    "body",
    "breasts",
    "cerebral_bleed",
    "craniofacial_structures",
    "head_glands_cavities",
    "head_muscles",
    "headneck_bones_vessels",
    "headneck_muscles",
    "hip_implant",
    "kidney_cysts",
    "liver_lesions",
    "liver_segments",
    "liver_vessels",
    "lung_nodules",
    "lung_vessels",
    "lung_vessels_LEGACY",
    "oculomotor_muscles",
    "pleural_pericard_effusion",
    "teeth",
    "total_v3",
    "trunk_cavities",
    "ventricle_parts",
    "vertebrae_body",
    "vertebrae_pp",
    "vertebrae_pp_refined",
]


def versionProblem(slicerVersion, pythonVersion):
    """Why this 3D Slicer cannot run TuckerSegment (one message), or None."""
    have = "{}.{}".format(*tuple(slicerVersion[:2]))
    python = "{}.{}".format(*tuple(pythonVersion[:2]))
    if tuple(slicerVersion[:2]) < MINIMUM_SLICER:
        return (
            f"TuckerSegment needs 3D Slicer {MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]} or newer; "
            f"this is {have}, whose Python {python} is too old for PyTorch 2.14, nnU-Net 2.8 "
            "and tensorly 0.10. Please install a current 3D Slicer."
        )
    if tuple(pythonVersion[:2]) < MINIMUM_PYTHON:
        return (
            f"TuckerSegment needs Python {MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or newer in "
            f"3D Slicer; this one has {python}."
        )
    return None


VERSION_PROBLEM = versionProblem(
    (slicer.app.majorVersion, slicer.app.minorVersion), sys.version_info
)

if VERSION_PROBLEM is None:
    from typing import Annotated

    from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

    if MODULE_DIR not in sys.path:
        sys.path.insert(0, MODULE_DIR)
    from TuckerSegmentLib.engine.fidelity import DEFAULT_DF  # plain Python, no dependencies

    @parameterNodeWrapper
    class TuckerSegmentParameterNode:
        """The panel's settings, saved with the scene; each bound field matches the widget whose
        SlicerParameterName names it (a QComboBox needs a Choice, a slider a range)."""

        inputVolume: vtkMRMLScalarVolumeNode
        outputSegmentation: vtkMRMLSegmentationNode
        task: Annotated[str, Choice(TASKS)] = "total"
        quality: Annotated[str, Choice(QUALITIES)] = QUALITIES[0]
        df: Annotated[float, WithinRange(0.05, 1.0)] = DEFAULT_DF
        precision: Annotated[str, Choice(PRECISIONS)] = "fp32"
        compare: bool = False
        rankFloor: Annotated[int, WithinRange(1, 64)] = 8
        method: Annotated[str, Choice(METHODS)] = "hosvd"
        expertDf: str = ""
        fineTunedModels: str = ""  # `finetune`/`prune`/`compress` outputs, separated by ";"
        statistics: bool = False
        fitBudget: bool = False  # planned ranks for a share of the parameters instead of the DF
        budgetPercent: Annotated[float, WithinRange(1.0, 100.0)] = 15.0
        roiSubset: str = ""  # not bound: the structure picker's checked names, space-separated
        recommendationApplied: bool = False  # not bound: the device recommendation, once


class TuckerSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        super().__init__(parent)
        self.parent.title = "TuckerSegment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["TuckerSegment developers"]
        self.parent.helpText = VERSION_PROBLEM or (
            "Segments 117 structures in CT with TotalSegmentator's own pipeline, using "
            "Tucker-compressed networks that run on weak GPUs and CPUs. DF 1.0 runs the "
            "original networks; 'Compare with original' runs both and lists the agreement."
        )
        self.parent.acknowledgementText = (
            "Based on TotalSegmentator (Wasserthal et al.) and the post-training Tucker "
            "compression of its networks (Radiology: AI, 2025)."
        )


class TuckerSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Panel: inputs, live model size for the chosen DF, device and precision, Segment/Cancel."""

    def __init__(self, parent=None):
        # before the base __init__, which calls setup() itself when there is no parent
        self.logic = None
        self.probe = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onPoll)
        VTKObservationMixin.__init__(self)
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self):
        super().setup()
        if VERSION_PROBLEM is not None:
            label = qt.QLabel(VERSION_PROBLEM)
            label.wordWrap = True
            self.layout.addWidget(label)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/TuckerSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = TuckerSegmentLogic()
        self.ui.dfSlider.valueChanged.connect(self.updateModelSize)
        self.ui.fitBudgetCheckBox.toggled.connect(self.updateModelSize)
        self.ui.budgetSlider.valueChanged.connect(self.updateModelSize)
        self.ui.qualityComboBox.currentIndexChanged.connect(self.updateModelSize)
        self.ui.taskComboBox.currentIndexChanged.connect(self.updateModelSize)
        self.ui.rankFloorSpinBox.valueChanged.connect(self.updateModelSize)
        self.ui.segmentButton.clicked.connect(self.onSegmentButton)
        self.ui.inputVolumeSelector.currentNodeChanged.connect(self.updateButton)
        self.ui.agreementTableView.clicked.connect(self.onTableRowClicked)
        self.ui.structureSearchLineEdit.textChanged.connect(self.onStructureSearch)
        self.ui.structureListWidget.itemChanged.connect(self.onStructureChecked)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.deviceComboBox.addItem("CPU (detecting GPUs...)", "cpu")
        self.initializeParameterNode()
        self.startDeviceProbe()
        self.updateModelSize()
        self.fillStructureList()
        self.updateButton()

    def cleanup(self):
        """Module reload or Slicer exit: end the run and remove its exported CT."""
        self.timer.stop()
        if self.probe is not None:
            self.probe.stop()
            self.probe = None
        if self.logic is not None:
            self.logic.cancelRun()
            self.logic.endWorker()
        self.removeObservers()

    def enter(self):
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        """A closing scene takes the CT and the result nodes with it: cancel the run first."""
        self.logic.cancelRun()
        self.logic.endWorker()
        self.logic.result = None
        self.ui.agreementTableView.setMRMLTableNode(None)
        self.ui.statisticsTableView.setMRMLTableNode(None)
        self.ui.statisticsTableView.visible = False
        self.setRunning(False)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        """Bind the panel to the module's parameter node; pick the first volume as input."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, node):
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified
            )
        self._parameterNode = node
        if node is not None:
            self._parameterNodeGuiTag = node.connectGui(self.ui)
            # a loaded scene copies its values into this node: the picker follows (roiSubset)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.checkStructures()

    def onParameterNodeModified(self, caller=None, event=None):
        self.checkStructures()

    def startDeviceProbe(self):
        """Detect GPUs in a child process (see device_choices.py); results arrive in onPoll."""
        from TuckerSegmentLib.panel.device_choices import DeviceProbe

        if self.probe is not None:
            self.probe.stop()
        self.probe = DeviceProbe(pythonSlicer(), env=childEnvironment())
        self.timer.start()

    def applyDevices(self):
        from TuckerSegmentLib.panel.device_choices import apply_recommendation

        probe, self.probe = self.probe, None
        devices = probe.result()
        self.ui.deviceComboBox.clear()
        for choice in devices.choices:
            self.ui.deviceComboBox.addItem(choice.label, choice.value)
        self.ui.deviceComboBox.currentIndex = devices.recommended
        if self._parameterNode is not None and probe.error is None:
            apply_recommendation(self._parameterNode, devices, PRECISIONS)
        if probe.error:
            self.ui.recommendationLabel.text = (
                f"Only the CPU is offered: {probe.error}. PyTorch and the other packages are installed on "
                "the first Segment."
            )
        else:
            self.ui.recommendationLabel.text = (
                f"Recommended: {devices.precision}, DF {devices.df:g}. {devices.reason}."
            )

    def updateModelSize(self, *_):
        """Parameters, GFLOPs and compression ratio for the chosen DF (precomputed, instant)."""
        if self.ui.qualityComboBox.currentIndex < 0:  # the parameter node refilling the combo
            return
        task = self.ui.taskComboBox.currentText or "total"
        self.ui.structureListWidget.enabled = task == "total"  # TS's --roi_subset: total only
        self.ui.structureSearchLineEdit.enabled = task == "total"
        budget = self.ui.fitBudgetCheckBox.checked
        self.ui.dfSlider.enabled = not budget  # one size control at a time
        self.ui.budgetSlider.enabled = budget
        if task != "total":
            self.ui.modelSizeLabel.text = (
                f"Task {task}: each network it runs is planned for "
                f"{self.ui.budgetSlider.value:.0f}% of its parameters as it loads."
                if budget
                else f"Task {task}: each network it runs is compressed as it loads (at the "
                "slider's default: DF 0.5 for tasks the paper did not study, 0.3 for body)."
            )
            return
        try:
            self.ui.modelSizeLabel.text = self.logic.modelSizeText(
                self.ui.qualityComboBox.currentIndex == 0,
                self.ui.dfSlider.value,
                self.ui.rankFloorSpinBox.value,
                self.ui.budgetSlider.value / 100 if budget else None,
            )
        except Exception:  # torch missing or broken: no size until it is installed
            self.ui.modelSizeLabel.text = ""

    def fillStructureList(self):
        """TS's structures as checkable rows (once TS is installed: else a note, and again after
        the first-use install)."""
        from TuckerSegmentLib.panel.structure_picker import structure_choices

        if self.ui.structureListWidget.count > 0:
            return
        try:
            names = structure_choices()
        except Exception:  # TotalSegmentator is installed on the first Segment
            self.ui.roiSubsetLabel.text = (
                "All structures. The list to choose from appears once TotalSegmentator is "
                "installed (first Segment)."
            )
            return
        self.ui.structureListWidget.blockSignals(True)
        for name in names:
            item = qt.QListWidgetItem(name)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Unchecked)
            self.ui.structureListWidget.addItem(item)
        self.ui.structureListWidget.blockSignals(False)
        self.checkStructures()
        self.onStructureSearch(self.ui.structureSearchLineEdit.text)  # typed before the install

    def checkStructures(self):
        """Check the rows the parameter node names (a loaded scene brings its own subset)."""
        from TuckerSegmentLib.panel.structure_picker import parse_subset, subset_summary

        chosen = parse_subset(self._parameterNode.roiSubset) if self._parameterNode else ()
        widget = self.ui.structureListWidget
        widget.blockSignals(True)
        for row in range(widget.count):
            item = widget.item(row)
            item.setCheckState(qt.Qt.Checked if item.text() in chosen else qt.Qt.Unchecked)
        widget.blockSignals(False)
        if widget.count > 0:
            self.ui.roiSubsetLabel.text = subset_summary(chosen, widget.count)

    def onStructureChecked(self, item):
        """Keep the checked names in the parameter node, in the list's order."""
        from TuckerSegmentLib.panel.structure_picker import format_subset, subset_summary

        if self._parameterNode is None:
            return
        widget = self.ui.structureListWidget
        checked = [
            widget.item(row).text()
            for row in range(widget.count)
            if widget.item(row).checkState() == qt.Qt.Checked
        ]
        self._parameterNode.roiSubset = format_subset(checked)
        self.ui.roiSubsetLabel.text = subset_summary(tuple(checked), widget.count)

    def onStructureSearch(self, text):
        """Show only the rows whose name has every word typed (checked rows stay checked)."""
        from TuckerSegmentLib.panel.structure_picker import matches

        widget = self.ui.structureListWidget
        for row in range(widget.count):
            item = widget.item(row)
            item.setHidden(not matches(item.text(), text))

    def updateButton(self, *_):
        running = self.logic is not None and self.logic.run is not None
        self.ui.segmentButton.text = "Cancel" if running else "Segment"
        self.ui.segmentButton.enabled = (
            running or self.ui.inputVolumeSelector.currentNode() is not None
        )

    def setRunning(self, running):
        """Inputs are locked while a run uses them."""
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.advancedCollapsibleButton.enabled = not running
        if running:
            self.timer.start()
        self.updateButton()

    def onSegmentButton(self):
        if self.logic.run is not None:
            self.logic.cancelRun()
            self.ui.statusLabel.text = "Cancelled."
            self.setRunning(False)
            return
        self.ui.segmentButton.enabled = False  # installing processes events: no second click
        try:
            outcome = self.logic.ensureDependencies()
        finally:
            self.updateButton()
        if outcome.installed_something:
            self.startDeviceProbe()  # GPUs show up once torch is there
            self.updateModelSize()
            self.fillStructureList()  # TS's structure names, now that TS is there
            if outcome.ok:
                self.ui.statusLabel.text = (
                    "Packages installed. Check the device list, then click Segment."
                )
                return
        if not outcome.ok:
            if outcome.message:
                slicer.util.errorDisplay(outcome.message)
            return
        request = self.logic.request(self._parameterNode, self.ui.deviceComboBox.currentData)
        self.ui.logTextEdit.clear()
        self.ui.statisticsTableView.setMRMLTableNode(None)  # the new run's, or none
        self.ui.statisticsTableView.visible = False
        self.ui.progressBar.value = 0
        try:
            self.logic.startRun(request)
        except Exception as error:  # a message, and the panel stays usable
            slicer.util.errorDisplay(f"TuckerSegment could not start: {error}")
            return
        self.setRunning(True)

    def onPoll(self):
        if self.probe is not None and self.probe.done():
            self.applyDevices()
        run = self.logic.run
        if run is None:
            if self.probe is None:
                self.timer.stop()
            return
        event = run.latest
        if event is not None:
            self.ui.progressBar.value = int(100 * event.fraction)
            self.ui.statusLabel.text = f"{event.stage}: {event.message}"
        code = run.poll()
        if code is None:
            return
        self.ui.logTextEdit.setPlainText("\n".join(run.log))
        try:
            if code == 0:
                self.ui.statusLabel.text = "Loading the results..."
                slicer.app.processEvents()
                try:
                    result = self.logic.loadRun()
                except Exception as error:  # a message, and the panel stays usable
                    slicer.util.errorDisplay(f"The results could not be loaded: {error}")
                    self.ui.statusLabel.text = "Failed."
                else:
                    self.ui.timingsLabel.text = result.text
                    self.ui.agreementTableView.setMRMLTableNode(result.table)
                    self.ui.statisticsTableView.setMRMLTableNode(result.statistics)
                    self.ui.statisticsTableView.visible = result.statistics is not None
                    self.ui.statusLabel.text = "Done."
            else:
                slicer.util.errorDisplay(f"TuckerSegment failed: {run.error}")
                self.logic.cancelRun()
        finally:
            self.setRunning(False)

    def onTableRowClicked(self, index):
        source = self.ui.agreementTableView.sortFilterProxyModel().mapToSource(index)
        self.logic.centerOnStructure(source.row())


class TuckerSegmentLogic(ScriptedLoadableModuleLogic):
    """Owns the background run and the loaded result; the work is in TuckerSegmentLib.panel."""

    def __init__(self):
        super().__init__()
        from TuckerSegmentLib.panel import run_folder

        self.run = None
        self.worker = None  # the warm worker: started by the first run, kept for the next
        self.result = None
        self.sizes = None
        run_folder.sweep_stale_runs()  # CTs left behind by a Slicer that crashed or was killed

    def getParameterNode(self):
        return TuckerSegmentParameterNode(super().getParameterNode())

    def modelSizeText(self, fast, df, rankFloor, budgetShare=None):
        from TuckerSegmentLib.panel.model_size import ModelSizes  # needs torch

        if self.sizes is None:
            self.sizes = ModelSizes()
        if budgetShare is not None:
            return self.sizes.budget_text(fast, budgetShare)
        return self.sizes.text(fast, df, rankFloor)

    def ensureDependencies(self):
        """Install the pinned packages on first use (see TuckerSegmentLib/panel/installer.py)."""
        from TuckerSegmentLib.panel.install_plan import read_pins
        from TuckerSegmentLib.panel.installer import SlicerInstallSeams, install

        seams = SlicerInstallSeams(
            pip_install=slicer.util.pip_install,
            pip_ensure=pipEnsure(),
            torch_logic=torchLogic,
            # in --testing mode confirmOkCancelDisplay answers False without asking
            confirm=lambda text: (
                slicer.app.testingEnabled() or slicer.util.confirmOkCancelDisplay(text)
            ),
        )
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            return install(read_pins(REQUIREMENTS_FILE), seams)
        finally:
            qt.QApplication.restoreOverrideCursor()

    def request(self, parameters, device):
        """The run's settings, captured now: later changes in the panel do not affect it."""
        from TuckerSegmentLib.panel.segmentation_run import RunRequest
        from TuckerSegmentLib.panel.structure_picker import parse_subset
        from TuckerSegmentLib.ts.tasks import has_fast_mode

        output = parameters.outputSegmentation
        total = parameters.task == "total"
        return RunRequest(
            volume_id=parameters.inputVolume.GetID(),
            output_id=output.GetID() if output else None,
            task=parameters.task,
            # fast for a task only where TS has a fast mode (body); else its own resolution
            fast=parameters.quality == QUALITIES[0] and (total or has_fast_mode(parameters.task)),
            df=parameters.df,
            device=device or "cpu",
            precision=parameters.precision,
            compare=parameters.compare,
            rank_floor=parameters.rankFloor,
            method=parameters.method,
            expert_df=parameters.expertDf.strip(),
            compressed_models=tuple(
                p.strip() for p in parameters.fineTunedModels.split(";") if p.strip()
            ),
            roi_subset=parse_subset(parameters.roiSubset) if total else (),
            statistics=parameters.statistics,
            max_params=parameters.budgetPercent / 100 if parameters.fitBudget else None,
        )

    def startRun(self, request):
        from TuckerSegmentLib.panel.segmentation_run import SegmentationRun
        from TuckerSegmentLib.panel.warm_worker import WarmWorker

        self.result = None
        if self.worker is None or not self.worker.alive:  # first run, or after Cancel
            self.worker = WarmWorker(python=pythonSlicer(), env=childEnvironment())
        self.run = SegmentationRun(slicer.mrmlScene, request, worker=self.worker)
        return self.run

    def endWorker(self):
        """Scene close, module cleanup, Slicer exit: the warm worker ends with its owner."""
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.close()

    def loadRun(self):
        run, self.run = self.run, None
        layoutNode = slicer.app.layoutManager().layoutLogic().GetLayoutNode()
        self.result = run.load(layoutNode if run.request.compare else None)
        slicer.util.resetSliceViews()
        return self.result

    def cancelRun(self):
        run, self.run = self.run, None
        if run is not None:
            run.cancel()

    def centerOnStructure(self, viewRow):
        from TuckerSegmentLib.panel.segmentation_run import center_of
        from TuckerSegmentLib.panel.slicer_nodes import structure_at

        if self.result is None or self.result.table is None:
            return
        name = structure_at(self.result.table, viewRow)
        center = center_of(self.result, name) if name else None
        if center is not None:
            slicer.modules.markups.logic().JumpSlicesToLocation(*center, True)


def pythonSlicer():
    """PythonSlicer runs Python scripts with Slicer's Python environment."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable


def childEnvironment():
    """PythonSlicer children must find TuckerSegmentLib: Slicer puts a module's folder on its own
    sys.path only, and on PYTHONPATH only for Extensions Manager installs."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [MODULE_DIR, os.environ.get("PYTHONPATH")]))}


def pipEnsure():
    """slicer.packaging.pip_ensure (3D Slicer 5.12+; it is not imported by `import slicer`)."""
    try:
        packaging = importlib.import_module("slicer.packaging")
    except ImportError:
        return None

    def ensure(requirements, constraints):
        return packaging.pip_ensure(
            requirements,
            constraints=constraints,
            prompt_install=False,  # the installer asked already
            requester="TuckerSegment",
            skip_in_testing=False,
        )

    return ensure


def torchLogic():
    """The PyTorch extension's logic; ImportError when that extension is not installed."""
    import PyTorchUtils

    return PyTorchUtils.PyTorchUtilsLogic()


class TuckerSegmentTest(ScriptedLoadableModuleTest):
    """The real flow inside Slicer on the project's test models (for anyone with Slicer and a
    source checkout): fails, never passes silently, when it cannot run."""

    def runTest(self):
        self.setUp()
        self.test_segment_phantom_and_compare()

    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_segment_phantom_and_compare(self):
        from TuckerSegmentLib.demo.demo import demo_models_dir
        from TuckerSegmentLib.demo.phantom import make_phantom

        models = demo_models_dir()
        self.assertTrue(
            models.is_dir(),
            f"TuckerSegment's test models are not at {models}: the self-test needs a source "
            "install (TuckerSegmentLib/demo/models) or TUCKERSEGMENT_DEMO_MODELS",
        )
        logic = TuckerSegmentLogic()
        self.assertTrue(logic.ensureDependencies().ok, "dependencies are not installed")
        phantom = make_phantom(7, spacing=3.0)
        volume = slicer.util.addVolumeFromArray(
            phantom.ct.transpose(2, 1, 0), ijkToRAS=phantom.affine, name="Phantom CT"
        )
        request = logic.request(self._parameters(volume), "cpu")
        request = dataclasses.replace(request, weights_dir=str(models))
        try:
            for df in (0.5, 0.3):  # the second run goes to the warm worker
                run = logic.startRun(dataclasses.replace(request, df=df))
                try:
                    self.assertEqual(run.wait(timeout=900), 0, run.error)
                finally:
                    if run.poll() != 0:
                        logic.cancelRun()  # never leave the CLI or the exported CT behind
                result = logic.loadRun()
                self.assertGreater(result.compressed.GetSegmentation().GetNumberOfSegments(), 10)
                self.assertIsNotNone(result.table)
                self.assertIsNone(run.folder, "the exported CT must be removed")
        finally:
            worker = logic.worker
            logic.endWorker()
        self.assertFalse(worker.alive, "the warm worker must end with its owner")
        self.delayDisplay("TuckerSegment test passed")

    def _parameters(self, volume):
        parameters = TuckerSegmentLogic().getParameterNode()
        parameters.inputVolume = volume
        parameters.quality = QUALITIES[0]
        parameters.df = 0.5
        parameters.precision = "fp32"
        parameters.compare = True
        parameters.rankFloor = 4
        return parameters
