"""OsteoBMD: lumbar (L1-L4) bone mineral density from routine CT, inside 3D Slicer.

This file only wires things together. What the panel does lives in the Qt-free
OsteoBMDLib.session.MeasurementSession (tested outside Slicer with slicer-core): the
measurement is the `osteobmd` package's command line, run in a background process with
Slicer's own Python (OsteoBMDLib.worker); results are read into the scene by
osteobmd.scene; masks, ground truth and the case list live in OsteoBMDLib too.
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

from OsteoBMDLib import session as sessionlib
from OsteoBMDLib.session import MeasurementSession, SessionError

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
        self.session = None  # self.logic.session: the Qt-free state and actions
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._worker = None
        self._pollTimer = None

    # ---------------------------------------------------------------- set-up

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/OsteoBMD.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = OsteoBMDLogic()
        self.session = self.logic.session

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
        self.session.forget_results()
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
        hasResults = self.session is not None and self.session.result_nodes is not None
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.toolTip = (
            _("Stop the measurement") if running
            else _("Measure L1-L4 BMD on the selected CT") if hasInput else _("Select a CT volume first")
        )
        self.ui.applyButton.enabled = running or hasInput
        for button in (self.ui.editMasksButton, self.ui.recomputeButton, self.ui.saveGroundTruthButton):
            button.enabled = hasResults and not running
        caseList = self.session.case_list if self.session else None
        self.ui.previousCaseButton.enabled = bool(caseList and caseList.has_previous and not running)
        self.ui.nextCaseButton.enabled = bool(caseList and caseList.has_next and not running)
        self.ui.caseComboBox.enabled = bool(caseList and not running)

    def _showError(self, message: str, err: Exception, details: str = "") -> None:
        """A clear message box (the log, not a traceback, under 'details'); tracebacks go to the log."""
        logging.error("%s %s", message, err, exc_info=not isinstance(err, (OsteoBMDError, SessionError)))
        if slicer.app.testingEnabled():
            raise err
        extra = {"detailedText": details} if details else {}
        slicer.util.errorDisplay(f"{message}\n\n{self.logic.errorText(err)}", windowTitle=_("OsteoBMD"), **extra)

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
            if self.session.has_reader_masks() and not slicer.app.testingEnabled():
                if not slicer.util.confirmOkCancelDisplay(
                    _("Apply segments the CT again and replaces the masks you edited with the network's. "
                      "Use Recompute BMD to measure your masks. Replace them?"),
                    _("Replace edited masks"),
                ):
                    return
            self._ensureDependencies()
            self._saveEditsOfCurrentCase()
            worker = self.session.start_measurement(
                self._parameterNode.inputVolume, device=self._parameterNode.device.value,
                vertebrae=self.meanVertebrae(), case_id=self._currentCaseId(),
            )
            self._startPolling(worker)
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

    def _startPolling(self, worker) -> None:
        self._worker = worker
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
        worker, self._worker = self._worker, None
        self.ui.progressBar.hide()
        self._updateButtons()
        self._onWorkerDone(worker)

    def _onWorkerDone(self, worker) -> None:
        try:
            outcome = self.session.finish_run(worker)
            if outcome == sessionlib.CANCELLED:
                self.ui.statusLabel.text = _("Cancelled; nothing was changed.")
            elif outcome == sessionlib.FAILED:
                self.ui.statusLabel.text = _("Failed.")
            else:
                self.logic.getParameterNode().outputDirectory = self.session.result_nodes.output_dir
                self._showResult(self.session.result_nodes)
                self._onCaseStatusChanged()
                self.ui.statusLabel.text = (
                    _("Done.") if outcome == sessionlib.FINISHED
                    else _("Done: no vertebra passed the checks (see the reasons).")
                )
        except Exception as err:
            self._showError(_("The results could not be loaded."), err)
            return
        if outcome == sessionlib.FAILED:
            self._showError(_("The measurement failed."), OsteoBMDError(sessionlib.run_error(worker)),
                            details=self.ui.logTextEdit.toPlainText())

    # ---------------------------------------------------------------- showing results

    def _showResult(self, nodes) -> None:
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
        self.session.show_in_views()
        self._updateButtons()

    def onTableClicked(self, index) -> None:
        if self.session.result_nodes is not None:
            self.session.jump_to_vertebra(index.sibling(index.row(), 0).data())

    # ---------------------------------------------------------------- correction loop

    def onEditMasks(self) -> None:
        nodes = self.session.result_nodes
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
            worker = self.session.start_recompute(
                device=self._parameterNode.device.value, vertebrae=self.meanVertebrae(), case_id=self._currentCaseId()
            )
            self._startPolling(worker)
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
        return self.session.current_case_id(self._parameterNode.inputVolume if self._parameterNode else None)

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
            caseList = self.session.open_case_list(source)
            self.ui.caseSourceLabel.text = str(caseList.source)
            self.ui.groundTruthDirectoryButton.directory = str(caseList.ground_truth_dir)
            self._loadCurrentCase()
        except Exception as err:
            self._showError(_("The case list could not be opened."), err)

    def onPreviousCase(self) -> None:
        if self.session.case_list is not None:
            self.onCaseChosen(self.session.case_list.current_index - 1)

    def onNextCase(self) -> None:
        if self.session.case_list is not None:
            self.onCaseChosen(self.session.case_list.current_index + 1)

    def onCaseChosen(self, index: int) -> None:
        try:
            self._saveEditsOfCurrentCase()
            self.session.case_list.go_to(index)
            self._loadCurrentCase()
        except Exception as err:
            self._showError(_("The case could not be opened."), err)

    def _saveEditsOfCurrentCase(self) -> None:
        saved = self.session.keep_mask_edits()
        if saved:
            self.ui.statusLabel.text = _("Your mask edits were kept in {path}.").format(path=saved)

    def _loadCurrentCase(self) -> None:
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            volumeNode, restoredEdits = self.session.load_current_case()
        finally:
            slicer.app.restoreOverrideCursor()
        self._parameterNode.inputVolume = volumeNode
        self.ui.caseIdLineEdit.text = self.session.case_list.current.case_id
        self._showResult(self.session.result_nodes)
        if self.session.result_nodes is None:
            slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)
        self._onCaseStatusChanged()
        if restoredEdits:
            self.ui.statusLabel.text = _("Your earlier mask edits were restored: press Recompute BMD.")

    def _onCaseStatusChanged(self) -> None:
        caseList = self.session.case_list
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
    """Builds the Qt-free measurement session (OsteoBMDLib.session: everything the panel does,
    callable from scripts) on Slicer's scene, and keeps what needs the application: installing
    packages, settings, and the reader's language for the session's errors."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        titles = {"Vertebra": _("Vertebra"), "BMD": _("BMD (mg/cm³)"), "Class": _("Class"), "Valid": _("Valid"),
                  "Reasons": _("Reasons"), "Patch centre": _("Patch centre (RAS mm)"),
                  "Corrected mask": _("From corrected mask")}
        self.session = MeasurementSession(
            slicer.mrmlScene, shutil.which("PythonSlicer"), weights_dir=self.weightsDirectory(),
            work_dir=slicer.app.temporaryPath, pythonpath=MODULE_DIR, table_titles=titles)

    def getParameterNode(self):
        return OsteoBMDParameterNode(super().getParameterNode())

    @staticmethod
    def weightsDirectory() -> Optional[str]:
        """The model weights shipped with the extension (None: the package's default)."""
        return sessionlib.shipped_weights_dir(MODULE_DIR)

    @staticmethod
    def errorText(err: Exception) -> str:
        """A session error in the reader's language; other errors as they are."""
        texts = {
            sessionlib.NO_VOLUME: _("Select a CT volume first."),
            sessionlib.NO_PYTHON: _("Slicer's Python (PythonSlicer) was not found; reinstall Slicer."),
            sessionlib.NOT_MEASURED: _("Measure the case first (Apply), then edit the masks."),
            sessionlib.NOT_MEASURED_FOR_SAVE: _(
                "Measure the case first (Apply), check or correct the masks, then save."),
            sessionlib.MASKS_NOT_RECOMPUTED: _(
                "The masks were edited after the last measurement: press Recompute BMD first, "
                "so that the saved BMD matches the saved masks."),
        }
        return texts.get(getattr(err, "code", None), str(err))

    # ---------------------------------------------------------------- dependencies

    @staticmethod
    def missingRequirements() -> List[str]:
        return sessionlib.missing_requirements(os.path.join(MODULE_DIR, "Resources", "requirements.txt"))

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

    # ---------------------------------------------------------------- ground truth

    @staticmethod
    def defaultGroundTruthDirectory() -> str:
        settings = qt.QSettings()
        return settings.value("OsteoBMD/GroundTruthDirectory", os.path.join(os.path.expanduser("~"), "OsteoBMD-DATA"))

    def saveGroundTruth(self, dataDir: str, caseId: str, overwrite: bool = False) -> str:
        folder = self.session.save_ground_truth(dataDir, caseId, overwrite=overwrite)
        qt.QSettings().setValue("OsteoBMD/GroundTruthDirectory", str(dataDir))
        return folder


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
        self.assertIsNone(widget.session.result_nodes)
        self.assertEqual(widget.ui.applyButton.text, _("Apply"))

        widget.onApplyButton()
        self.assertTrue(widget._running())
        self._waitFor(widget)
        nodes = widget.session.result_nodes
        self.assertIsNotNone(nodes)
        segmentation = nodes.segmentation.GetSegmentation()
        self.assertEqual(sorted(segmentation.GetNthSegment(i).GetName()
                                for i in range(segmentation.GetNumberOfSegments())), list(VERTEBRAE))
        self.assertEqual(nodes.table.GetNumberOfRows(), len(VERTEBRAE) + 1)
        self.assertTrue(widget.session.jump_to_vertebra("L2"))

        self.delayDisplay("Edit L2 and recompute")
        labelmap = masks.export_vertebra_labelmap(slicer.mrmlScene, nodes.segmentation, nodes.ct)
        array = slicer.util.arrayFromVolume(labelmap)
        zs = np.nonzero((array == 2).any(axis=(1, 2)))[0]
        if len(zs):
            array[(zs.min() + zs.max()) // 2:][array[(zs.min() + zs.max()) // 2:] == 2] = 0
            slicer.util.arrayFromVolumeModified(labelmap)
            from osteobmd.scene.segmentation import labelmap_to_segmentation

            labelmap_to_segmentation(slicer.mrmlScene, labelmap, nodes.ct,
                                                      segmentation_node=nodes.segmentation)
        slicer.mrmlScene.RemoveNode(labelmap)
        widget.onRecompute()
        self._waitFor(widget)
        result = widget.session.result_nodes.result
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
        self.assertEqual(widget.session.case_list.current.status, case_list.STATUS_NEW)
        widget.onApplyButton()
        self._waitFor(widget)
        self.assertEqual(case_list.CaseList.open(casesDir).current.status, case_list.STATUS_MEASURED)
        widget.session.case_list = None
        shutil.rmtree(dataDir, ignore_errors=True)
        shutil.rmtree(casesDir, ignore_errors=True)
        self.delayDisplay("Test passed")
