"""OsteoBMD: lumbar (L1-L4) bone mineral density from routine CT, inside 3D Slicer.

Only the wiring between the panel (Resources/UI/OsteoBMD.ui) and the Qt-free, tested OsteoBMDLib:
the session runs `osteobmd run` in a background process and reads its results into the scene
(osteobmd.scene); panel_state decides what the widgets show, and texts words it.
"""

import logging
import os
import shutil
from typing import Optional

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from osteobmd.errors import OsteoBMDError
from OsteoBMDLib import installation, panel_state, texts
from OsteoBMDLib import session as sessionlib
from OsteoBMDLib.panel_state import CalibrationChoice, Device
from OsteoBMDTesting.panel_flow import PanelFlowTest

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(MODULE_DIR, "Resources", "requirements.txt")


class OsteoBMD(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("OsteoBMD")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.contributors = ["OsteoBMD contributors"]
        self.parent.helpText, self.parent.acknowledgementText = texts.module_help()


@parameterNodeWrapper
class OsteoBMDParameterNode:
    """The CT, the device, the vertebrae of the mean (meanL1..L4) and the HU calibration."""

    inputVolume: vtkMRMLScalarVolumeNode
    device: Device = Device.AUTO
    meanL1: bool = True
    meanL2: bool = True
    meanL3: bool = True
    meanL4: bool = False
    calibration: CalibrationChoice = CalibrationChoice.NONE
    calibrationSlope: float = 1.0
    calibrationIntercept: float = 0.0
    outputDirectory: str = ""

    def runOptions(self, session):
        """The run's RunOptions (the worker's argv is their to_argv()); a bad value fails here."""
        return panel_state.run_options(session, self)


class OsteoBMDWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self.session = self._parameterNode = self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/OsteoBMD.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = OsteoBMDLogic()
        self.session = self.logic.session
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for button, slot in (
                (ui.applyButton, self.onApplyButton),
                (ui.recomputeButton, lambda: self._try("recompute", self._startRun, self.session.start_recompute)),
                (ui.editMasksButton, self.onEditMasks), (ui.saveGroundTruthButton, self.onSaveGroundTruth),
                (ui.openCaseFolderButton, lambda: self.openCaseList(
                    qt.QFileDialog.getExistingDirectory(None, _("Folder of CTs")))),
                (ui.openCaseCsvButton, lambda: self.openCaseList(
                    qt.QFileDialog.getOpenFileName(None, _("CSV list of CTs"), "", _("CSV files (*.csv)")))),
                (ui.previousCaseButton, lambda: self._openCase(self.session.step_case, -1)),
                (ui.nextCaseButton, lambda: self._openCase(self.session.step_case, 1))):
            button.connect("clicked(bool)", lambda checked=False, slot=slot: slot())
        ui.caseComboBox.connect("activated(int)", lambda index: self._openCase(self.session.go_to_case, index))
        ui.resultsTableView.connect(
            "clicked(QModelIndex)", lambda index: self.session.jump_to_vertebra(index.sibling(index.row(), 0).data()))
        ui.groundTruthDirectoryButton.directory = self.logic.defaultGroundTruthDirectory()
        ui.progressBar.hide()
        self._pollTimer = qt.QTimer()
        self._pollTimer.connect("timeout()", self.onPollWorker)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.session.cancel_run()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

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
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode: Optional[OsteoBMDParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:  # widgets carry the Qt property "SlicerParameterName" (see the .ui file)
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        self._apply(panel_state.controls_view(self.session, self._parameterNode))

    def _apply(self, view) -> None:
        """Copy the widget values panel_state decided into the widgets."""
        for name, values in view.items():
            for prop, value in values.items():
                setattr(getattr(self.ui, name), prop, value)

    def _try(self, failure: str, action, *args):
        """Run an action; when it fails, show why (and return None)."""
        try:
            return action(*args)
        except Exception as err:
            self._showError(texts.failure(failure), err)

    def _showError(self, message: str, err: Exception, details: str = "") -> None:
        """A clear message box (the log, not a traceback, under 'details'); tracebacks go to the log."""
        logging.error("%s %s", message, err, exc_info=not isinstance(err, (OsteoBMDError, sessionlib.SessionError)))
        if slicer.app.testingEnabled():
            raise err
        slicer.util.errorDisplay(f"{message}\n\n{texts.error_text(err)}", windowTitle=_("OsteoBMD"),
                                 **({"detailedText": details} if details else {}))

    def onApplyButton(self) -> None:
        if self.session.running:
            self.session.cancel_run()
            self.ui.statusLabel.text = texts.status("cancelling")
        elif (not self.session.has_reader_masks() or slicer.app.testingEnabled()
              or slicer.util.confirmOkCancelDisplay(*texts.question("replace_masks"))):
            volume = self._parameterNode.inputVolume
            self._try("measure", self._startRun, lambda options: self.session.start_measurement(volume, options))

    def _startRun(self, start) -> None:
        """Install what is missing, take the options from the parameter node (a bad value stops here), start."""
        self._installRequirements()
        start(self._parameterNode.runOptions(self.session))
        self.ui.logTextEdit.clear()
        self._apply(panel_state.run_started_view())
        self._pollTimer.start(200)
        self._updateButtons()

    def _installRequirements(self) -> None:
        """The packages the measurement needs, installed after asking the reader (never in a test run)."""
        missing, testing = self.logic.missingRequirements(), slicer.app.testingEnabled()
        if missing and (testing or not slicer.util.confirmOkCancelDisplay(
                *texts.question("install"), detailedText=texts.packages_to_install(missing))):
            raise OsteoBMDError(texts.packages_missing(missing, declined=not testing))
        if missing:
            self.ui.statusLabel.text = texts.status("installing")
            slicer.app.processEvents()
            with slicer.util.WaitCursor():
                installation.install_requirements(REQUIREMENTS, self.logic.installTorch, slicer.util.pip_install)
            self.ui.statusLabel.text = texts.status("installed")

    def onPollWorker(self) -> None:
        update = self._try("load", self.session.poll_run)
        if update is None or update.outcome is not None:
            self._pollTimer.stop()
            self.ui.progressBar.hide()
            self._updateButtons()
        if update is None:
            return
        for line in update.log_lines:
            self.ui.logTextEdit.appendPlainText(line)
        if update.outcome in (sessionlib.FINISHED, sessionlib.NO_VALID):
            self.logic.getParameterNode().outputDirectory = self.session.result_nodes.output_dir
            self._showResult(self.session.result_nodes)
        self._apply(panel_state.progress_view(update))
        if update.outcome == sessionlib.FAILED:
            self._showError(texts.failure("run"), OsteoBMDError(update.error), self.ui.logTextEdit.toPlainText())

    def _showResult(self, nodes) -> None:
        self.ui.resultsTableView.setMRMLTableNode(nodes.table if nodes else None)
        self._apply(panel_state.result_view(nodes))
        png = qt.QPixmap(panel_state.result_summary(nodes).patches_png or "" if nodes else "")
        self.ui.patchesImageLabel.setPixmap(png if png.isNull() else png.scaledToWidth(320, qt.Qt.SmoothTransformation))
        if nodes is not None:
            if slicer.app.layoutManager() is not None:
                slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
            slicer.util.setSliceViewerLayers(background=nodes.ct, fit=True)
            self.session.show_in_views()  # after fitting: outlines, patches, every view through the spine
        self._showCaseStatus()

    def onEditMasks(self) -> None:
        nodes = self.session.result_nodes
        if nodes is not None and nodes.segmentation is not None:
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(nodes.segmentation)
            (getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode)(nodes.ct)  # <5.4: Master

    def onSaveGroundTruth(self) -> None:
        caseId = self.session.ground_truth_case_id(self.ui.caseIdLineEdit.text, self._parameterNode.inputVolume)
        try:
            folder = self.logic.saveGroundTruth(self.ui.groundTruthDirectoryButton.directory, caseId, lambda c: (
                slicer.util.confirmYesNoDisplay(*texts.question("replace_ground_truth", case=c))))
        except Exception as err:
            return self._showError(texts.failure("save"), err)
        self.ui.statusLabel.text = texts.status("saved", folder=folder) if folder else texts.status("not_saved")
        self._showCaseStatus()

    def openCaseList(self, source: str) -> None:
        if source:
            self._openCase(self.session.open_cases, source, "case_list")

    def _openCase(self, openCase, argument, failure: str = "case"):
        """Open a case of the case list (a session method giving a CaseOpened) and show it."""
        with slicer.util.WaitCursor():
            opened = self._try(failure, openCase, argument)
        if opened is not None:
            self._parameterNode.inputVolume = opened.ct
            self._showResult(self.session.result_nodes)
            if self.session.result_nodes is None:
                slicer.util.setSliceViewerLayers(background=opened.ct, fit=True)
            self._apply(panel_state.case_opened_view(opened, self.session.case_list))
        return opened

    def _showCaseStatus(self) -> None:
        if self.session.case_list is not None:
            wasBlocked = self.ui.caseComboBox.blockSignals(True)
            self.ui.caseComboBox.clear()
            self.ui.caseComboBox.addItems(panel_state.case_items(self.session.case_list))
            self._apply(panel_state.case_view(self.session.case_list))
            self.ui.caseComboBox.blockSignals(wasBlocked)
        self._updateButtons()


class OsteoBMDLogic(ScriptedLoadableModuleLogic):
    """The session (everything the panel does, callable from scripts) on Slicer's scene; PyTorch, settings."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.session = sessionlib.MeasurementSession(
            slicer.mrmlScene, shutil.which("PythonSlicer"), weights_dir=installation.shipped_weights_dir(MODULE_DIR),
            work_dir=slicer.app.temporaryPath, pythonpath=MODULE_DIR, table_titles=texts.table_titles())

    def getParameterNode(self):
        return OsteoBMDParameterNode(super().getParameterNode())

    @staticmethod
    def missingRequirements():
        return installation.missing_requirements(REQUIREMENTS)

    @staticmethod
    def installTorch() -> None:
        """PyTorch through the PyTorch extension's utilities (the build that fits this computer)."""
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            PyTorchUtils = None
        installation.install_torch(PyTorchUtils.PyTorchUtilsLogic() if PyTorchUtils else None)

    @staticmethod
    def defaultGroundTruthDirectory() -> str:
        return qt.QSettings().value("OsteoBMD/GroundTruthDirectory",
                                    os.path.join(os.path.expanduser("~"), "OsteoBMD-DATA"))

    def saveGroundTruth(self, dataDir: str, caseId: str, replace=None, overwrite: bool = False) -> Optional[str]:
        folder = self.session.save_ground_truth(dataDir, caseId, overwrite=overwrite, replace=replace)
        qt.QSettings().setValue("OsteoBMD/GroundTruthDirectory", str(dataDir))
        return folder


class OsteoBMDTest(PanelFlowTest):
    """The whole panel flow on the bundled sample CT (OsteoBMDTesting/panel_flow.py)."""
