"""One reader's measurement session in an MRML scene (Qt-free; runs in Slicer and in slicer-core).

``MeasurementSession`` is what the panel does, minus the panel: it writes the CT node for
the background worker (``osteobmd run`` in another Python), runs into a scratch folder that
replaces the earlier results only when the run succeeded, reads the results into the scene,
follows the reader's mask edits, saves ground truth and walks a case list. It talks to the
scene, nodes and storage nodes only (never ``slicer.app``, ``slicer.util`` or Qt), so the
same code runs in Slicer (``OsteoBMDLogic`` builds it with Slicer's scene and PythonSlicer)
and in the tests (a slicer-core scene and ``sys.executable``).

Errors the reader must act on raise ``SessionError``; its ``code`` lets the panel show the
text in the reader's language (``OsteoBMDLogic.errorText``).
"""

import hashlib
import os
import shutil
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np
import vtk

import slicer
from osteobmd.results import RESULTS_JSON
from osteobmd.scene.output_folder import load_results
from osteobmd.scene.segmentation import labelmap_to_segmentation
from osteobmd.scene.volumes import load_ct, load_labelmap

from . import case_list as case_list_lib
from . import ground_truth, masks, views
from . import worker as workerlib

# SessionError codes.
NO_VOLUME = "no_volume"
NO_PYTHON = "no_python"
NOT_MEASURED = "not_measured"
NOT_MEASURED_FOR_SAVE = "not_measured_for_save"
MASKS_NOT_RECOMPUTED = "masks_not_recomputed"
MESSAGES = {
    NO_VOLUME: "Select a CT volume first.",
    NO_PYTHON: "The Python that runs the measurement was not found; reinstall Slicer.",
    NOT_MEASURED: "Measure the case first (Apply), then edit the masks.",
    NOT_MEASURED_FOR_SAVE: "Measure the case first (Apply), check or correct the masks, then save.",
    MASKS_NOT_RECOMPUTED: "The masks were edited after the last measurement: press Recompute BMD first, "
                          "so that the saved BMD matches the saved masks.",
}

# What finish_run() made of a run that ended.
FINISHED = "finished"  # results committed and loaded
NO_VALID = "no_valid"  # results committed and loaded, but no vertebra passed the checks
FAILED = "failed"  # discarded; the earlier results are as they were
CANCELLED = "cancelled"  # discarded

AUTO = "auto"  # a run on the network's masks
CORRECTED = "corrected"  # a run on the reader's masks
EDITED_MASK = "edited_mask.nrrd"
CORRECTED_MASK = "corrected_mask.nrrd"
INPUT_CT = "input_ct.nrrd"


class SessionError(Exception):
    """A step the reader must take first; ``str(err)`` says which, ``code`` names it."""

    def __init__(self, code: str):
        super().__init__(MESSAGES[code])
        self.code = code


# --------------------------------------------------------------------------- helpers


def missing_requirements(requirements_file: str) -> List[str]:
    """Requirements not satisfied in this Python ('torch' first when it is missing)."""
    import importlib.metadata
    import importlib.util

    from packaging.requirements import Requirement

    missing = [] if importlib.util.find_spec("torch") else ["torch"]
    with open(requirements_file) as f:
        lines = [line.split("#")[0].strip() for line in f]
    for line in filter(None, lines):
        req = Requirement(line)
        try:
            if importlib.metadata.version(req.name) not in req.specifier:
                missing.append(line)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
    return missing


def shipped_weights_dir(module_dir: str) -> Optional[str]:
    """The model weights installed with the extension, or beside the source tree (None: none)."""
    for candidate in (os.path.join(module_dir, "Resources", "model_weights"),
                      os.path.join(os.path.dirname(module_dir), "model_weights")):
        if os.path.isdir(candidate) and os.listdir(candidate):
            return candidate
    return None


def volume_from_image(scene, image, name: str):
    """A scalar volume node holding a SimpleITK image (LPS physical space), without a file."""
    import SimpleITK as sitk
    from vtk.util import numpy_support

    array = np.ascontiguousarray(sitk.GetArrayFromImage(image))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    data = vtk.vtkImageData()
    data.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True))
    node.SetAndObserveImageData(data)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    directions = lps_to_ras @ np.array(image.GetDirection(), float).reshape(3, 3)
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, directions[r, c])
    node.SetIJKToRASDirectionMatrix(matrix)
    node.SetSpacing(image.GetSpacing())
    node.SetOrigin(lps_to_ras @ np.array(image.GetOrigin(), float))
    node.CreateDefaultDisplayNodes()
    return node


def run_error(worker) -> str:
    """The failed run's one-line message, without the command's 'osteobmd: ' prefix."""
    error = worker.status.error
    return error[len("osteobmd: "):] if error.startswith("osteobmd: ") else error


# --------------------------------------------------------------------------- the session


class MeasurementSession:
    """The panel's state and actions on one scene.

    ``python_executable`` runs ``-m osteobmd run`` (PythonSlicer in Slicer); ``weights_dir``
    is passed as ``--weights`` (None: the package's default); ``work_dir`` holds the scratch
    folder of runs made outside a case list (None: the system's temporary folder);
    ``pythonpath`` is the folder holding the ``osteobmd`` package (None: where it was imported
    from); ``table_titles`` are the BMD table's shown column titles.
    """

    def __init__(self, scene, python_executable: Optional[str], weights_dir: Optional[str] = None,
                 work_dir: Optional[str] = None, pythonpath: Optional[str] = None,
                 table_titles: Optional[dict] = None):
        self.scene = scene
        self.python_executable = python_executable
        self.weights_dir = weights_dir
        self.work_dir = work_dir
        self.pythonpath = pythonpath
        self.table_titles = table_titles
        self.result_nodes = None  # ResultNodes (osteobmd.scene.output_folder) of the case shown
        self.case_list = None  # case_list.CaseList, when the reader opened one
        self.masks_edited = False  # the segmentation changed since the last measurement
        self._case_nodes = []
        self._temp_dir = None
        self._run_ct_path = None
        self._run_volume_node = None
        self._observed = None  # (vtkSegmentation, observer tag)

    # ---------------------------------------------------------------- run folders

    def scratch_dir(self) -> str:
        if self._temp_dir is None or not os.path.isdir(self._temp_dir):
            self._temp_dir = tempfile.mkdtemp(prefix="OsteoBMD-", dir=self.work_dir)
        return self._temp_dir

    def output_dir(self, case_id: str, kind: str) -> str:
        if self.case_list is not None:
            return str(self.case_list.output_dir(self.case_list.current, kind))
        return os.path.join(self.scratch_dir(), case_id, kind)

    def _write_ct(self, volume_node) -> str:
        """The CT the worker reads: the node as the scene holds it (so mask and CT grids agree)."""
        path = os.path.join(self.scratch_dir(), INPUT_CT)
        masks.write_volume(self.scene, volume_node, path, compress=False)
        self._run_ct_path = path
        return path

    def _start_worker(self, ct_path: str, out_dir: str, mask_path: Optional[str], device: str,
                      vertebrae: Sequence[str], case_id: str, kind: str):
        """Run into '<out_dir>.running'; commit_run() moves it into place only when it succeeded,
        so a failed or cancelled run leaves the earlier results as they were."""
        if not self.python_executable:
            self._remove_run_ct()
            raise SessionError(NO_PYTHON)
        run_dir = out_dir + ".running"
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(os.path.dirname(out_dir), exist_ok=True)
        worker = workerlib.PipelineWorker(
            self.python_executable, ct_path, run_dir, mask_path=mask_path, device=device, vertebrae=vertebrae,
            overwrite=True, weights_dir=self.weights_dir, pythonpath=self.pythonpath,
            extra_args=["--no-scene", "--case-id", case_id])
        worker.cwd = os.path.dirname(out_dir)
        worker.final_dir = out_dir
        worker.kind = kind
        return worker.start()

    def _remove_run_ct(self) -> None:
        if self._run_ct_path and os.path.exists(self._run_ct_path):
            os.remove(self._run_ct_path)
        self._run_ct_path = None

    def commit_run(self, worker) -> str:
        """Move a finished run's folder to its final place (replacing the earlier results)."""
        self._remove_run_ct()
        final = worker.final_dir
        old = final + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(final):
            os.replace(final, old)
        os.replace(worker.out_dir, final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def discard_run(self, worker) -> None:
        self._remove_run_ct()
        shutil.rmtree(worker.out_dir, ignore_errors=True)

    # ---------------------------------------------------------------- measuring

    def start_measurement(self, volume_node, device: str = "auto", vertebrae: Sequence[str] = ("L1", "L2", "L3"),
                          case_id: str = "case"):
        """Start the pipeline on a CT node (the network segments it); returns the running worker."""
        if volume_node is None or volume_node.GetImageData() is None:
            raise SessionError(NO_VOLUME)
        if self.result_nodes is not None and self.result_nodes.ct is not volume_node:
            self.forget_results()
        self._run_volume_node = volume_node
        ct_path = self._write_ct(volume_node)
        return self._start_worker(ct_path, self.output_dir(case_id, AUTO), None, device, vertebrae, case_id, AUTO)

    def start_recompute(self, device: str = "auto", vertebrae: Sequence[str] = ("L1", "L2", "L3"),
                        case_id: str = "case"):
        """Measure again from the segmentation as it is now (the reader's corrected masks)."""
        nodes = self.result_nodes
        if nodes is None or nodes.segmentation is None:
            raise SessionError(NOT_MEASURED)
        out_dir = self.output_dir(case_id, CORRECTED)
        mask_path = os.path.join(os.path.dirname(out_dir), CORRECTED_MASK)
        masks.export_mask_file(self.scene, nodes.segmentation, nodes.ct, mask_path)
        ct_path = self._write_ct(nodes.ct)
        return self._start_worker(ct_path, out_dir, mask_path, device, vertebrae, case_id, CORRECTED)

    def finish_run(self, worker) -> str:
        """After the worker ended: discard it (FAILED, CANCELLED) or commit and load it (FINISHED,
        NO_VALID: exit 3 with results, every vertebra refused with its reasons)."""
        status = worker.status if worker.status.done else worker.poll()
        if not status.done:
            raise RuntimeError("The worker is still running; wait for it or cancel it first.")
        if status.state == workerlib.CANCELLED:
            self.discard_run(worker)
            return CANCELLED
        if status.state == workerlib.FAILED and not (status.returncode == workerlib.EXIT_NO_VALID
                                                     and worker.has_results):
            self.discard_run(worker)
            return FAILED
        self.load_measurement(self.commit_run(worker), corrected=(worker.kind == CORRECTED))
        return FINISHED if status.state == workerlib.FINISHED else NO_VALID

    def load_measurement(self, out_dir: str, corrected: bool = False, ct_node=None):
        """Read a finished run into the scene (a recompute keeps the reader's segmentation).

        The CT is the shown results' CT, else the CT of the last start_measurement(), else ``ct_node``.
        """
        ct = self.result_nodes.ct if self.result_nodes is not None else (self._run_volume_node or ct_node)
        nodes = load_results(
            self.scene, out_dir, ct_node=ct, previous=self.result_nodes,
            update_segmentation=not corrected, table_titles=self.table_titles,
        )
        self._set_results(nodes)
        self.masks_edited = False
        if nodes.segmentation is not None and not corrected:
            nodes.segmentation.CreateClosedSurfaceRepresentation()
        if self.case_list is not None:
            if corrected:
                self.case_list.set_status(self.case_list.current, case_list_lib.STATUS_CORRECTED)
            else:
                self.case_list.advance_status(self.case_list.current, case_list_lib.STATUS_MEASURED)
        return nodes

    # ---------------------------------------------------------------- results and mask edits

    def _set_results(self, nodes) -> None:
        """Show ``nodes`` and follow edits of their segmentation (Segment Editor, scripts)."""
        if self._observed is not None:
            segmentation, tag = self._observed
            segmentation.RemoveObserver(tag)
            self._observed = None
        self.result_nodes = nodes
        if nodes is not None and nodes.segmentation is not None:
            segmentation = nodes.segmentation.GetSegmentation()
            event = getattr(slicer.vtkSegmentation, "SourceRepresentationModified", None) or getattr(
                slicer.vtkSegmentation, "MasterRepresentationModified")
            self._observed = (segmentation, segmentation.AddObserver(event, self._on_masks_edited))

    def _on_masks_edited(self, caller=None, event=None) -> None:
        self.masks_edited = True

    def has_reader_masks(self) -> bool:
        """True when the segmentation holds masks the reader edited (measured or not)."""
        nodes = self.result_nodes
        return nodes is not None and (self.masks_edited or nodes.result.mask_source == "user")

    def forget_results(self) -> None:
        self._set_results(None)
        self.masks_edited = False

    def show_in_views(self) -> None:
        if self.result_nodes is not None:
            views.show_results(self.scene, self.result_nodes)

    def jump_to_vertebra(self, name: str) -> bool:
        """Centre every slice view on a vertebra's patch; False when it has none."""
        if self.result_nodes is None:
            return False
        center = views.vertebra_center_ras(self.result_nodes.result, name)
        if center is None:
            return False
        views.jump_slices_to(self.scene, center)
        return True

    # ---------------------------------------------------------------- ground truth

    def save_ground_truth(self, data_dir: str, case_id: str, overwrite: bool = False) -> str:
        """Save the shown case as DATA/<case_id>/ (refuses to replace an earlier save unless asked)."""
        nodes = self.result_nodes
        if nodes is None or nodes.segmentation is None:
            raise SessionError(NOT_MEASURED_FOR_SAVE)
        if self.masks_edited:
            raise SessionError(MASKS_NOT_RECOMPUTED)
        folder = ground_truth.save_ground_truth(
            self.scene, data_dir, case_id, nodes.ct, nodes.segmentation, result=nodes.result,
            corrected=nodes.result.mask_source == "user", overwrite=overwrite,
        )
        if self.case_list is not None:
            self.case_list.set_status(self.case_list.current, case_list_lib.STATUS_SAVED)
        return str(folder)

    # ---------------------------------------------------------------- case list

    def current_case_id(self, volume_node=None) -> str:
        """The case list's case, else the CT file's name; never a name from DICOM (patient data)."""
        if self.case_list is not None:
            return self.case_list.current.case_id
        if volume_node is None:
            return "case"
        storage = volume_node.GetStorageNode()
        file_name = storage.GetFileName() if storage is not None else None
        if file_name and not volume_node.GetAttribute("DICOM.instanceUIDs"):
            return case_list_lib.safe_case_id(os.path.basename(file_name).split(".")[0])
        # Loaded from DICOM or made in the scene: no name that could carry patient data.
        uids = volume_node.GetAttribute("DICOM.instanceUIDs") or volume_node.GetID()
        return "case-" + hashlib.sha1(uids.encode()).hexdigest()[:10]

    def open_case_list(self, source: str):
        cases = case_list_lib.CaseList.open(source)
        cases.save()
        if self.case_list is None:
            # Results made before the case list stay in the scene as they are (not a case's).
            self.forget_results()
            self._case_nodes = []
        self.case_list = cases
        return cases

    def edited_mask_path(self, case_id: str) -> str:
        return os.path.join(str(self.case_list.work_dir), case_id, EDITED_MASK)

    def keep_mask_edits(self) -> Optional[str]:
        """Before leaving a case: write masks edited since the last measurement to its folder."""
        if self.case_list is None or self.result_nodes is None or not self.masks_edited:
            return None
        path = self.edited_mask_path(self.case_list.current.case_id)
        masks.export_mask_file(self.scene, self.result_nodes.segmentation, self.result_nodes.ct, path)
        self.masks_edited = False
        return path

    def _remove_case_nodes(self) -> None:
        nodes = self.result_nodes
        if nodes is not None:
            for node in [nodes.labelmap, nodes.segmentation, nodes.table, nodes.patch_labelmap,
                         *nodes.patch_rois.values()]:
                if node is not None and node.GetScene() is not None:
                    self.scene.RemoveNode(node)
        for node in self._case_nodes:
            if node is not None and node.GetScene() is not None:
                self.scene.RemoveNode(node)
        self._case_nodes = []
        self.forget_results()

    def load_current_case(self) -> Tuple[object, bool]:
        """Replace the previous case's nodes by the current case's CT and latest results
        (corrected, else auto) and its kept mask edits; returns (CT node, edits restored)."""
        entry = self.case_list.current
        self._remove_case_nodes()
        if os.path.isdir(entry.ct_path):  # a DICOM series: read as the pipeline reads it
            from osteobmd.io import read_ct

            volume_node = volume_from_image(self.scene, read_ct(entry.ct_path), entry.case_id)
        else:
            volume_node = load_ct(self.scene, entry.ct_path, name=entry.case_id, method_window=False)
        self._case_nodes.append(volume_node)
        restored = False
        for kind in (CORRECTED, AUTO):
            out_dir = str(self.case_list.output_dir(entry, kind))
            results_json = os.path.join(out_dir, RESULTS_JSON)
            if not os.path.exists(results_json):
                continue
            nodes = load_results(self.scene, out_dir, ct_node=volume_node, table_titles=self.table_titles)
            self._set_results(nodes)
            edited = self.edited_mask_path(entry.case_id)
            if os.path.exists(edited) and os.path.getmtime(edited) > os.path.getmtime(results_json):
                labelmap = load_labelmap(self.scene, edited, entry.case_id + " edited")
                labelmap_to_segmentation(self.scene, labelmap, volume_node, segmentation_node=nodes.segmentation)
                self.scene.RemoveNode(labelmap)
                self.masks_edited = True
                restored = True
            break
        return volume_node, restored
