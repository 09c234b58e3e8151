"""OsteoBMDLib.session.MeasurementSession on real slicer-core scenes, with real worker processes.

What runs here without trained weights:
- the real ``osteobmd run`` command line started by the session (it fails on the missing
  weights: the failed run is discarded and the earlier results stay);
- a stand-in for ``python -m osteobmd run`` (``fake_cli`` below, started as the session's
  Python, through the same worker, progress protocol and exit codes) that writes what the
  pipeline writes (results.json, labels.nrrd) from known toy labels instead of inference:
  it drives commit, cancel, no-valid runs, mask edits and recompute, ground truth and the
  case list end to end;
- the helpers (requirements, weights folder, volumes from SimpleITK images, case ids).

The real pipeline through the session needs trained weights: it uses conftest's
``pipeline_output`` fixture (the shipped weights on the sample CT).
"""

import argparse
import ast
import hashlib
import json
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import MODULE_DIR, SAMPLE_CT

TEST_DIR = Path(__file__).resolve().parent
REAL_DICOM = TEST_DIR.parents[2] / "shared" / "data" / "real_ct_totalsegmentator_example" / \
    "dicom_series_thorax_no_lumbar"
FAKE_MODE = "OSTEOBMD_FAKE_MODE"  # ok | no_valid | slow
FAKE_LABELS = "OSTEOBMD_FAKE_LABELS"  # the label map the stand-in "segments"


# --------------------------------------------------------------------------- the stand-in CLI


def write_fake_output(ct_path, out_dir, labels_path, case_id="case", mask_path=None,
                      mean_vertebrae=("L1", "L2", "L3"), no_valid=False):
    """What `osteobmd run` writes (labels.nrrd, results.json), with the toy labels instead of
    the network's and a BMD made from the patch's mean HU instead of the regressor's."""
    import SimpleITK as sitk

    from osteobmd import patches
    from osteobmd.config import LABEL_OF, VERTEBRA_NAMES, classify_bmd
    from osteobmd.io import read_ct, read_labelmap
    from osteobmd.results import LABELS_NRRD, RESULTS_JSON, CaseResult, VertebraResult

    ct = read_ct(ct_path)
    labels = read_labelmap(mask_path or labels_path, ct)
    centers = patches.vertebra_centers(labels)
    vertebrae = []
    for name in VERTEBRA_NAMES:
        if name not in centers:
            continue
        patch = patches.extract_patch(ct, centers[name], labels=labels, label_value=LABEL_OF[name])
        vertebrae.append(VertebraResult(
            name=name, bmd_mg_cm3=None if no_valid else round(0.8 * patch.info.mean_hu + 10.0, 3),
            center_lps_mm=[float(c) for c in centers[name]], patch=patch.info, valid=not no_valid,
            reasons=["made invalid by the test"] if no_valid else [], from_corrected_mask=mask_path is not None))
    used = [v for v in vertebrae if v.valid and v.name in mean_vertebrae]
    mean = float(np.mean([v.bmd_mg_cm3 for v in used])) if used else None
    result = CaseResult(case=case_id, vertebrae=vertebrae, mean_bmd_mg_cm3=mean,
                        mean_vertebrae=[v.name for v in used], classification=classify_bmd(mean) if used else None,
                        valid=bool(used), mask_source="user" if mask_path else "network")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(labels, str(out_dir / LABELS_NRRD), True)
    result.write_json(out_dir / RESULTS_JSON)
    return result


def fake_cli(argv) -> int:
    """`python -m osteobmd run ...` as the session calls it, without inference (see the top)."""
    import SimpleITK as sitk

    from osteobmd.options import RunOptions

    # What the worker starts: `-m osteobmd run CT --out OUT --progress json` and the options'
    # to_argv(), which parse back as the real CLI parses them.
    assert argv[:3] == ["-m", "osteobmd", "run"] and argv[4] == "--out" and argv[6:8] == ["--progress", "json"], argv
    args = argparse.Namespace(ct=argv[3], out=argv[5])
    options = RunOptions.from_argv(argv[8:])
    args.case_id, args.mask = options.case_id, None if options.mask_path is None else str(options.mask_path)
    args.vertebrae = ",".join(options.mean_vertebrae)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def progress(stage, fraction, message):
        sys.stderr.write(json.dumps({"stage": stage, "fraction": fraction, "message": message}) + "\n")
        sys.stderr.flush()

    progress("read", 0.1, "reading the CT")
    ct = sitk.ReadImage(args.ct)
    # What the worker received, for the test to compare with the scene's node.
    (out / "received.json").write_text(json.dumps({
        "argv": argv, "cwd": os.getcwd(), "ct_path": args.ct, "size": list(ct.GetSize()),
        "origin": list(ct.GetOrigin()), "spacing": list(ct.GetSpacing()), "direction": list(ct.GetDirection()),
        "sha256": hashlib.sha256(sitk.GetArrayViewFromImage(ct).tobytes()).hexdigest(),
    }))
    mode = os.environ.get(FAKE_MODE, "ok")
    if mode == "slow":
        for i in range(100000):
            progress("segmentation", min(0.99, 0.2 + i / 1000), f"slice {i}")
            time.sleep(0.05)
    print("osteobmd stand-in: measuring", flush=True)
    write_fake_output(args.ct, out, os.environ[FAKE_LABELS], case_id=args.case_id, mask_path=args.mask,
                      mean_vertebrae=tuple(args.vertebrae.split(",")), no_valid=(mode == "no_valid"))
    progress("outputs", 1.0, "done")
    if mode == "no_valid":
        sys.stderr.write("osteobmd: No vertebra passed the validity checks; see results.json for the reasons.\n")
        return 3
    return 0


if __name__ == "__main__":  # the stand-in's entry point (see fake_python)
    sys.exit(fake_cli(sys.argv[1:]))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def scene():
    """A fresh slicer-core scene with the application logic a scene has inside Slicer."""
    pytest.importorskip("slicer", reason="slicer-core (the 'slicer' extra) is not installed")
    from osteobmd.scene.bare_scene import new_scene

    context = new_scene()
    yield context.scene
    context.close()


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    """A small toy CT and its L1-L4 labels on disk (LPS): (ct path, labels path)."""
    import SimpleITK as sitk

    from toy_ct import make_toy_ct

    folder = tmp_path_factory.mktemp("toy")
    ct, labels = make_toy_ct(spacing=(1.6, 1.6, 2.0))
    sitk.WriteImage(sitk.Cast(ct, sitk.sitkInt16), str(folder / "toy_ct.nrrd"), True)
    sitk.WriteImage(labels, str(folder / "toy_labels.nrrd"), True)
    return folder / "toy_ct.nrrd", folder / "toy_labels.nrrd"


@pytest.fixture
def fake_python(tmp_path, toy_files, monkeypatch):
    """An executable that the session starts as its Python: `<it> -m osteobmd run ...` runs fake_cli."""
    path = tmp_path / "fake_python"
    path.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.path[:0] = [{str(MODULE_DIR)!r}, {str(TEST_DIR)!r}]\n"
                    f"runpy.run_path({str(TEST_DIR / 'test_session.py')!r}, run_name='__main__')\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(FAKE_LABELS, str(toy_files[1]))
    monkeypatch.setenv(FAKE_MODE, "ok")
    return str(path)


@pytest.fixture
def make_session(scene, tmp_path):
    from OsteoBMDLib.session import MeasurementSession

    def make(python=sys.executable, weights_dir=None):
        return MeasurementSession(scene, python, weights_dir=weights_dir, work_dir=str(tmp_path),
                                  pythonpath=str(MODULE_DIR), table_titles={"BMD": "BMD (mg/cm³)"})

    return make


def load_ct(scene, path, name="CT"):
    from osteobmd.scene.volumes import load_ct as load_ct_file

    return load_ct_file(scene, str(path), name=name)


def run(session, worker, timeout=300.0) -> str:
    """Wait for the worker, then let the session commit or discard it."""
    status = worker.wait(timeout=timeout)
    assert status.done, status
    return session.finish_run(worker)


def node_array(volume_node) -> np.ndarray:
    from vtk.util import numpy_support

    image = volume_node.GetImageData()
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0]).copy()


def segment_voxels(scene, nodes, name) -> int:
    from OsteoBMDLib import masks
    from osteobmd.config import LABEL_OF

    labelmap = masks.export_vertebra_labelmap(scene, nodes.segmentation, nodes.ct)
    try:
        return int((node_array(labelmap) == LABEL_OF[name]).sum())
    finally:
        scene.RemoveNode(labelmap)


def erase_upper_half(segmentation_node, segment_id: str) -> int:
    """Edit a segment through the MRML API as the Segment Editor's eraser would; returns voxels left."""
    import slicer
    from vtk.util import numpy_support

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    image = slicer.vtkOrientedImageData()
    assert logic.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segment_id, image)
    dims = image.GetDimensions()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    label_value = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    mask = (values == label_value).astype(np.uint8)
    ks = np.nonzero(mask.any(axis=(1, 2)))[0]
    mask[(ks.min() + ks.max() + 1) // 2:] = 0
    edited = slicer.vtkOrientedImageData()
    edited.DeepCopy(image)
    edited.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask.ravel(), deep=True))
    assert logic.SetBinaryLabelmapToSegment(edited, segmentation_node, segment_id, logic.MODE_REPLACE)
    return int(mask.sum())


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- run folders


def test_scratch_folder_and_output_folders(make_session, tmp_path):
    session = make_session()
    scratch = session.scratch_dir()
    assert Path(scratch).parent == tmp_path and Path(scratch).name.startswith("OsteoBMD-")
    assert session.scratch_dir() == scratch  # one scratch folder per session
    assert session.output_dir("c1", "auto") == os.path.join(scratch, "c1", "auto")
    os.rmdir(scratch)
    again = session.scratch_dir()  # removed behind the session's back: made again
    assert os.path.isdir(again) and again != scratch


def test_measure_commits_the_run_and_loads_it(make_session, fake_python, toy_files, scene, tmp_path):
    import SimpleITK as sitk
    import slicer

    from osteobmd.config import VERTEBRA_NAMES
    from osteobmd.results import RESULTS_JSON
    from OsteoBMDLib import session as sessionlib

    weights = tmp_path / "weights"  # the options refuse a weights folder that does not exist
    weights.mkdir()
    session = make_session(python=fake_python, weights_dir=str(weights))
    ct = load_ct(scene, toy_files[0])
    worker = session.start_measurement(ct, device="cpu", vertebrae=["L1", "L2"], case_id="toy")
    final = session.output_dir("toy", "auto")
    assert worker.out_dir == final + ".running" and worker.final_dir == final and worker.kind == "auto"
    assert worker.command[1:3] == ["-m", "osteobmd"]
    for flag in (["--device", "cpu"], ["--vertebrae", "L1,L2"], ["--weights", str(weights)],
                 ["--case-id", "toy"], ["--no-scene"], ["--overwrite"]):
        assert " ".join(flag) in " ".join(worker.command)
    input_ct = os.path.join(session.scratch_dir(), sessionlib.INPUT_CT)
    assert os.path.exists(input_ct)
    assert run(session, worker) == sessionlib.FINISHED
    assert worker.status.fraction == 1.0 and any("stand-in" in line for line in worker.log)

    # Committed: the run folder is the final folder; the CT written for the worker is gone.
    assert not os.path.exists(final + ".running") and os.path.exists(os.path.join(final, RESULTS_JSON))
    assert not os.path.exists(input_ct)
    received = json.loads(Path(final, "received.json").read_text(encoding="utf-8"))
    assert received["cwd"] == os.path.dirname(final)
    # The worker read the node's voxels on the node's grid (the file the CT came from).
    original = sitk.ReadImage(str(toy_files[0]))
    assert received["sha256"] == hashlib.sha256(sitk.GetArrayViewFromImage(original).tobytes()).hexdigest()
    assert np.allclose(received["origin"], original.GetOrigin(), atol=1e-4)
    assert np.allclose(received["direction"], original.GetDirection(), atol=1e-6)

    nodes = session.result_nodes
    assert nodes.ct is ct and nodes.output_dir == final
    segmentation = nodes.segmentation.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == \
        list(VERTEBRA_NAMES)
    assert segmentation.ContainsRepresentation(slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName())
    assert nodes.table.GetNumberOfRows() == len(nodes.result.vertebrae) + 2  # + the mean and the level names
    assert nodes.table.GetColumnTitle("BMD") == "BMD (mg/cm³)"  # the titles given to the session
    assert nodes.result.mean_vertebrae == ["L1", "L2"]
    assert not session.masks_edited and not session.has_reader_masks()

    # Apply again on the same CT: the same nodes are refilled, the earlier folder replaced.
    first_table, first_segmentation = nodes.table, nodes.segmentation
    (Path(final) / "stale.txt").write_text("from the first run")
    assert run(session, session.start_measurement(ct, case_id="toy")) == sessionlib.FINISHED
    assert session.result_nodes.table is first_table and session.result_nodes.segmentation is first_segmentation
    assert not (Path(final) / "stale.txt").exists() and not os.path.exists(final + ".old")
    assert not session.masks_edited  # refilling the segmentation is not an edit
    assert session.result_nodes.result.mean_vertebrae == ["L1", "L2", "L3"]

    # Another CT: the earlier results are no longer shown (a new set of nodes is made).
    other = load_ct(scene, toy_files[0], name="other")
    worker = session.start_measurement(other, case_id="other")
    assert session.result_nodes is None
    assert run(session, worker) == sessionlib.FINISHED
    assert session.result_nodes.ct is other and session.result_nodes.table is not first_table


def test_failed_real_run_is_discarded_and_the_earlier_results_stay(make_session, fake_python, toy_files, scene,
                                                                   tmp_path):
    """The REAL `osteobmd run`, on a weights folder without weights: it fails, nothing changes."""
    from OsteoBMDLib import session as sessionlib
    from OsteoBMDLib import worker as workerlib

    session = make_session(python=fake_python)
    ct = load_ct(scene, toy_files[0])
    assert run(session, session.start_measurement(ct, case_id="toy")) == sessionlib.FINISHED
    final = Path(session.output_dir("toy", "auto"))
    before, nodes = digest(final), session.result_nodes
    table_rows = nodes.table.GetNumberOfRows()

    empty = tmp_path / "no_weights"
    empty.mkdir()
    session.python_executable, session.weights_dir = sys.executable, str(empty)
    worker = session.start_measurement(ct, device="cpu", case_id="toy")
    assert run(session, worker) == sessionlib.FAILED
    assert worker.status.returncode == workerlib.EXIT_INPUT
    message = sessionlib.run_error(worker)
    assert "weights" in message and not message.startswith("osteobmd:") and "Traceback" not in message
    assert not os.path.exists(str(final) + ".running")
    assert not os.path.exists(os.path.join(session.scratch_dir(), sessionlib.INPUT_CT))
    assert digest(final) == before  # the earlier results, as they were
    assert session.result_nodes is nodes and nodes.table.GetNumberOfRows() == table_rows


def test_cancelled_run_is_discarded(make_session, fake_python, toy_files, scene, monkeypatch):
    from OsteoBMDLib import session as sessionlib

    session = make_session(python=fake_python)
    ct = load_ct(scene, toy_files[0])
    monkeypatch.setenv(FAKE_MODE, "slow")
    worker = session.start_measurement(ct, case_id="toy")
    with pytest.raises(RuntimeError, match="still running"):
        session.finish_run(worker)
    deadline = time.time() + 120
    while worker.poll().fraction < 0.2 and not worker.status.done and time.time() < deadline:
        time.sleep(0.05)
    assert worker.status.running and os.path.isdir(worker.out_dir)
    worker.cancel()
    assert session.finish_run(worker) == sessionlib.CANCELLED
    assert not os.path.exists(worker.out_dir) and not os.path.exists(worker.final_dir)
    assert not os.path.exists(os.path.join(session.scratch_dir(), sessionlib.INPUT_CT))
    assert session.result_nodes is None


def test_run_without_valid_vertebra_is_loaded_with_its_reasons(make_session, fake_python, toy_files, scene,
                                                              monkeypatch):
    from OsteoBMDLib import session as sessionlib
    from OsteoBMDLib import worker as workerlib

    session = make_session(python=fake_python)
    monkeypatch.setenv(FAKE_MODE, "no_valid")
    worker = session.start_measurement(load_ct(scene, toy_files[0]), case_id="toy")
    assert run(session, worker) == sessionlib.NO_VALID
    assert worker.status.state == workerlib.FAILED and worker.status.returncode == workerlib.EXIT_NO_VALID
    result = session.result_nodes.result
    assert result.mean_bmd_mg_cm3 is None and all(v.reasons for v in result.vertebrae)
    assert os.path.exists(os.path.join(worker.final_dir, "results.json"))


def test_errors_the_reader_can_act_on(make_session, toy_files, scene, tmp_path):
    from OsteoBMDLib import session as sessionlib
    from OsteoBMDLib.session import SessionError

    session = make_session()
    for call, code in ((lambda: session.start_measurement(None), sessionlib.NO_VOLUME),
                       (lambda: session.start_measurement(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")),
                        sessionlib.NO_VOLUME),
                       (lambda: session.start_recompute(), sessionlib.NOT_MEASURED),
                       (lambda: session.save_ground_truth(str(tmp_path / "DATA"), "x"),
                        sessionlib.NOT_MEASURED_FOR_SAVE)):
        with pytest.raises(SessionError) as caught:
            call()
        assert caught.value.code == code and str(caught.value) == sessionlib.MESSAGES[code]
    assert not (tmp_path / "DATA").exists()

    no_python = make_session(python=None)
    with pytest.raises(SessionError) as caught:
        no_python.start_measurement(load_ct(scene, toy_files[0]))
    assert caught.value.code == sessionlib.NO_PYTHON
    scratch = Path(no_python.scratch_dir())
    assert list(scratch.iterdir()) == []  # neither the CT for the worker nor a run folder is left


def test_every_session_error_has_a_translated_text_in_the_module():
    """texts.error_text gives each SessionError code a _() text (the reader's language)."""
    from OsteoBMDLib import session as sessionlib

    codes = {name for name, value in vars(sessionlib).items()
             if isinstance(value, str) and value in sessionlib.MESSAGES}
    tree = ast.parse((MODULE_DIR / "OsteoBMDLib" / "texts.py").read_text(encoding="utf-8"))
    method = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "error_text")
    texts = next(n for n in ast.walk(method) if isinstance(n, ast.Dict))
    keys = {k.attr for k in texts.keys if isinstance(k, ast.Attribute)}
    assert keys == codes
    assert all(isinstance(v, ast.Call) and getattr(v.func, "id", "") == "_" for v in texts.values)


# --------------------------------------------------------------------------- mask edits, recompute, ground truth


def test_edit_recompute_and_save_ground_truth(make_session, fake_python, toy_files, scene, tmp_path):
    import SimpleITK as sitk

    from osteobmd.config import LABEL_OF
    from OsteoBMDLib import ground_truth
    from OsteoBMDLib import session as sessionlib
    from OsteoBMDLib.session import SessionError

    session = make_session(python=fake_python)
    ct = load_ct(scene, toy_files[0])
    assert run(session, session.start_measurement(ct, case_id="toy")) == sessionlib.FINISHED
    nodes = session.result_nodes
    before_l2 = segment_voxels(scene, nodes, "L2")

    # An edit of the segmentation (as the Segment Editor makes it) is noticed.
    left = erase_upper_half(nodes.segmentation, "L2")
    assert 0 < left < before_l2
    assert session.masks_edited and session.has_reader_masks()
    data = tmp_path / "DATA"
    with pytest.raises(SessionError) as caught:
        session.save_ground_truth(str(data), "toy")
    assert caught.value.code == sessionlib.MASKS_NOT_RECOMPUTED and not data.exists()

    # Recompute measures the edited masks: the mask file the worker got is the segmentation.
    worker = session.start_recompute(device="cpu", vertebrae=["L1", "L2", "L3"], case_id="toy")
    assert worker.kind == "corrected" and worker.final_dir == session.output_dir("toy", "corrected")
    mask_path = os.path.join(os.path.dirname(worker.final_dir), sessionlib.CORRECTED_MASK)
    assert worker.mask_path == mask_path
    mask = sitk.GetArrayFromImage(sitk.ReadImage(mask_path))
    assert int((mask == LABEL_OF["L2"]).sum()) == left
    assert run(session, worker) == sessionlib.FINISHED
    after = session.result_nodes
    assert after.segmentation is nodes.segmentation and after.table is nodes.table  # the reader's segmentation kept
    assert segment_voxels(scene, after, "L2") == left
    assert after.result.mask_source == "user" and all(v.from_corrected_mask for v in after.result.vertebrae)
    assert all(after.table.GetCellText(r, 6) == "yes" for r in range(after.table.GetNumberOfRows()))
    assert not session.masks_edited and session.has_reader_masks()  # measured, and the reader's

    # Saved; a second save refuses and leaves the first untouched; overwrite replaces it.
    folder = Path(session.save_ground_truth(str(data), "toy"))
    assert folder == data / "toy"
    saved = ground_truth.read_ground_truth(folder)
    assert saved["case"]["corrected"] is True and saved["case"]["mask_source"] == "user"
    assert int((sitk.GetArrayFromImage(sitk.ReadImage(str(saved["labels"]))) == LABEL_OF["L2"]).sum()) == left
    assert saved["bmd"] == {v.name: pytest.approx(v.bmd_mg_cm3, abs=0.01) for v in after.result.vertebrae}
    first = digest(folder)
    with pytest.raises(ground_truth.GroundTruthExistsError):
        session.save_ground_truth(str(data), "toy")
    assert digest(folder) == first and [p.name for p in data.iterdir()] == ["toy"]
    assert Path(session.save_ground_truth(str(data), "toy", overwrite=True)) == folder
    assert [p.name for p in data.iterdir()] == ["toy"]

    # Results forgotten (scene closed): edits of the old segmentation no longer count.
    session.forget_results()
    erase_upper_half(nodes.segmentation, "L1")
    assert not session.masks_edited and not session.has_reader_masks()


def test_views_jump_to_a_vertebra(make_session, fake_python, toy_files, scene):
    from OsteoBMDLib import views

    session = make_session(python=fake_python)
    assert not session.jump_to_vertebra("L2")
    session.show_in_views()  # nothing to show: no error
    ct = load_ct(scene, toy_files[0])
    run(session, session.start_measurement(ct, case_id="toy"))
    slices = {}
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        slices[name] = scene.AddNewNodeByClass("vtkMRMLSliceNode")
        slices[name].SetLayoutName(name)
        slices[name].SetOrientation(orientation)
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(name)
    session.show_in_views()
    composite = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetBackgroundVolumeID() == ct.GetID()
    assert session.jump_to_vertebra("L3")
    target = views.vertebra_center_ras(session.result_nodes.result, "L3")
    assert slices["Red"].GetSliceToRAS().GetElement(2, 3) == pytest.approx(target[2], abs=1e-3)
    mean_row = session.result_nodes.table.GetCellText(session.result_nodes.table.GetNumberOfRows() - 2, 0)
    assert not session.jump_to_vertebra(mean_row)  # the mean row has no vertebra


# --------------------------------------------------------------------------- case list


@pytest.fixture
def two_cases(tmp_path, toy_files):
    """A folder of two CTs, a.nrrd and b.nrrd (the toy CT twice)."""
    import shutil

    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(toy_files[0], cases / "a.nrrd")
    shutil.copy(toy_files[0], cases / "b.nrrd")
    return cases


def test_case_list_walk_keeps_edits_and_statuses(make_session, fake_python, toy_files, scene, two_cases):
    import SimpleITK as sitk

    from osteobmd.config import LABEL_OF
    from OsteoBMDLib import case_list
    from OsteoBMDLib import session as sessionlib

    cases = two_cases
    session = make_session(python=fake_python)

    # Results made before the case list stay in the scene, no longer as the shown results.
    loose = load_ct(scene, toy_files[0], name="loose")
    run(session, session.start_measurement(loose, case_id="loose"))
    loose_nodes = session.result_nodes
    opened = session.open_case_list(str(cases))
    assert session.case_list is opened and session.result_nodes is None
    assert (cases / "OsteoBMD-results" / case_list.STATE_FILE).exists()  # saved at once
    assert session.current_case_id(loose) == "a"

    volume, restored = session.load_current_case()
    assert (volume.GetName(), restored, session.result_nodes) == ("a", False, None)
    assert np.array_equal(node_array(volume), sitk.GetArrayFromImage(sitk.ReadImage(str(cases / "a.nrrd"))))
    assert volume.GetDisplayNode().GetAutoWindowLevel()  # shown as Slicer shows a loaded CT
    assert loose_nodes.segmentation.GetScene() is scene and loose.GetScene() is scene

    worker = session.start_measurement(volume, case_id=session.current_case_id(volume))
    assert worker.final_dir == str(cases / "OsteoBMD-results" / "a" / "auto")
    assert run(session, worker) == sessionlib.FINISHED
    assert opened.current.status == case_list.STATUS_MEASURED
    a_nodes = session.result_nodes
    left = erase_upper_half(a_nodes.segmentation, "L2")

    # Leaving the case keeps the edits in its folder and removes its nodes from the scene.
    kept = session.keep_mask_edits()
    assert kept == str(cases / "OsteoBMD-results" / "a" / sessionlib.EDITED_MASK) and not session.masks_edited
    assert session.keep_mask_edits() is None  # nothing edited since
    opened.go_to(1)
    volume_b, restored = session.load_current_case()
    assert volume_b.GetName() == "b" and not restored and session.result_nodes is None
    for node in (volume, a_nodes.segmentation, a_nodes.table, a_nodes.labelmap, a_nodes.patch_labelmap,
                 *a_nodes.patch_rois.values()):
        assert node.GetScene() is None
    assert loose.GetScene() is scene  # not a case's node

    # Back to a: its results and the kept edits come back, to be recomputed.
    opened.go_to(0)
    volume_a, restored = session.load_current_case()
    assert restored and session.masks_edited and session.has_reader_masks()
    assert session.result_nodes.ct is volume_a
    assert segment_voxels(scene, session.result_nodes, "L2") == left
    worker = session.start_recompute(case_id="a")
    assert worker.final_dir == str(cases / "OsteoBMD-results" / "a" / "corrected")
    assert run(session, worker) == sessionlib.FINISHED
    assert opened.current.status == case_list.STATUS_CORRECTED
    folder = session.save_ground_truth(str(opened.ground_truth_dir), "a")
    assert Path(folder) == cases / "OsteoBMD-results" / "DATA" / "a"
    assert opened.current.status == case_list.STATUS_SAVED

    # The corrected results are the ones shown when the case is opened again; edits older
    # than them are not restored.
    opened.go_to(0)
    _, restored = session.load_current_case()
    assert not restored and session.result_nodes.result.mask_source == "user"
    assert int((sitk.GetArrayFromImage(sitk.ReadImage(kept)) == LABEL_OF["L2"]).sum()) == left

    reopened = case_list.CaseList.open(cases)
    assert {c.case_id: c.status for c in reopened.cases} == {"a": "saved", "b": "new"}


@pytest.mark.skipif(not REAL_DICOM.exists(), reason="the shared real DICOM series is not present")
def test_case_list_reads_a_dicom_folder_as_the_pipeline_does(make_session, scene, tmp_path):
    import shutil

    import SimpleITK as sitk

    from osteobmd.io import read_ct

    cases = tmp_path / "cases"
    shutil.copytree(REAL_DICOM, cases / "series1")
    session = make_session()
    session.open_case_list(str(cases))
    volume, restored = session.load_current_case()
    assert volume.GetName() == "series1" and not restored and volume.GetStorageNode() is None
    image = read_ct(REAL_DICOM)
    assert np.array_equal(node_array(volume), sitk.GetArrayFromImage(image))
    check_same_geometry(volume, image)


def check_same_geometry(volume_node, image) -> None:
    """Each voxel of the node is where the SimpleITK (LPS) image puts it."""
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    ijk_to_ras = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    size = image.GetSize()
    for index in ((0, 0, 0), (size[0] - 1, 0, 0), (0, size[1] - 1, 0), (0, 0, size[2] - 1),
                  (size[0] - 1, size[1] - 1, size[2] - 1)):
        lps = image.TransformIndexToPhysicalPoint(index)
        ras = ijk_to_ras @ np.array([*index, 1.0])
        assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-3), index


def test_volume_from_image_matches_reading_the_file(scene, tmp_path):
    import SimpleITK as sitk

    from OsteoBMDLib.session import volume_from_image

    array = np.arange(6 * 5 * 4, dtype=np.int16).reshape(4, 5, 6)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((-12.0, 30.0, 100.0))
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    # Oblique, right-handed (as io.read_ct's LPS-oriented images are).
    image.SetDirection(tuple(rotation.ravel()))
    node = volume_from_image(scene, image, "oblique")
    assert node.GetName() == "oblique" and node.GetDisplayNode() is not None
    assert np.array_equal(node_array(node), array)
    check_same_geometry(node, image)
    sitk.WriteImage(image, str(tmp_path / "oblique.nrrd"))
    from_file = load_ct(scene, tmp_path / "oblique.nrrd")
    import vtk

    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(a)
    from_file.GetIJKToRASMatrix(b)
    assert np.allclose([a.GetElement(r, c) for r in range(4) for c in range(4)],
                       [b.GetElement(r, c) for r in range(4) for c in range(4)], atol=1e-6)


def test_case_ids_never_carry_patient_data(make_session, toy_files, scene, tmp_path):
    import hashlib as h
    import shutil

    import SimpleITK as sitk

    session = make_session()
    assert session.current_case_id(None) == "case"
    named = tmp_path / "My Scan (2).nii.gz"
    shutil.copy(toy_files[0], tmp_path / "copy.nrrd")
    sitk.WriteImage(sitk.ReadImage(str(toy_files[0])), str(named))
    assert session.current_case_id(load_ct(scene, named)) == "My_Scan_2"
    from_dicom = load_ct(scene, tmp_path / "copy.nrrd")
    from_dicom.SetAttribute("DICOM.instanceUIDs", "1.2.3 1.2.4")
    assert session.current_case_id(from_dicom) == "case-" + h.sha1(b"1.2.3 1.2.4").hexdigest()[:10]
    made = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Doe^John")
    assert session.current_case_id(made) == "case-" + h.sha1(made.GetID().encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- helpers


def test_missing_requirements(tmp_path):
    import importlib.util

    from OsteoBMDLib.installation import missing_requirements

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\n\nnumpy>=1.0  # satisfied\nnumpy<1.0\nosteobmd-surely-not-a-package>=1\n")
    missing = missing_requirements(str(requirements))
    expected = ["numpy<1.0", "osteobmd-surely-not-a-package>=1"]
    if importlib.util.find_spec("torch") is None:
        expected.insert(0, "torch")
    assert missing == expected
    # The panel's own file parses.
    assert isinstance(missing_requirements(str(MODULE_DIR / "Resources" / "requirements.txt")), list)


def test_shipped_weights_folder(tmp_path):
    from OsteoBMDLib.installation import shipped_weights_dir

    module = tmp_path / "ext" / "OsteoBMD"
    module.mkdir(parents=True)
    assert shipped_weights_dir(str(module)) is None
    beside = tmp_path / "ext" / "model_weights"
    beside.mkdir()
    assert shipped_weights_dir(str(module)) is None  # empty: not a weights folder
    (beside / "MODEL_CARD.md").write_text("card")
    assert shipped_weights_dir(str(module)) == str(beside)
    installed = module / "Resources" / "model_weights"
    installed.mkdir(parents=True)
    (installed / "segmentation_r2unet.safetensors").write_bytes(b"x")
    assert shipped_weights_dir(str(module)) == str(installed)  # the installed extension's first


# --------------------------------------------------------------------------- the real pipeline (needs weights)


def test_real_pipeline_through_the_session(pipeline_output, make_session, scene, tmp_path):
    """Apply, edit, Recompute and save, with the REAL worker on the sample CT. Skips while no
    trained weights are installed (conftest's pipeline_output)."""
    from osteobmd.config import LABEL_OF
    from OsteoBMDLib import ground_truth
    from OsteoBMDLib import session as sessionlib

    _, reference = pipeline_output  # run_case on the same CT in this process
    session = make_session()  # sys.executable, the package's default weights
    ct = load_ct(scene, SAMPLE_CT)
    worker = session.start_measurement(ct, device="cpu", case_id="sample")
    outcome = run(session, worker, timeout=1800)
    assert outcome in (sessionlib.FINISHED, sessionlib.NO_VALID), "\n".join(worker.log)
    result = session.result_nodes.result
    # The panel measures what the command line measures on the same CT.
    assert [v.name for v in result.vertebrae] == [v.name for v in reference.vertebrae]
    for mine, theirs in zip(result.vertebrae, reference.vertebrae):
        assert mine.valid == theirs.valid
        if theirs.bmd_mg_cm3 is not None:
            assert mine.bmd_mg_cm3 == pytest.approx(theirs.bmd_mg_cm3, abs=1.0)

    target = next((v.name for v in result.vertebrae if v.patch is not None), None)
    if target is None:
        pytest.skip("the sample's result has no measured vertebra to edit")
    left = erase_upper_half(session.result_nodes.segmentation, target)
    assert session.masks_edited
    worker = session.start_recompute(device="cpu", case_id="sample")
    assert run(session, worker, timeout=1800) in (sessionlib.FINISHED, sessionlib.NO_VALID), "\n".join(worker.log)
    corrected = session.result_nodes.result
    assert corrected.mask_source == "user" and all(v.from_corrected_mask for v in corrected.vertebrae)
    assert segment_voxels(scene, session.result_nodes, target) == left

    data = tmp_path / "DATA"
    folder = session.save_ground_truth(str(data), "sample")
    saved = ground_truth.read_ground_truth(folder)
    assert saved["case"]["corrected"] is True
    import SimpleITK as sitk

    assert int((sitk.GetArrayFromImage(sitk.ReadImage(str(saved["labels"]))) == LABEL_OF[target]).sum()) == left
    with pytest.raises(ground_truth.GroundTruthExistsError):
        session.save_ground_truth(str(data), "sample")


# --------------------------------------------------------------------------- the panel: its choices, controls and views


def panel_parameters(**values):
    """The panel's parameters as the module's parameter node holds them (OsteoBMDParameterNode,
    whose parameterNodeWrapper needs the Slicer application): the same fields and types."""
    from OsteoBMDLib.panel_state import CalibrationChoice, Device
    from test_slicer_static import parameter_fields

    fields = dict(inputVolume=None, device=Device.AUTO, meanL1=True, meanL2=True, meanL3=True, meanL4=False,
                  calibration=CalibrationChoice.NONE, calibrationSlope=1.0, calibrationIntercept=0.0)
    declared = parameter_fields()
    assert set(fields) <= set(declared)
    assert type(fields["device"]).__name__ == declared["device"]
    assert type(fields["calibration"]).__name__ == declared["calibration"]
    fields.update(values)
    return argparse.Namespace(**fields)


def test_panel_parameters_become_the_worker_argv_and_back(make_session, toy_files, scene, tmp_path):
    """Parameter node -> RunOptions -> the worker's argv (to_argv) -> what `osteobmd run` parses: the same."""
    from osteobmd.options import RunOptions
    from OsteoBMDLib import panel_state
    from OsteoBMDLib.panel_state import CalibrationChoice, Device
    from OsteoBMDLib.worker import pipeline_command

    weights = tmp_path / "weights"
    weights.mkdir()
    session = make_session(weights_dir=str(weights))
    ct = load_ct(scene, toy_files[0])
    cases = [
        (panel_parameters(inputVolume=ct), "auto", ("L1", "L2", "L3"), ("none", 1.0, 0.0)),
        (panel_parameters(inputVolume=ct, device=Device.CPU, meanL1=False, meanL4=True,
                          calibration=CalibrationChoice.LINEAR, calibrationSlope=1.0234, calibrationIntercept=-3.25),
         "cpu", ("L2", "L3", "L4"), ("linear", 1.0234, -3.25)),
        # slope and intercept count for the linear calibration only
        (panel_parameters(inputVolume=ct, device=Device.CUDA, calibration=CalibrationChoice.INTERNAL,
                          calibrationSlope=7.0), "cuda", ("L1", "L2", "L3"), ("internal", 1.0, 0.0)),
    ]
    for params, device, vertebrae, (kind, slope, intercept) in cases:
        options = panel_state.run_options(session, params)
        assert (options.device, options.mean_vertebrae, options.case_id) == (device, vertebrae, "toy_ct")
        assert (options.calibration.kind, options.calibration.slope, options.calibration.intercept) == \
            (kind, slope, intercept)
        assert options.weights_dir == weights and not options.write_scene and options.overwrite
        command = pipeline_command(sys.executable, "ct.nrrd", "out", options)
        assert command[:9] == [sys.executable, "-m", "osteobmd", "run", "ct.nrrd", "--out", "out", "--progress", "json"]
        assert RunOptions.from_argv(command[9:]) == options


def test_bad_panel_values_fail_before_the_worker_starts(make_session, fake_python, toy_files, scene):
    from osteobmd.errors import InputError
    from OsteoBMDLib import panel_state
    from OsteoBMDLib import session as sessionlib
    from OsteoBMDLib.panel_state import CalibrationChoice
    from OsteoBMDLib.session import SessionError

    session = make_session(python=fake_python)
    ct = load_ct(scene, toy_files[0])
    bad = [
        (panel_parameters(inputVolume=ct, calibration=CalibrationChoice.LINEAR, calibrationSlope=3.0), InputError,
         "slope"),
        (panel_parameters(inputVolume=ct, meanL1=False, meanL2=False, meanL3=False), SessionError,
         sessionlib.MESSAGES[sessionlib.NO_MEAN_VERTEBRA]),
    ]
    for params, error, words in bad:
        with pytest.raises(error, match=words):
            session.start_measurement(ct, panel_state.run_options(session, params))
    with pytest.raises(InputError, match="Device 'gpu'"):
        session.start_measurement(ct, device="gpu")
    with pytest.raises(InputError, match="Calibration 'linear:1.1'"):
        session.start_measurement(ct, calibration="linear:1.1")
    assert session.worker is None and not session.running
    assert list(Path(session.scratch_dir()).iterdir()) == []  # not even the CT was written for a worker


def test_run_progress_and_outcome_as_the_panel_polls_it(make_session, fake_python, toy_files, scene, tmp_path):
    from OsteoBMDLib import panel_state
    from OsteoBMDLib import session as sessionlib

    session = make_session(python=fake_python)
    assert session.poll_run() is None
    session.start_measurement(load_ct(scene, toy_files[0]), case_id="toy")
    assert session.running
    updates, deadline = [], time.time() + 300
    while not updates or updates[-1].outcome is None:
        assert time.time() < deadline
        updates.append(session.poll_run())
        time.sleep(0.05)
    final = updates[-1]
    assert final.outcome == sessionlib.FINISHED and final.error == "" and final.percent == 100
    percents = [u.percent for u in updates]
    assert percents == sorted(percents)
    assert any("stand-in" in line for u in updates for line in u.log_lines)
    assert not session.running and session.worker is None and session.poll_run() is None
    assert session.result_nodes is not None
    view = panel_state.progress_view(final)
    assert view["statusLabel"]["text"] == "Done." and view["progressBar"]["visible"] is False

    # The real command line on an empty weights folder: it fails, and the one-line reason comes with it.
    empty = tmp_path / "no_weights"
    empty.mkdir()
    session.python_executable, session.weights_dir = sys.executable, str(empty)
    session.start_measurement(session.result_nodes.ct, device="cpu", case_id="toy")
    update = session.poll_run()
    while update.outcome is None:
        time.sleep(0.1)
        update = session.poll_run()
    assert update.outcome == sessionlib.FAILED and "weights" in update.error and "Traceback" not in update.error
    assert panel_state.progress_view(update)["statusLabel"]["text"] == "Failed."


def test_controls_follow_the_session(make_session, fake_python, toy_files, scene, monkeypatch):
    from OsteoBMDLib import panel_state
    from OsteoBMDLib import session as sessionlib
    from OsteoBMDLib.panel_state import CalibrationChoice

    session = make_session(python=fake_python)
    view = panel_state.controls_view(session, None)  # no parameter node (the scene is closing)
    assert not view["applyButton"]["enabled"] and view["applyButton"]["toolTip"] == "Select a CT volume first"
    ct = load_ct(scene, toy_files[0])
    view = panel_state.controls_view(session, panel_parameters(inputVolume=ct))
    assert view["applyButton"] == {"text": "Apply", "toolTip": "Measure L1-L4 BMD on the selected CT", "enabled": True}
    assert not any(view[name]["enabled"] for name in ("editMasksButton", "recomputeButton", "saveGroundTruthButton",
                                                      "previousCaseButton", "nextCaseButton", "caseComboBox",
                                                      "calibrationSlopeSpinBox", "calibrationInterceptSpinBox"))
    linear = panel_parameters(inputVolume=ct, calibration=CalibrationChoice.LINEAR)
    assert panel_state.controls_view(session, linear)["calibrationSlopeSpinBox"]["enabled"]

    monkeypatch.setenv(FAKE_MODE, "slow")
    session.start_measurement(ct, case_id="toy")
    view = panel_state.controls_view(session, panel_parameters(inputVolume=ct))
    assert view["applyButton"]["text"] == "Cancel" and view["applyButton"]["enabled"]
    session.cancel_run()
    update = session.poll_run()
    assert update.outcome == sessionlib.CANCELLED and session.result_nodes is None
    assert panel_state.progress_view(update)["statusLabel"]["text"] == "Cancelled; nothing was changed."

    monkeypatch.setenv(FAKE_MODE, "ok")
    run(session, session.start_measurement(ct, case_id="toy"))
    view = panel_state.controls_view(session, panel_parameters(inputVolume=ct))
    assert view["applyButton"]["text"] == "Apply"
    assert all(view[name]["enabled"] for name in ("editMasksButton", "recomputeButton", "saveGroundTruthButton"))


def test_result_view_shows_the_mean_in_its_class_colour(make_session, fake_python, toy_files, scene, monkeypatch):
    from osteobmd.config import CLASS_COLORS
    from OsteoBMDLib import panel_state

    session = make_session(python=fake_python)
    ct = load_ct(scene, toy_files[0])
    run(session, session.start_measurement(ct, case_id="toy"))
    result = session.result_nodes.result
    view = panel_state.result_view(session.result_nodes)
    assert view["meanBmdLabel"]["text"] == f"{result.mean_bmd_mg_cm3:.0f} mg/cm³"
    assert CLASS_COLORS[result.classification] in view["meanBmdLabel"]["styleSheet"]
    assert view["classificationLabel"]["text"] == result.classification.capitalize()
    assert panel_state.result_summary(session.result_nodes).patches_png is None  # the stand-in draws no picture

    monkeypatch.setenv(FAKE_MODE, "no_valid")
    run(session, session.start_measurement(ct, case_id="toy"))
    view = panel_state.result_view(session.result_nodes)
    assert view["meanBmdLabel"]["text"] == "No valid measurement" and view["classificationLabel"]["text"] == ""
    assert CLASS_COLORS[None] in view["meanBmdLabel"]["styleSheet"]
    assert view["messagesLabel"]["text"].splitlines()[0] == "L1: made invalid by the test"
    assert all(values["text"] == "" for values in panel_state.result_view(None).values())


def test_case_views_while_walking_a_case_list(make_session, fake_python, scene, two_cases):
    from OsteoBMDLib import panel_state

    cases = two_cases
    session = make_session(python=fake_python)
    assert session.step_case(1) is None and panel_state.case_view(None) == {}
    opened = session.open_cases(str(cases))
    assert opened.ct.GetName() == "a" and opened.list_opened and not opened.edits_restored
    view = panel_state.case_opened_view(opened, session.case_list)
    assert view["caseIdLineEdit"]["text"] == "a" and view["caseSourceLabel"]["text"] == str(cases)
    assert view["groundTruthDirectoryButton"]["directory"] == str(cases / "OsteoBMD-results" / "DATA")
    assert panel_state.case_items(session.case_list) == ["a  [new]", "b  [new]"]
    assert panel_state.case_view(session.case_list)["caseStatusLabel"]["text"] == \
        "Case 1 of 2: new. Saved 0, corrected 0, measured 0, new 2."
    controls = panel_state.controls_view(session, panel_parameters(inputVolume=opened.ct))
    assert (controls["previousCaseButton"]["enabled"], controls["nextCaseButton"]["enabled"]) == (False, True)

    run(session, session.start_measurement(opened.ct, case_id="a"))
    erase_upper_half(session.result_nodes.segmentation, "L2")
    opened = session.step_case(1)  # the edits of a are kept in its folder
    assert opened.ct.GetName() == "b" and not opened.list_opened
    view = panel_state.case_opened_view(opened, session.case_list)
    assert "caseSourceLabel" not in view and opened.edits_kept in view["statusLabel"]["text"]
    assert panel_state.case_items(session.case_list) == ["a  [measured]", "b  [new]"]
    assert panel_state.case_view(session.case_list) == {
        "caseComboBox": {"currentIndex": 1},
        "caseStatusLabel": {"text": "Case 2 of 2: new. Saved 0, corrected 0, measured 1, new 1."}}
    opened = session.go_to_case(0)
    assert opened.edits_restored and panel_state.case_opened_view(opened, session.case_list)["statusLabel"]["text"] \
        == "Your earlier mask edits were restored: press Recompute BMD."


def test_ground_truth_is_replaced_only_when_the_reader_says_so(make_session, fake_python, toy_files, scene, tmp_path):
    session = make_session(python=fake_python)
    ct = load_ct(scene, toy_files[0])
    run(session, session.start_measurement(ct, case_id="toy"))
    data = tmp_path / "DATA"
    asked = []
    assert session.ground_truth_case_id("  ", ct) == "toy_ct" and session.ground_truth_case_id(" x1 ", ct) == "x1"
    folder = session.save_ground_truth(str(data), "toy", replace=lambda case: asked.append(case) or False)
    assert asked == [] and Path(folder) == data / "toy"  # nothing to replace: not asked
    first = digest(Path(folder))
    assert session.save_ground_truth(str(data), "toy", replace=lambda case: asked.append(case) or False) is None
    assert asked == ["toy"] and digest(Path(folder)) == first
    assert session.save_ground_truth(str(data), "toy", replace=lambda case: True) == folder


def test_the_panel_words_every_key_it_is_given():
    from osteobmd.scene.table import TABLE_COLUMNS
    from OsteoBMDLib import session as sessionlib
    from OsteoBMDLib import texts
    from OsteoBMDLib.case_list import STATUSES
    from OsteoBMDLib.panel_state import CalibrationChoice, Device

    for outcome in (sessionlib.FINISHED, sessionlib.NO_VALID, sessionlib.FAILED, sessionlib.CANCELLED):
        assert texts.outcome_text(outcome)
    assert set(texts.status_names()) == set(STATUSES)
    assert set(texts.table_titles()) == {name for name, _ in TABLE_COLUMNS}
    assert [d.label() for d in Device] == ["Automatic (GPU if available)", "CPU", "GPU (CUDA)"]
    assert len({c.label() for c in CalibrationChoice}) == len(CalibrationChoice)
    assert sessionlib.FINISHED is __import__("OsteoBMDLib.worker", fromlist=["FINISHED"]).FINISHED


def test_installing_requirements_checks_what_is_still_missing(tmp_path):
    import importlib.util

    from osteobmd.errors import OsteoBMDError
    from OsteoBMDLib.installation import install_requirements, install_torch

    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed here")

    def never(*args):
        raise AssertionError("nothing was missing, nothing should be installed")

    satisfied = tmp_path / "satisfied.txt"
    satisfied.write_text("numpy>=1.0\n")
    install_requirements(str(satisfied), never, never)  # nothing missing: no installer runs

    unknown = tmp_path / "unknown.txt"
    unknown.write_text("numpy>=1.0\nosteobmd-surely-not-a-package>=1\n")
    asked = []
    with pytest.raises(OsteoBMDError, match="still missing after the installation: osteobmd-surely-not-a-package"):
        install_requirements(str(unknown), never, asked.extend)  # an installer that could not install it
    assert asked == ["osteobmd-surely-not-a-package>=1"]
    with pytest.raises(OsteoBMDError, match="needs the PyTorch extension"):
        install_torch(None)
