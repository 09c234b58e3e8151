"""OsteoBMD: lumbar (L1-L4) bone mineral density from routine CT, inside 3D Slicer.

This file only wires things together. The measurement is the `osteobmd` package's command
line, run in a background process with Slicer's own Python (OsteoBMDLib.worker); the
results are read into the scene by OsteoBMDLib.results_to_scene; masks, ground truth and
the case list live in OsteoBMDLib too (Qt-free, tested outside Slicer with slicer-core).
"""

import enum
import logging
import os
import shutil
import tempfile
import time
from typing import List, Optional

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
VERTEBRAE = ("L1", "L2", "L3", "L4")
CLASS_COLORS = {"osteoporosis": "#c0392b", "osteopenia": "#e67e22", "normal": "#27ae60"}


class OsteoBMDError(Exception):
    """An error the reader can act on; its text is shown as is."""


#
# OsteoBMD
#


class OsteoBMD(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("OsteoBMD")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["OsteoBMD contributors"]
        self.parent.helpText = _(
            "Measures the trabecular bone mineral density (BMD) of the lumbar vertebrae L1-L4 on a CT, "
            "fully automatically: press Apply, check the outlines on the sagittal view, correct a mask "
            "where needed and recompute, then save the case as ground truth. "
            'See <a href="https://github.com/osteobmd/OsteoBMD">the documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "Method after a deep-learning study of R2U-Net vertebra segmentation and DenseNet-121 BMD "
            "regression on CT. The bundled sample CT comes from the TotalSegmentator example data "
            "(Apache License 2.0)."
        )


#
# Parameters
#


class Device(enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self) -> str:
        return {
            Device.AUTO: _("Automatic (GPU if available)"),
            Device.CPU: _("CPU"),
            Device.CUDA: _("GPU (CUDA)"),
        }[self]


@parameterNodeWrapper
class OsteoBMDParameterNode:
    """inputVolume: the CT; device; meanL1..meanL4: the vertebrae whose BMD makes the mean."""

    inputVolume: vtkMRMLScalarVolumeNode
    device: Device = Device.AUTO
    meanL1: bool = True
    meanL2: bool = True
    meanL3: bool = True
    meanL4: bool = False
    outputDirectory: str = ""


#
# OsteoBMDWidget
#


class OsteoBMDWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._worker = None
        self._workerKind = ""
        self._pollTimer = None
        self._observedSegmentation = None

    # ---------------------------------------------------------------- set-up

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/OsteoBMD.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = OsteoBMDLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.editMasksButton.connect("clicked(bool)", self.onEditMasks)
        self.ui.recomputeButton.connect("clicked(bool)", self.onRecompute)
        self.ui.saveGroundTruthButton.connect("clicked(bool)", self.onSaveGroundTruth)
        self.ui.openCaseFolderButton.connect("clicked(bool)", self.onOpenCaseFolder)
        self.ui.openCaseCsvButton.connect("clicked(bool)", self.onOpenCaseCsv)
        self.ui.previousCaseButton.connect("clicked(bool)", self.onPreviousCase)
        self.ui.nextCaseButton.connect("clicked(bool)", self.onNextCase)
        self.ui.caseComboBox.connect("activated(int)", self.onCaseChosen)
        self.ui.resultsTableView.connect("clicked(QModelIndex)", self.onTableClicked)

        self.ui.groundTruthDirectoryButton.directory = self.logic.defaultGroundTruthDirectory()
        self.ui.progressBar.hide()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(200)
        self._pollTimer.connect("timeout()", self.onPollWorker)

        self.initializeParameterNode()
        self._updateButtons()

    def cleanup(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.logic.forgetResults()
        self._showResult(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[OsteoBMDParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets carry the Qt property "SlicerParameterName" (see the .ui file).
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    # ---------------------------------------------------------------- state of the buttons

    def _running(self) -> bool:
        return self._worker is not None and not self._worker.status.done

    def _updateButtons(self, caller=None, event=None) -> None:
        running = self._running()
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        hasResults = self.logic is not None and self.logic.resultNodes is not None
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.toolTip = (
            _("Stop the measurement") if running
            else _("Measure L1-L4 BMD on the selected CT") if hasInput else _("Select a CT volume first")
        )
        self.ui.applyButton.enabled = running or hasInput
        for button in (self.ui.editMasksButton, self.ui.recomputeButton, self.ui.saveGroundTruthButton):
            button.enabled = hasResults and not running
        caseList = self.logic.caseList if self.logic else None
        self.ui.previousCaseButton.enabled = bool(caseList and caseList.has_previous and not running)
        self.ui.nextCaseButton.enabled = bool(caseList and caseList.has_next and not running)
        self.ui.caseComboBox.enabled = bool(caseList and not running)

    def _showError(self, message: str, err: Exception, details: str = "") -> None:
        """A clear message box (the log, not a traceback, under 'details'); tracebacks go to the log."""
        logging.error("%s %s", message, err, exc_info=not isinstance(err, OsteoBMDError))
        if slicer.app.testingEnabled():
            raise err
        extra = {"detailedText": details} if details else {}
        slicer.util.errorDisplay(f"{message}\n\n{err}", windowTitle=_("OsteoBMD"), **extra)

    # ---------------------------------------------------------------- Apply / Cancel

    def meanVertebrae(self) -> List[str]:
        p = self._parameterNode
        return [v for v, on in zip(VERTEBRAE, (p.meanL1, p.meanL2, p.meanL3, p.meanL4)) if on]

    def onApplyButton(self) -> None:
        if self._running():
            self._worker.cancel()
            self.ui.statusLabel.text = _("Cancelled.")
            return
        try:
            if not self.meanVertebrae():
                raise OsteoBMDError(_("Tick at least one vertebra for the mean BMD."))
            if self.logic.hasReaderMasks() and not slicer.app.testingEnabled():
                if not slicer.util.confirmOkCancelDisplay(
                    _("Apply segments the CT again and replaces the masks you edited with the network's. "
                      "Use Recompute BMD to measure your masks. Replace them?"),
                    _("Replace edited masks"),
                ):
                    return
            self._ensureDependencies()
            self._saveEditsOfCurrentCase()
            worker = self.logic.startMeasurement(
                self._parameterNode.inputVolume, device=self._parameterNode.device.value,
                vertebrae=self.meanVertebrae(), caseId=self._currentCaseId(),
            )
            self._startPolling(worker, "auto")
        except Exception as err:
            self._showError(_("The measurement could not be started."), err)

    def _ensureDependencies(self) -> None:
        missing = self.logic.missingRequirements()
        if not missing:
            return
        if slicer.app.testingEnabled():
            raise OsteoBMDError(_("Python packages are missing: {names}.").format(names=", ".join(missing)))
        if not slicer.util.confirmOkCancelDisplay(
            _("OsteoBMD needs Python packages that are not installed yet. Installing them needs a network "
              "connection and may take several minutes. Install now?"),
            _("Install Python packages"),
            detailedText=_("Packages to install: {names}").format(names=", ".join(missing)),
        ):
            raise OsteoBMDError(_("The packages OsteoBMD needs were not installed; nothing was measured."))
        self.ui.statusLabel.text = _("Installing Python packages...")
        slicer.app.processEvents()
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            self.logic.installRequirements()
        finally:
            slicer.app.restoreOverrideCursor()
        self.ui.statusLabel.text = _("Python packages installed.")

    def _startPolling(self, worker, kind: str) -> None:
        self._worker = worker
        self._workerKind = kind
        self.ui.progressBar.value = 0
        self.ui.progressBar.show()
        self.ui.statusLabel.text = _("Starting...")
        self.ui.logTextEdit.clear()
        self._pollTimer.start()
        self._updateButtons()

    def onPollWorker(self) -> None:
        if self._worker is None:
            self._pollTimer.stop()
            return
        status = self._worker.poll()
        self.ui.progressBar.value = int(round(100 * status.fraction))
        if status.stage:
            self.ui.progressBar.format = f"%p%  {status.stage}"
        if status.message:
            self.ui.statusLabel.text = status.message
        for line in list(self._worker.log):
            self.ui.logTextEdit.appendPlainText(line)
        self._worker.log.clear()
        if not status.done:
            return
        self._pollTimer.stop()
        worker, kind = self._worker, self._workerKind
        self._worker = None
        self.ui.progressBar.hide()
        self._updateButtons()
        self._onWorkerDone(worker, kind)

    def _onWorkerDone(self, worker, kind: str) -> None:
        from OsteoBMDLib import worker as workerlib

        status = worker.status
        if status.state == workerlib.CANCELLED:
            self.logic.discardRun(worker)
            self.ui.statusLabel.text = _("Cancelled; nothing was changed.")
            return
        if status.state == workerlib.FAILED and not (status.returncode == workerlib.EXIT_NO_VALID and worker.has_results):
            self.logic.discardRun(worker)
            self.ui.statusLabel.text = _("Failed.")
            error = status.error[len("osteobmd: "):] if status.error.startswith("osteobmd: ") else status.error
            self._showError(_("The measurement failed."), OsteoBMDError(error),
                            details=self.ui.logTextEdit.toPlainText())
            return
        try:
            outDir = self.logic.commitRun(worker)
            self.logic.loadMeasurement(outDir, corrected=(kind == "corrected"))
            self._showResult(self.logic.resultNodes)
            self._onCaseStatusChanged()
            self.ui.statusLabel.text = (
                _("Done.") if status.state == workerlib.FINISHED
                else _("Done: no vertebra passed the checks (see the reasons).")
            )
        except Exception as err:
            self._showError(_("The results could not be loaded."), err)

    # ---------------------------------------------------------------- showing results

    def _showResult(self, nodes) -> None:
        self._observeSegmentation(nodes.segmentation if nodes else None)
        if nodes is None:
            self.ui.resultsTableView.setMRMLTableNode(None)
            self.ui.meanBmdLabel.text = ""
            self.ui.classificationLabel.text = ""
            self.ui.messagesLabel.text = ""
            self.ui.patchesImageLabel.clear()
            self._updateButtons()
            return
        result = nodes.result
        self.ui.resultsTableView.setMRMLTableNode(nodes.table)
        names = {"osteoporosis": _("Osteoporosis"), "osteopenia": _("Osteopenia"), "normal": _("Normal")}
        if result.mean_bmd_mg_cm3 is not None:
            color = CLASS_COLORS.get(result.classification, "#7f8c8d")
            self.ui.meanBmdLabel.text = _("{bmd:.0f} mg/cm³").format(bmd=result.mean_bmd_mg_cm3)
            self.ui.meanBmdLabel.styleSheet = f"font-size: 22pt; font-weight: bold; color: {color};"
            self.ui.classificationLabel.text = names.get(result.classification, result.classification or "")
            self.ui.classificationLabel.styleSheet = f"font-size: 16pt; font-weight: bold; color: {color};"
        else:
            self.ui.meanBmdLabel.text = _("No valid measurement")
            self.ui.meanBmdLabel.styleSheet = "font-size: 16pt; font-weight: bold; color: #7f8c8d;"
            self.ui.classificationLabel.text = ""
        lines = [f"{v.name}: {'; '.join(v.reasons)}" for v in result.vertebrae if v.reasons] + list(result.messages)
        self.ui.messagesLabel.text = "\n".join(lines)
        pixmap = qt.QPixmap(os.path.join(nodes.output_dir, "patches.png"))
        if pixmap.isNull():
            self.ui.patchesImageLabel.clear()
        else:
            self.ui.patchesImageLabel.setPixmap(pixmap.scaledToWidth(320, qt.Qt.SmoothTransformation))
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
        slicer.util.setSliceViewerLayers(background=nodes.ct, fit=True)
        # After fitting: the segmentation outlined, the patches shown, the sagittal view
        # through the spine and every view centred on it.
        self.logic.showInViews()
        self._updateButtons()

    def onTableClicked(self, index) -> None:
        if self.logic.resultNodes is None:
            return
        name = index.sibling(index.row(), 0).data()
        self.logic.jumpToVertebra(name)

    # ---------------------------------------------------------------- correction loop

    def _observeSegmentation(self, segmentationNode) -> None:
        event = getattr(slicer.vtkSegmentation, "SourceRepresentationModified", None) or getattr(
            slicer.vtkSegmentation, "MasterRepresentationModified"
        )
        if self._observedSegmentation is not None:
            self.removeObserver(self._observedSegmentation, event, self._onMasksEdited)
        self._observedSegmentation = segmentationNode.GetSegmentation() if segmentationNode else None
        if self._observedSegmentation is not None:
            self.addObserver(self._observedSegmentation, event, self._onMasksEdited)

    def _onMasksEdited(self, caller=None, event=None) -> None:
        self.logic.masksEdited = True

    def onEditMasks(self) -> None:
        nodes = self.logic.resultNodes
        if nodes is None or nodes.segmentation is None:
            return
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(nodes.segmentation)
        if hasattr(editor, "setSourceVolumeNode"):
            editor.setSourceVolumeNode(nodes.ct)
        else:  # Slicer before 5.4
            editor.setMasterVolumeNode(nodes.ct)

    def onRecompute(self) -> None:
        try:
            self._ensureDependencies()
            worker = self.logic.startRecompute(
                device=self._parameterNode.device.value, vertebrae=self.meanVertebrae(), caseId=self._currentCaseId()
            )
            self._startPolling(worker, "corrected")
        except Exception as err:
            self._showError(_("The BMD could not be recomputed."), err)

    # ---------------------------------------------------------------- ground truth

    def onSaveGroundTruth(self) -> None:
        from OsteoBMDLib import ground_truth

        caseId = self.ui.caseIdLineEdit.text.strip() or self._currentCaseId()
        dataDir = self.ui.groundTruthDirectoryButton.directory
        try:
            overwrite = False
            if ground_truth.ground_truth_exists(dataDir, caseId):
                overwrite = slicer.util.confirmYesNoDisplay(
                    _("Ground truth for case '{case}' was saved before. Replace it?").format(case=caseId),
                    _("Replace ground truth"),
                )
                if not overwrite:
                    self.ui.statusLabel.text = _("Nothing saved: the earlier ground truth was kept.")
                    return
            folder = self.logic.saveGroundTruth(dataDir, caseId, overwrite=overwrite)
            self.ui.statusLabel.text = _("Saved ground truth to {folder}.").format(folder=folder)
            self._onCaseStatusChanged()
        except Exception as err:
            self._showError(_("The ground truth could not be saved."), err)

    # ---------------------------------------------------------------- case list

    def _currentCaseId(self) -> str:
        return self.logic.currentCaseId(self._parameterNode.inputVolume if self._parameterNode else None)

    def onOpenCaseFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, _("Folder of CTs"))
        if folder:
            self._openCaseList(folder)

    def onOpenCaseCsv(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, _("CSV list of CTs"), "", _("CSV files (*.csv)"))
        if path:
            self._openCaseList(path)

    def _openCaseList(self, source: str) -> None:
        try:
            self._saveEditsOfCurrentCase()
            caseList = self.logic.openCaseList(source)
            self.ui.caseSourceLabel.text = str(caseList.source)
            self.ui.groundTruthDirectoryButton.directory = str(caseList.ground_truth_dir)
            self._loadCurrentCase()
        except Exception as err:
            self._showError(_("The case list could not be opened."), err)

    def onPreviousCase(self) -> None:
        if self.logic.caseList is not None:
            self.onCaseChosen(self.logic.caseList.current_index - 1)

    def onNextCase(self) -> None:
        if self.logic.caseList is not None:
            self.onCaseChosen(self.logic.caseList.current_index + 1)

    def onCaseChosen(self, index: int) -> None:
        try:
            self._saveEditsOfCurrentCase()
            self.logic.caseList.go_to(index)
            self._loadCurrentCase()
        except Exception as err:
            self._showError(_("The case could not be opened."), err)

    def _saveEditsOfCurrentCase(self) -> None:
        saved = self.logic.keepMaskEdits()
        if saved:
            self.ui.statusLabel.text = _("Your mask edits were kept in {path}.").format(path=saved)

    def _loadCurrentCase(self) -> None:
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            volumeNode, restoredEdits = self.logic.loadCurrentCase()
        finally:
            slicer.app.restoreOverrideCursor()
        self._parameterNode.inputVolume = volumeNode
        self.ui.caseIdLineEdit.text = self.logic.caseList.current.case_id
        self._showResult(self.logic.resultNodes)
        if self.logic.resultNodes is None:
            slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)
        self._onCaseStatusChanged()
        if restoredEdits:
            self.ui.statusLabel.text = _("Your earlier mask edits were restored: press Recompute BMD.")

    def _onCaseStatusChanged(self) -> None:
        caseList = self.logic.caseList
        if caseList is None:
            self._updateButtons()
            return
        names = {"new": _("new"), "measured": _("measured"), "corrected": _("corrected"), "saved": _("saved")}
        wasBlocked = self.ui.caseComboBox.blockSignals(True)
        self.ui.caseComboBox.clear()
        for entry in caseList.cases:
            self.ui.caseComboBox.addItem(f"{entry.case_id}  [{names.get(entry.status, entry.status)}]")
        self.ui.caseComboBox.currentIndex = caseList.current_index
        self.ui.caseComboBox.blockSignals(wasBlocked)
        counts = caseList.counts()
        self.ui.caseStatusLabel.text = _(
            "Case {n} of {total}: {status}. Saved {saved}, corrected {corrected}, measured {measured}, new {new}."
        ).format(
            n=caseList.current_index + 1, total=len(caseList), status=names.get(caseList.current.status, ""),
            saved=counts["saved"], corrected=counts["corrected"], measured=counts["measured"], new=counts["new"],
        )
        self._updateButtons()


#
# OsteoBMDLogic
#


class OsteoBMDLogic(ScriptedLoadableModuleLogic):
    """Everything the panel does, callable without the panel (scripts, the self-test)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.resultNodes = None  # OsteoBMDLib.results_to_scene.ResultNodes
        self.caseList = None  # OsteoBMDLib.case_list.CaseList
        self.masksEdited = False
        self._caseNodes = []
        self._tempDir = None
        self._runCtPath = None
        self._runVolumeNode = None

    def getParameterNode(self):
        return OsteoBMDParameterNode(super().getParameterNode())

    # ---------------------------------------------------------------- dependencies

    @staticmethod
    def requirementsFile() -> str:
        return os.path.join(MODULE_DIR, "Resources", "requirements.txt")

    def missingRequirements(self) -> List[str]:
        """Requirements not satisfied in Slicer's Python ('torch' first when missing)."""
        import importlib.metadata
        import importlib.util

        from packaging.requirements import Requirement

        missing = [] if importlib.util.find_spec("torch") else ["torch"]
        with open(self.requirementsFile()) as f:
            lines = [line.split("#")[0].strip() for line in f]
        for line in filter(None, lines):
            req = Requirement(line)
            try:
                if importlib.metadata.version(req.name) not in req.specifier:
                    missing.append(line)
            except importlib.metadata.PackageNotFoundError:
                missing.append(line)
        return missing

    def installRequirements(self) -> None:
        """PyTorch through the PyTorch extension's utilities, then the package's requirements."""
        missing = self.missingRequirements()
        if "torch" in missing:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise OsteoBMDError(_(
                    "OsteoBMD needs the PyTorch extension. Install 'PyTorch' from the Extensions Manager, "
                    "restart Slicer and press Apply again."
                )) from None
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=">=2.0") is None:
                    raise OsteoBMDError(_(
                        "PyTorch could not be installed. Install it with the 'PyTorch Util' module, then press Apply again."
                    ))
            missing.remove("torch")
        if missing:
            slicer.util.pip_install(missing)
        still = self.missingRequirements()
        if still:
            raise OsteoBMDError(_("These packages are still missing after the installation: {names}. "
                                  "Restart Slicer and try again.").format(names=", ".join(still)))

    # ---------------------------------------------------------------- running the pipeline

    @staticmethod
    def pythonExecutable() -> str:
        path = shutil.which("PythonSlicer")
        if not path:
            raise OsteoBMDError(_("Slicer's Python (PythonSlicer) was not found; reinstall Slicer."))
        return path

    @staticmethod
    def weightsDirectory() -> Optional[str]:
        """The model weights shipped with the extension (None: the package's default)."""
        for candidate in (os.path.join(MODULE_DIR, "Resources", "model_weights"),
                          os.path.join(os.path.dirname(MODULE_DIR), "model_weights")):
            if os.path.isdir(candidate) and os.listdir(candidate):
                return candidate
        return None

    def _scratch(self) -> str:
        if self._tempDir is None or not os.path.isdir(self._tempDir):
            self._tempDir = tempfile.mkdtemp(prefix="OsteoBMD-", dir=slicer.app.temporaryPath)
        return self._tempDir

    def outputDirectory(self, caseId: str, kind: str) -> str:
        if self.caseList is not None:
            return str(self.caseList.output_dir(self.caseList.current, kind))
        return os.path.join(self._scratch(), caseId, kind)

    def _writeCt(self, volumeNode) -> str:
        """The CT the worker reads: the node as Slicer shows it (so mask and CT grids agree)."""
        from OsteoBMDLib import masks

        path = os.path.join(self._scratch(), "input_ct.nrrd")
        masks.write_volume(slicer.mrmlScene, volumeNode, path, compress=False)
        self._runCtPath = path
        return path

    def _startWorker(self, ctPath: str, outDir: str, maskPath, device: str, vertebrae, caseId: str):
        """Run into '<outDir>.running'; commitRun() moves it into place only when it succeeded,
        so a failed or cancelled run leaves the earlier results as they were."""
        from OsteoBMDLib.worker import PipelineWorker

        runDir = outDir + ".running"
        shutil.rmtree(runDir, ignore_errors=True)
        os.makedirs(os.path.dirname(outDir), exist_ok=True)
        worker = PipelineWorker(self.pythonExecutable(), ctPath, runDir, mask_path=maskPath, device=device,
                                vertebrae=vertebrae, overwrite=True, weights_dir=self.weightsDirectory(),
                                pythonpath=MODULE_DIR, extra_args=["--no-scene", "--case-id", caseId])
        worker.cwd = os.path.dirname(outDir)
        worker.finalDir = outDir
        return worker.start()

    def _removeRunCt(self) -> None:
        if self._runCtPath and os.path.exists(self._runCtPath):
            os.remove(self._runCtPath)
        self._runCtPath = None

    def commitRun(self, worker) -> str:
        """Move a finished run's folder to its final place (replacing the earlier results)."""
        self._removeRunCt()
        final = worker.finalDir
        old = final + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(final):
            os.replace(final, old)
        os.replace(worker.out_dir, final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def discardRun(self, worker) -> None:
        self._removeRunCt()
        shutil.rmtree(worker.out_dir, ignore_errors=True)

    def startMeasurement(self, volumeNode, device: str = "auto", vertebrae=("L1", "L2", "L3"), caseId: str = "case"):
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise OsteoBMDError(_("Select a CT volume first."))
        if self.resultNodes is not None and self.resultNodes.ct is not volumeNode:
            self.forgetResults()
        self._runVolumeNode = volumeNode
        ctPath = self._writeCt(volumeNode)
        return self._startWorker(ctPath, self.outputDirectory(caseId, "auto"), None, device, vertebrae, caseId)

    def startRecompute(self, device: str = "auto", vertebrae=("L1", "L2", "L3"), caseId: str = "case"):
        """Measure again from the segmentation as it is now (the reader's corrected masks)."""
        from OsteoBMDLib import masks

        nodes = self.resultNodes
        if nodes is None or nodes.segmentation is None:
            raise OsteoBMDError(_("Measure the case first (Apply), then edit the masks."))
        outDir = self.outputDirectory(caseId, "corrected")
        maskPath = os.path.join(os.path.dirname(outDir), "corrected_mask.nrrd")
        masks.export_mask_file(slicer.mrmlScene, nodes.segmentation, nodes.ct, maskPath)
        ctPath = self._writeCt(nodes.ct)
        return self._startWorker(ctPath, outDir, maskPath, device, vertebrae, caseId)

    def loadMeasurement(self, outDir: str, corrected: bool = False):
        """Read a finished run into the scene (a recompute keeps the reader's segmentation)."""
        from OsteoBMDLib import case_list, results_to_scene

        parameterNode = self.getParameterNode()
        ctNode = self.resultNodes.ct if self.resultNodes is not None else (
            self._runVolumeNode or parameterNode.inputVolume)
        self.resultNodes = results_to_scene.load_results(
            slicer.mrmlScene, outDir, ct_node=ctNode, previous=self.resultNodes,
            update_segmentation=not corrected, table_titles=self.tableTitles(),
        )
        self.masksEdited = False
        parameterNode.outputDirectory = outDir
        if self.resultNodes.segmentation is not None and not corrected:
            self.resultNodes.segmentation.CreateClosedSurfaceRepresentation()
        if self.caseList is not None:
            if corrected:
                self.caseList.set_status(self.caseList.current, case_list.STATUS_CORRECTED)
            else:
                self.caseList.advance_status(self.caseList.current, case_list.STATUS_MEASURED)
        return self.resultNodes

    @staticmethod
    def tableTitles() -> dict:
        return {"Vertebra": _("Vertebra"), "BMD": _("BMD (mg/cm³)"), "Class": _("Class"), "Valid": _("Valid"),
                "Reasons": _("Reasons"), "Patch centre": _("Patch centre (RAS mm)"),
                "Corrected mask": _("From corrected mask")}

    def showInViews(self) -> None:
        from OsteoBMDLib import results_to_scene

        if self.resultNodes is not None:
            results_to_scene.show_results(slicer.mrmlScene, self.resultNodes)

    def jumpToVertebra(self, name: str) -> bool:
        from OsteoBMDLib import results_to_scene

        if self.resultNodes is None or name not in VERTEBRAE:
            return False
        center = results_to_scene.vertebra_center_ras(self.resultNodes.result, name)
        if center is None:
            return False
        results_to_scene.jump_slices_to(slicer.mrmlScene, center)
        return True

    def hasReaderMasks(self) -> bool:
        """True when the segmentation holds masks the reader edited (measured or not)."""
        nodes = self.resultNodes
        return nodes is not None and (self.masksEdited or nodes.result.mask_source == "user")

    def forgetResults(self) -> None:
        self.resultNodes = None
        self.masksEdited = False

    # ---------------------------------------------------------------- ground truth

    def defaultGroundTruthDirectory(self) -> str:
        settings = qt.QSettings()
        return settings.value("OsteoBMD/GroundTruthDirectory", os.path.join(os.path.expanduser("~"), "OsteoBMD-DATA"))

    def saveGroundTruth(self, dataDir: str, caseId: str, overwrite: bool = False) -> str:
        from OsteoBMDLib import case_list, ground_truth

        nodes = self.resultNodes
        if nodes is None or nodes.segmentation is None:
            raise OsteoBMDError(_("Measure the case first (Apply), check or correct the masks, then save."))
        if self.masksEdited:
            raise OsteoBMDError(_("The masks were edited after the last measurement: press Recompute BMD first, "
                                  "so that the saved BMD matches the saved masks."))
        folder = ground_truth.save_ground_truth(
            slicer.mrmlScene, dataDir, caseId, nodes.ct, nodes.segmentation, result=nodes.result,
            corrected=nodes.result.mask_source == "user", overwrite=overwrite,
        )
        qt.QSettings().setValue("OsteoBMD/GroundTruthDirectory", str(dataDir))
        if self.caseList is not None:
            self.caseList.set_status(self.caseList.current, case_list.STATUS_SAVED)
        return str(folder)

    # ---------------------------------------------------------------- case list

    def currentCaseId(self, volumeNode=None) -> str:
        from OsteoBMDLib import case_list

        if self.caseList is not None:
            return self.caseList.current.case_id
        if volumeNode is None:
            return "case"
        storage = volumeNode.GetStorageNode()
        fileName = storage.GetFileName() if storage is not None else None
        if fileName and not volumeNode.GetAttribute("DICOM.instanceUIDs"):
            return case_list.safe_case_id(os.path.basename(fileName).split(".")[0])
        # Loaded from DICOM or made in the scene: no name that could carry patient data.
        import hashlib

        uids = volumeNode.GetAttribute("DICOM.instanceUIDs") or volumeNode.GetID()
        return "case-" + hashlib.sha1(uids.encode()).hexdigest()[:10]

    def openCaseList(self, source: str):
        from OsteoBMDLib.case_list import CaseList

        caseList = CaseList.open(source)
        caseList.save()
        if self.caseList is None:
            # Results made before the case list stay in the scene as they are (not a case's).
            self.forgetResults()
            self._caseNodes = []
        self.caseList = caseList
        return caseList

    def keepMaskEdits(self) -> Optional[str]:
        """Before leaving a case: write masks edited since the last measurement to its folder."""
        from OsteoBMDLib import masks

        if self.caseList is None or self.resultNodes is None or not self.masksEdited:
            return None
        path = os.path.join(str(self.caseList.work_dir), self.caseList.current.case_id, "edited_mask.nrrd")
        masks.export_mask_file(slicer.mrmlScene, self.resultNodes.segmentation, self.resultNodes.ct, path)
        self.masksEdited = False
        return path

    def _removeCaseNodes(self) -> None:
        nodes = self.resultNodes
        if nodes is not None:
            for node in [nodes.labelmap, nodes.segmentation, nodes.table, nodes.patch_labelmap,
                         *nodes.patch_rois.values()]:
                if node is not None and node.GetScene() is not None:
                    slicer.mrmlScene.RemoveNode(node)
        for node in self._caseNodes:
            if node is not None and node.GetScene() is not None:
                slicer.mrmlScene.RemoveNode(node)
        self._caseNodes = []
        self.forgetResults()

    def loadCurrentCase(self):
        """Load the current case's CT and its latest results; returns (volume, edits restored)."""
        from OsteoBMDLib import results_to_scene

        entry = self.caseList.current
        self._removeCaseNodes()
        if os.path.isdir(entry.ct_path):
            import sitkUtils
            from osteobmd.io import read_ct

            volumeNode = sitkUtils.PushVolumeToSlicer(read_ct(entry.ct_path), name=entry.case_id)
        else:
            volumeNode = slicer.util.loadVolume(entry.ct_path, {"name": entry.case_id})
        self._caseNodes.append(volumeNode)
        restored = False
        for kind in ("corrected", "auto"):
            outDir = self.caseList.output_dir(entry, kind)
            if os.path.exists(os.path.join(outDir, "results.json")):
                self.getParameterNode().inputVolume = volumeNode
                self.resultNodes = results_to_scene.load_results(
                    slicer.mrmlScene, str(outDir), ct_node=volumeNode, table_titles=self.tableTitles())
                edited = os.path.join(str(self.caseList.work_dir), entry.case_id, "edited_mask.nrrd")
                if os.path.exists(edited) and os.path.getmtime(edited) > os.path.getmtime(
                        os.path.join(outDir, "results.json")):
                    labelmap = results_to_scene.load_labelmap(slicer.mrmlScene, edited, entry.case_id + " edited")
                    results_to_scene.labelmap_to_segmentation(
                        slicer.mrmlScene, labelmap, volumeNode, segmentation_node=self.resultNodes.segmentation)
                    slicer.mrmlScene.RemoveNode(labelmap)
                    self.masksEdited = True
                    restored = True
                break
        return volumeNode, restored


#
# OsteoBMDTest
#


class OsteoBMDTest(ScriptedLoadableModuleTest):
    """The whole panel flow on the bundled sample CT (needs the trained weights)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PanelFlow()

    @staticmethod
    def sampleCtPath() -> Optional[str]:
        for candidate in (os.path.join(MODULE_DIR, "Resources", "Samples", "ct.nii.gz"),
                          os.path.join(os.path.dirname(MODULE_DIR), "samples", "ct.nii.gz")):
            if os.path.exists(candidate):
                return candidate
        return None

    def _waitFor(self, widget, timeout: float = 1800.0) -> None:
        start = time.time()
        while widget._running():
            slicer.app.processEvents()
            time.sleep(0.05)
            if time.time() - start > timeout:
                widget.onApplyButton()  # cancels
                raise AssertionError("The measurement did not finish in time.")
        widget.onPollWorker()

    def test_PanelFlow(self):
        import numpy as np
        from OsteoBMDLib import case_list, ground_truth, masks

        samplePath = self.sampleCtPath()
        self.assertIsNotNone(samplePath, "The sample CT is not installed.")
        logic = OsteoBMDLogic()
        if logic.missingRequirements():
            self.skipTest("Python packages missing: " + ", ".join(logic.missingRequirements()))
        weights = logic.weightsDirectory()
        if weights is None or not any(f.endswith(".safetensors") for f in os.listdir(weights)):
            self.skipTest("No trained model weights are installed.")

        self.delayDisplay("Apply on the sample CT")
        slicer.util.selectModule("OsteoBMD")
        widget = slicer.util.getModuleWidget("OsteoBMD")
        widget.initializeParameterNode()  # the scene was cleared in setUp
        ctNode = slicer.util.loadVolume(samplePath)
        widget._parameterNode.inputVolume = ctNode
        widget.onApplyButton()
        self.assertEqual(widget.ui.applyButton.text, _("Cancel"))
        widget.onApplyButton()  # Cancel: the process tree ends, nothing is loaded
        self._waitFor(widget)
        self.assertIsNone(widget.logic.resultNodes)
        self.assertEqual(widget.ui.applyButton.text, _("Apply"))

        widget.onApplyButton()
        self.assertTrue(widget._running())
        self._waitFor(widget)
        nodes = widget.logic.resultNodes
        self.assertIsNotNone(nodes)
        segmentation = nodes.segmentation.GetSegmentation()
        self.assertEqual(sorted(segmentation.GetNthSegment(i).GetName()
                                for i in range(segmentation.GetNumberOfSegments())), list(VERTEBRAE))
        self.assertEqual(nodes.table.GetNumberOfRows(), len(VERTEBRAE) + 1)
        self.assertTrue(widget.logic.jumpToVertebra("L2"))

        self.delayDisplay("Edit L2 and recompute")
        labelmap = masks.export_vertebra_labelmap(slicer.mrmlScene, nodes.segmentation, nodes.ct)
        array = slicer.util.arrayFromVolume(labelmap)
        zs = np.nonzero((array == 2).any(axis=(1, 2)))[0]
        if len(zs):
            array[(zs.min() + zs.max()) // 2:][array[(zs.min() + zs.max()) // 2:] == 2] = 0
            slicer.util.arrayFromVolumeModified(labelmap)
            from OsteoBMDLib import results_to_scene

            results_to_scene.labelmap_to_segmentation(slicer.mrmlScene, labelmap, nodes.ct,
                                                      segmentation_node=nodes.segmentation)
        slicer.mrmlScene.RemoveNode(labelmap)
        widget.onRecompute()
        self._waitFor(widget)
        result = widget.logic.resultNodes.result
        self.assertEqual(result.mask_source, "user")
        self.assertTrue(all(v.from_corrected_mask for v in result.vertebrae))

        self.delayDisplay("Save as ground truth, twice")
        dataDir = tempfile.mkdtemp(prefix="OsteoBMDTest-")
        folder = widget.logic.saveGroundTruth(dataDir, "sample")
        self.assertTrue(os.path.exists(os.path.join(folder, "labels.nrrd")))
        with self.assertRaises(ground_truth.GroundTruthExistsError):
            widget.logic.saveGroundTruth(dataDir, "sample")

        self.delayDisplay("Case list")
        casesDir = tempfile.mkdtemp(prefix="OsteoBMDCases-")
        shutil.copy(samplePath, os.path.join(casesDir, "sample.nii.gz"))
        widget._openCaseList(casesDir)
        self.assertEqual(widget.logic.caseList.current.status, case_list.STATUS_NEW)
        widget.onApplyButton()
        self._waitFor(widget)
        self.assertEqual(case_list.CaseList.open(casesDir).current.status, case_list.STATUS_MEASURED)
        widget.logic.caseList = None
        shutil.rmtree(dataDir, ignore_errors=True)
        shutil.rmtree(casesDir, ignore_errors=True)
        self.delayDisplay("Test passed")
