"""The OsteoBMD panel's self-test in Slicer: the whole flow on the bundled sample CT.

Apply and Cancel, Apply, an edited mask and Recompute, ground truth saved twice, and a case
list, all through the widget (OsteoBMD.py's OsteoBMDTest runs it; it needs the trained
weights). Every step below the widget is tested outside Slicer (Testing/python).
"""

import os
import shutil
import tempfile
import time

import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class PanelFlowTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PanelFlow()

    def _waitFor(self, widget, timeout: float = 1800.0) -> None:
        start = time.time()
        while widget.session.running:
            slicer.app.processEvents()
            time.sleep(0.05)
            if time.time() - start > timeout:
                widget.ui.applyButton.click()  # cancels
                raise AssertionError("The measurement did not finish in time.")
        widget.onPollWorker()

    def test_PanelFlow(self):
        from osteobmd.config import VERTEBRA_NAMES
        from osteobmd.data_files import sample_ct
        from osteobmd.scene.segmentation import labelmap_to_segmentation
        from OsteoBMDLib import case_list, ground_truth, masks

        widget = slicer.util.getModuleWidget("OsteoBMD")
        logic = widget.logic
        weights = logic.session.weights_dir
        if logic.missingRequirements() or not weights or not any(
                name.endswith(".safetensors") for name in os.listdir(weights)):
            self.skipTest("Python packages or the trained model weights are not installed.")
        widget.initializeParameterNode()  # the scene was cleared
        widget._parameterNode.inputVolume = slicer.util.loadVolume(str(sample_ct()))
        widget.ui.applyButton.click()
        self.assertEqual(widget.ui.applyButton.text, _("Cancel"))
        widget.ui.applyButton.click()  # Cancel: the process tree ends, nothing is loaded
        self._waitFor(widget)
        self.assertIsNone(widget.session.result_nodes)
        self.assertEqual(widget.ui.applyButton.text, _("Apply"))

        widget.ui.applyButton.click()
        self._waitFor(widget)
        nodes = widget.session.result_nodes
        segmentation = nodes.segmentation.GetSegmentation()
        self.assertEqual([segmentation.GetNthSegment(i).GetName() for i in range(4)], list(VERTEBRA_NAMES))
        self.assertEqual(nodes.table.GetNumberOfRows(), len(VERTEBRA_NAMES) + 1)
        self.assertTrue(widget.session.jump_to_vertebra("L2"))
        labelmap = masks.export_vertebra_labelmap(slicer.mrmlScene, nodes.segmentation, nodes.ct)
        array = slicer.util.arrayFromVolume(labelmap)
        slices = (array == 2).any(axis=(1, 2)).nonzero()[0]
        if len(slices):  # the reader erases the upper half of L2
            upper = array[(slices.min() + slices.max()) // 2:]
            upper[upper == 2] = 0
            slicer.util.arrayFromVolumeModified(labelmap)
            labelmap_to_segmentation(slicer.mrmlScene, labelmap, nodes.ct, segmentation_node=nodes.segmentation)
        slicer.mrmlScene.RemoveNode(labelmap)
        widget.ui.recomputeButton.click()
        self._waitFor(widget)
        result = widget.session.result_nodes.result
        self.assertTrue(result.mask_source == "user" and all(v.from_corrected_mask for v in result.vertebrae))

        dataDir, casesDir = tempfile.mkdtemp(prefix="OsteoBMDTest-"), tempfile.mkdtemp(prefix="OsteoBMDCases-")
        self.assertTrue(os.path.exists(os.path.join(widget.logic.saveGroundTruth(dataDir, "sample"), "labels.nrrd")))
        with self.assertRaises(ground_truth.GroundTruthExistsError):  # an earlier save is never replaced silently
            widget.logic.saveGroundTruth(dataDir, "sample")
        shutil.copy(str(sample_ct()), os.path.join(casesDir, "sample.nii.gz"))
        widget.openCaseList(casesDir)
        widget.ui.applyButton.click()
        self._waitFor(widget)
        self.assertEqual(case_list.CaseList.open(casesDir).current.status, case_list.STATUS_MEASURED)
        widget.session.case_list = None
        shutil.rmtree(dataDir, ignore_errors=True)
        shutil.rmtree(casesDir, ignore_errors=True)
