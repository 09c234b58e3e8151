"""One reader's measurement session in an MRML scene (Qt-free; runs in Slicer and in slicer-core).

``MeasurementSession`` is what the panel does, minus the panel: it writes the CT node for
the background worker (``osteobmd run`` in another Python), runs into a scratch folder that
replaces the earlier results only when the run succeeded, reads the results into the scene,
follows the reader's mask edits, saves ground truth and walks a case list. It talks to the
scene, nodes and storage nodes only (never ``slicer.app``, ``slicer.util`` or Qt), so the
same code runs in Slicer (``OsteoBMDLogic`` builds it with Slicer's scene and PythonSlicer)
and in the tests (a slicer-core scene and ``sys.executable``).

The run in progress is the session's (``worker``): ``poll_run()`` reports its progress and,
once it ended, commits or discards it. The run's choices are an ``osteobmd.options.RunOptions``
(``run_options()``), which become the worker's command line through ``RunOptions.to_argv()``.

Errors the reader must act on raise ``SessionError``; its ``code`` lets the panel show the
text in the reader's language (``texts.error_text``).
"""

import dataclasses
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

import numpy as np
import vtk

import slicer
from osteobmd.config import DEFAULT_MEAN_VERTEBRAE
from osteobmd.results import RESULTS_JSON
from osteobmd.scene.output_folder import load_results
from osteobmd.scene.segmentation import labelmap_to_segmentation
from osteobmd.scene.volumes import ijk_to_ras_matrix, load_ct, load_labelmap

from . import case_list as case_list_lib
from . import ground_truth, masks, views
from . import worker as workerlib
from .worker import CANCELLED, FAILED, FINISHED  # noqa: F401 (the run states, also the outcomes below)

if TYPE_CHECKING:  # imported on use: parsing options needs the packages the panel installs first
    from osteobmd.options import RunOptions

# SessionError codes.
NO_VOLUME = "no_volume"
NO_PYTHON = "no_python"
NOT_MEASURED = "not_measured"
NOT_MEASURED_FOR_SAVE = "not_measured_for_save"
MASKS_NOT_RECOMPUTED = "masks_not_recomputed"
NO_MEAN_VERTEBRA = "no_mean_vertebra"
MESSAGES = {
    NO_VOLUME: "Select a CT volume first.",
    NO_PYTHON: "The Python that runs the measurement was not found; reinstall Slicer.",
    NOT_MEASURED: "Measure the case first (Apply), then edit the masks.",
    NOT_MEASURED_FOR_SAVE: "Measure the case first (Apply), check or correct the masks, then save.",
    MASKS_NOT_RECOMPUTED: "The masks were edited after the last measurement: press Recompute BMD first, "
                          "so that the saved BMD matches the saved masks.",
    NO_MEAN_VERTEBRA: "Tick at least one vertebra for the mean BMD.",
}

# What finish_run() made of a run that ended: the worker's state (worker.py), refined.
#   FINISHED   results committed and loaded
#   NO_VALID   results committed and loaded, but no vertebra passed the checks (a FAILED exit 3)
#   FAILED     discarded; the earlier results are as they were
#   CANCELLED  discarded
NO_VALID = "no_valid"

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


@dataclass
class RunUpdate:
    """What poll_run() reports: progress, new log lines and, once the run ended, its outcome."""

    percent: int
    stage: str
    message: str
    log_lines: List[str] = field(default_factory=list)
    outcome: Optional[str] = None  # FINISHED, NO_VALID, FAILED or CANCELLED once the run ended
    error: str = ""  # FAILED: the run's one-line message


@dataclass
class CaseOpened:
    """A case of the case list, loaded: its CT node and what happened to the reader's mask edits."""

    ct: object
    edits_restored: bool  # the case's kept edits are back in its segmentation, to be recomputed
    edits_kept: Optional[str] = None  # where the edits of the case left were written
    list_opened: bool = False  # the case list was opened just now (open_cases)


# --------------------------------------------------------------------------- helpers


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
    node.SetIJKToRASMatrix(ijk_to_ras_matrix(image))
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
        self.worker = None  # the run in progress (worker.PipelineWorker), until poll_run() ends it

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

    def _start_worker(self, ct_path: str, out_dir: str, options: "RunOptions", kind: str):
        """Run into '<out_dir>.running'; commit_run() moves it into place only when it succeeded,
        so a failed or cancelled run leaves the earlier results as they were."""
        if not self.python_executable:
            self._remove_run_ct()
            raise SessionError(NO_PYTHON)
        run_dir = out_dir + ".running"
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(os.path.dirname(out_dir), exist_ok=True)
        worker = workerlib.PipelineWorker(self.python_executable, ct_path, run_dir, options, pythonpath=self.pythonpath)
        worker.cwd = os.path.dirname(out_dir)
        worker.final_dir = out_dir
        worker.kind = kind
        self.worker = worker.start()
        return worker

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

    def run_options(self, case_id: str = "case", device: str = "auto",
                    vertebrae: Optional[Sequence[str]] = DEFAULT_MEAN_VERTEBRAE, calibration: str = "none",
                    mask: Optional[str] = None) -> "RunOptions":
        """The options of a worker run from the reader's choices: a bad value fails here
        (InputError, or SessionError when no vertebra is ticked for the mean), before any run."""
        from osteobmd.options import RunOptions

        if vertebrae is not None and not list(vertebrae):
            raise SessionError(NO_MEAN_VERTEBRA)
        return RunOptions.parse(device=device, vertebrae=vertebrae, calibration=calibration, mask=mask,
                                weights=self.weights_dir, write_scene=False, overwrite=True, case_id=case_id)

    def start_measurement(self, volume_node, options: Optional["RunOptions"] = None, **choices):
        """Start the pipeline on a CT node (the network segments it); returns the running worker.

        ``options`` come from run_options() (the panel's parameter node); without them the
        keywords ``choices`` are run_options()'s.
        """
        if volume_node is None or volume_node.GetImageData() is None:
            raise SessionError(NO_VOLUME)
        options = options or self.run_options(**choices)
        self.keep_mask_edits()  # a case list's case: the reader's edits stay in its folder
        if self.result_nodes is not None and self.result_nodes.ct is not volume_node:
            self.forget_results()
        self._run_volume_node = volume_node
        ct_path = self._write_ct(volume_node)
        return self._start_worker(ct_path, self.output_dir(options.case_id, AUTO), options, AUTO)

    def start_recompute(self, options: Optional["RunOptions"] = None, **choices):
        """Measure again from the segmentation as it is now (the reader's corrected masks)."""
        nodes = self.result_nodes
        if nodes is None or nodes.segmentation is None:
            raise SessionError(NOT_MEASURED)
        options = options or self.run_options(**choices)
        out_dir = self.output_dir(options.case_id, CORRECTED)
        mask_path = os.path.join(os.path.dirname(out_dir), CORRECTED_MASK)
        masks.export_mask_file(self.scene, nodes.segmentation, nodes.ct, mask_path)
        ct_path = self._write_ct(nodes.ct)
        return self._start_worker(ct_path, out_dir, dataclasses.replace(options, mask_path=mask_path), CORRECTED)

    @property
    def running(self) -> bool:
        return self.worker is not None and not self.worker.status.done

    def cancel_run(self) -> None:
        """End the run in progress (its process tree); the next poll_run() discards it."""
        if self.worker is not None:
            self.worker.cancel()

    def poll_run(self) -> Optional["RunUpdate"]:
        """What the run in progress reported since the last call (None: no run). Once it
        ended, its outcome: committed and loaded, or discarded (see finish_run)."""
        worker = self.worker
        if worker is None:
            return None
        status = worker.poll()
        update = RunUpdate(percent=int(round(100 * status.fraction)), stage=status.stage, message=status.message,
                           log_lines=list(worker.log))
        worker.log.clear()
        if status.done:
            self.worker = None
            update.outcome = self.finish_run(worker)
            update.error = run_error(worker) if update.outcome == FAILED else ""
        return update

    def finish_run(self, worker) -> str:
        """After the worker ended: discard it (FAILED, CANCELLED) or commit and load it (FINISHED,
        NO_VALID: exit 3 with results, every vertebra refused with its reasons)."""
        status = worker.status if worker.status.done else worker.poll()
        if not status.done:
            raise RuntimeError("The worker is still running; wait for it or cancel it first.")
        if status.state == CANCELLED:
            self.discard_run(worker)
            return CANCELLED
        if status.state == FAILED and not (status.returncode == workerlib.EXIT_NO_VALID and worker.has_results):
            self.discard_run(worker)
            return FAILED
        self.load_measurement(self.commit_run(worker), corrected=(worker.kind == CORRECTED))
        return FINISHED if status.state == FINISHED else NO_VALID

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

    def ground_truth_case_id(self, typed: str, volume_node=None) -> str:
        """The case id the reader typed, else the current case's."""
        return (typed or "").strip() or self.current_case_id(volume_node)

    def save_ground_truth(self, data_dir: str, case_id: str, overwrite: bool = False,
                          replace: Optional[Callable[[str], bool]] = None) -> Optional[str]:
        """Save the shown case as DATA/<case_id>/. An earlier save is replaced only with
        ``overwrite``, or when ``replace(case_id)`` (the reader, asked) says so; else
        GroundTruthExistsError, or None when ``replace`` said no."""
        nodes = self.result_nodes
        if nodes is None or nodes.segmentation is None:
            raise SessionError(NOT_MEASURED_FOR_SAVE)
        if self.masks_edited:
            raise SessionError(MASKS_NOT_RECOMPUTED)
        if not overwrite and replace is not None and ground_truth.ground_truth_exists(data_dir, case_id):
            if not replace(case_id):
                return None
            overwrite = True
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
        """Open a folder or CSV of CTs (the current case is not loaded: see open_cases)."""
        cases = case_list_lib.CaseList.open(source)
        cases.save()
        if self.case_list is None:
            # Results made before the case list stay in the scene as they are (not a case's).
            self.forget_results()
            self._case_nodes = []
        self.case_list = cases
        return cases

    def open_cases(self, source: str) -> "CaseOpened":
        """Leave the case shown (its mask edits kept), open a case list and load its current case."""
        kept = self.keep_mask_edits()
        self.open_case_list(source)
        return CaseOpened(*self.load_current_case(), edits_kept=kept, list_opened=True)

    def go_to_case(self, index: int) -> Optional["CaseOpened"]:
        """Leave the case shown (its mask edits kept) for the case list's case ``index``."""
        if self.case_list is None:
            return None
        kept = self.keep_mask_edits()
        self.case_list.go_to(index)
        return CaseOpened(*self.load_current_case(), edits_kept=kept)

    def step_case(self, step: int) -> Optional["CaseOpened"]:
        """To the next (+1) or previous (-1) case of the case list."""
        return None if self.case_list is None else self.go_to_case(self.case_list.current_index + step)

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
