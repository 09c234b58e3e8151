"""OsteoBMDLib on real slicer-core scenes and a real pipeline output of the sample CT.

The scene tests need slicer-core (extra `slicer`) and a pipeline that can produce results
(`pipeline_output` in conftest.py: the shipped weights on the sample CT). The case-list and
worker tests need neither.
"""

import hashlib
import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import MODULE_DIR, SAMPLE_CT
from osteobmd.config import LABEL_OF, VERTEBRA_NAMES
from osteobmd.results import LABELS_NRRD, RESULTS_JSON, CaseResult


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def scene():
    """A fresh slicer-core scene with the application logic a scene has inside Slicer."""
    pytest.importorskip("slicer", reason="slicer-core (the 'slicer' extra) is not installed")
    from osteobmd.scene.bare_scene import new_scene

    context = new_scene()
    yield context.scene
    context.close()


@pytest.fixture
def loaded(scene, pipeline_output):
    """The sample's results loaded into the scene: (scene, ResultNodes, output folder)."""
    from osteobmd.scene.output_folder import load_results

    out_dir, _ = pipeline_output
    nodes = load_results(scene, str(out_dir), ct_path=str(SAMPLE_CT))
    return scene, nodes, out_dir


def node_array(volume_node) -> np.ndarray:
    from vtk.util import numpy_support

    image = volume_node.GetImageData()
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0]).copy()


def read_lps(path) -> np.ndarray:
    """A label map file as the pipeline sees it (reoriented to LPS)."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS"))


def present_vertebrae(out_dir) -> list:
    labels = read_lps(Path(out_dir) / LABELS_NRRD)
    return [v for v in VERTEBRA_NAMES if (labels == LABEL_OF[v]).any()]


def erase_upper_half(segmentation_node, segment_id: str) -> int:
    """Edit a segment through the MRML API as the Segment Editor's eraser would; returns voxels left."""
    import slicer
    from vtk.util import numpy_support

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    image = slicer.vtkOrientedImageData()
    assert logic.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segment_id, image)
    dims = image.GetDimensions()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    # The representation may be a layer shared with other segments: keep this segment only.
    label_value = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    mask = (values == label_value).astype(np.uint8)
    ks = np.nonzero(mask.any(axis=(1, 2)))[0]
    mask[(ks.min() + ks.max() + 1) // 2:] = 0  # image rows k: erase the half of higher k
    edited = slicer.vtkOrientedImageData()
    edited.DeepCopy(image)
    edited.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask.ravel(), deep=True))
    assert logic.SetBinaryLabelmapToSegment(edited, segmentation_node, segment_id, logic.MODE_REPLACE)
    return int(mask.sum())


# --------------------------------------------------------------------------- results -> scene


def test_segmentation_has_named_segments_matching_labels(loaded):
    from osteobmd.scene import conventions, segmentation as scene_segmentation
    from OsteoBMDLib import masks

    scene, nodes, out_dir = loaded
    segmentation = nodes.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == list(VERTEBRA_NAMES)
    for name in VERTEBRA_NAMES:
        segment = segmentation.GetSegment(name)
        import vtk

        tag = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
        tag = str(tag)
        assert scene_segmentation.SNOMED_VERTEBRA[name][0] in tag  # SNOMED CT code of the level
        assert np.allclose(segment.GetColor(), conventions.vertebra_color(name))
    # The CT is the reference geometry (DICOM SEG export, Segment Editor).
    assert nodes.segmentation.GetNodeReference(nodes.segmentation.GetReferenceImageGeometryReferenceRole()) is nodes.ct

    # Voxel for voxel: the segments exported on labels.nrrd's grid are labels.nrrd.
    on_label_grid = masks.export_vertebra_labelmap(scene, nodes.segmentation, nodes.labelmap)
    import SimpleITK as sitk

    from_file = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(out_dir) / LABELS_NRRD)))
    assert np.array_equal(node_array(on_label_grid), from_file)
    assert np.array_equal(node_array(nodes.labelmap), from_file)
    # ... and on the CT's grid, as the pipeline reads a --mask file.
    path = masks.export_mask_file(scene, nodes.segmentation, nodes.ct, str(Path(out_dir).parent / "export_check.nrrd"))
    assert np.array_equal(read_lps(path), read_lps(Path(out_dir) / LABELS_NRRD))


def test_table_holds_the_bmds_of_results_json(loaded):
    scene, nodes, out_dir = loaded
    result = CaseResult.read_json(Path(out_dir) / RESULTS_JSON)
    table = nodes.table
    columns = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert columns == ["Vertebra", "BMD", "Class", "Valid", "Reasons", "Patch centre", "Corrected mask"]
    assert table.GetNumberOfRows() == len(result.vertebrae) + 2  # + the mean and the level names
    # The last row says how the levels were named, in the naming stage's own words.
    naming_row = table.GetNumberOfRows() - 1
    assert table.GetCellText(naming_row, 0) == "Level names"
    assert table.GetCellText(naming_row, 4).startswith(result.level_naming["message"])
    bmd_column = table.GetTable().GetColumnByName("BMD")
    for row, v in enumerate(result.vertebrae):
        assert table.GetCellText(row, 0) == v.name
        value = bmd_column.GetValue(row)
        if v.bmd_mg_cm3 is None:
            assert math.isnan(value)
        else:
            assert value == pytest.approx(v.bmd_mg_cm3)
        assert table.GetCellText(row, 3) == ("yes" if v.valid else "no")
        assert table.GetCellText(row, 4) == "; ".join(v.reasons)
        assert table.GetCellText(row, 6) == "no"
    mean_row = len(result.vertebrae)
    if result.mean_bmd_mg_cm3 is None:
        assert math.isnan(bmd_column.GetValue(mean_row))
    else:
        assert bmd_column.GetValue(mean_row) == pytest.approx(result.mean_bmd_mg_cm3)
    assert table.GetCellText(mean_row, 2) == (result.classification or "")
    assert table.GetColumnUnitLabel("BMD") == "mg/cm3"


def test_patches_are_boxes_and_voxels_at_the_patch_centres(loaded):
    from osteobmd.scene.conventions import lps_to_ras
    from OsteoBMDLib import views

    scene, nodes, _ = loaded
    measured = [v for v in nodes.result.vertebrae if v.patch is not None]
    assert set(nodes.patch_rois) == {v.name for v in measured}
    labels = node_array(nodes.patch_labelmap)
    for v in measured:
        roi = nodes.patch_rois[v.name]
        center = [0.0, 0.0, 0.0]
        roi.GetCenterWorld(center)
        assert np.allclose(center, lps_to_ras(v.patch.center_lps_mm), atol=1e-3)
        in_plane = [s for s in roi.GetSize() if abs(s - v.patch.size_mm) <= 0.05 * v.patch.size_mm]
        assert len(in_plane) >= 2, roi.GetSize()  # the square's two sides; the third is the slab
        assert (labels == LABEL_OF[v.name]).sum() > 0
    # The views: CT behind, patches as the label layer, every view through the spine centre;
    # a table row's vertebra centres every slice view on its patch.
    slices = {}
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
        node.SetLayoutName(name)
        node.SetOrientation(orientation)
        composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
        slices[name] = node
    views.show_results(scene, nodes)
    for i in range(3):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        assert composite.GetBackgroundVolumeID() == nodes.ct.GetID()
        assert composite.GetLabelVolumeID() == nodes.patch_labelmap.GetID()
    assert nodes.segmentation.GetDisplayNode().GetVisibility2DOutline()
    spine = views.spine_center_ras(nodes.result)
    if spine is not None:
        sagittal_x = slices["Yellow"].GetSliceToRAS().GetElement(0, 3)
        assert sagittal_x == pytest.approx(spine[0], abs=1e-3)  # the sagittal plane through the spine
    if measured:
        target = views.vertebra_center_ras(nodes.result, measured[0].name)
        assert views.jump_slices_to(scene, target) == 3
        assert slices["Red"].GetSliceToRAS().GetElement(2, 3) == pytest.approx(target[2], abs=1e-3)


def test_edited_mask_recomputes_and_is_marked_corrected(loaded, tmp_path):
    from osteobmd.pipeline import run_case
    from osteobmd.scene.output_folder import load_results
    from OsteoBMDLib import masks

    scene, nodes, out_dir = loaded
    before = nodes.result
    target = next((v.name for v in before.vertebrae if v.name == "L2" and v.patch), None) or next(
        (v.name for v in before.vertebrae if v.patch), None)
    if target is None:
        pytest.skip("the sample's result has no measured vertebra to edit")
    voxels_before = int((read_lps(Path(out_dir) / LABELS_NRRD) == LABEL_OF[target]).sum())
    left = erase_upper_half(nodes.segmentation, target)
    assert 0 < left < voxels_before

    mask_path = masks.export_mask_file(scene, nodes.segmentation, nodes.ct, str(tmp_path / "corrected_mask.nrrd"))
    exported = read_lps(mask_path)
    assert (exported == LABEL_OF[target]).sum() == left
    corrected_dir = tmp_path / "corrected"
    after = run_case(SAMPLE_CT, corrected_dir, mask_path=mask_path, overwrite=True)

    assert after.mask_source == "user"
    assert all(v.from_corrected_mask for v in after.vertebrae)
    old, new = before.vertebra(target), after.vertebra(target)
    changed = (
        old.bmd_mg_cm3 != new.bmd_mg_cm3
        or old.valid != new.valid
        or old.reasons != new.reasons
        or (old.patch and new.patch and not np.allclose(old.patch.center_lps_mm, new.patch.center_lps_mm))
        or (old.patch is None) != (new.patch is None)
    )
    assert changed, f"erasing half of {target} changed neither its BMD, patch nor validity"

    # Reading the recompute back keeps the reader's segmentation and flags the table.
    nodes2 = load_results(scene, str(corrected_dir), previous=nodes, update_segmentation=False)
    assert nodes2.segmentation is nodes.segmentation and nodes2.table is nodes.table
    assert (read_lps(masks.export_mask_file(scene, nodes2.segmentation, nodes2.ct, str(tmp_path / "again.nrrd")))
            == LABEL_OF[target]).sum() == left
    rows = range(nodes2.table.GetNumberOfRows() - 2)
    assert all(nodes2.table.GetCellText(r, 6) == "yes" for r in rows)
    assert nodes2.table.GetAttribute("OsteoBMD.MaskSource") == "user"


def test_ground_truth_reloads_identically_and_is_never_overwritten_silently(loaded, tmp_path):
    import SimpleITK as sitk

    from osteobmd.scene.segmentation import labelmap_to_segmentation
    from osteobmd.scene.volumes import load_ct, load_labelmap
    from OsteoBMDLib import ground_truth, masks
    from osteobmd.scene.bare_scene import new_scene

    scene, nodes, _ = loaded
    data = tmp_path / "DATA"
    folder = ground_truth.save_ground_truth(scene, data, "sample case/1", nodes.ct, nodes.segmentation,
                                            result=nodes.result)
    assert folder == data / "sample_case_1"  # a safe folder name
    saved = ground_truth.read_ground_truth(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["bmd.csv", "case.json", "ct.nrrd", "labels.nrrd"]

    # CT: the same voxels and geometry as the scene's CT node (and the original file).
    ct_saved = sitk.ReadImage(str(saved["ct"]))
    assert np.array_equal(sitk.GetArrayFromImage(ct_saved), node_array(nodes.ct))
    original = sitk.ReadImage(str(SAMPLE_CT))
    assert np.allclose(ct_saved.GetOrigin(), original.GetOrigin(), atol=1e-3)
    assert np.allclose(ct_saved.GetDirection(), original.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(ct_saved), sitk.GetArrayFromImage(original))
    # Labels: in the CT's grid, 1..4 by segment name, equal to the segmentation.
    assert sitk.ReadImage(str(saved["labels"])).GetSize() == original.GetSize()
    expected = node_array(masks.export_vertebra_labelmap(scene, nodes.segmentation, nodes.ct))
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(saved["labels"]))), expected)
    assert saved["bmd"] == {v.name: pytest.approx(v.bmd_mg_cm3, abs=0.01)
                            for v in nodes.result.vertebrae if v.bmd_mg_cm3 is not None}
    assert saved["case"]["corrected"] is False and saved["case"]["bmd_source"] in ("osteobmd", "none")

    # Reloaded into a fresh scene, the saved case gives back the same segmentation.
    with new_scene() as other:
        ct2 = load_ct(other.scene, str(saved["ct"]))
        lab2 = load_labelmap(other.scene, str(saved["labels"]), "labels")
        seg2 = labelmap_to_segmentation(other.scene, lab2, ct2)
        assert np.array_equal(node_array(masks.export_vertebra_labelmap(other.scene, seg2, ct2)), expected)

    # A second save refuses without overwrite and leaves the first one untouched.
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    with pytest.raises(ground_truth.GroundTruthExistsError):
        ground_truth.save_ground_truth(scene, data, "sample case/1", nodes.ct, nodes.segmentation, result=nodes.result)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()} == digest
    assert [p.name for p in data.iterdir()] == ["sample_case_1"]  # no scratch folder left behind
    ground_truth.save_ground_truth(scene, data, "sample case/1", nodes.ct, nodes.segmentation,
                                   result=nodes.result, corrected=True, overwrite=True)
    assert json.loads((folder / "case.json").read_text(encoding="utf-8"))["corrected"] is True
    assert [p.name for p in data.iterdir()] == ["sample_case_1"]


def segment_voxels_ras(segmentation_node, segment_id: str):
    """(voxel count, centroid in RAS mm) of a segment's binary labelmap."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    assert slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        segmentation_node, segment_id, image)
    dims = image.GetDimensions()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    label_value = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    k, j, i = np.nonzero(values == label_value)
    extent = image.GetExtent()
    ijk = np.stack([i + extent[0], j + extent[2], k + extent[4], np.ones_like(i)]).astype(float)
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    to_ras = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    return len(i), (to_ras @ ijk)[:3].mean(axis=1)


def labels_voxels_ras(path, value: int):
    """(voxel count, centroid in RAS mm) of one label of a label map file, read with SimpleITK."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    k, j, i = np.nonzero(sitk.GetArrayViewFromImage(image) == value)
    axes = np.reshape(image.GetDirection(), (3, 3)) * np.asarray(image.GetSpacing())
    lps = axes @ np.stack([i, j, k]).astype(float) + np.asarray(image.GetOrigin())[:, None]
    return len(i), np.array([-1.0, -1.0, 1.0]) * lps.mean(axis=1)


def test_scene_mrb_loads_back_with_ct_segmentation_and_table(scene, pipeline_output, tmp_path):
    import shutil
    import zipfile

    import SimpleITK as sitk

    from osteobmd.io import read_ct
    from osteobmd.scene import write_scene_mrb
    from osteobmd.scene.conventions import lps_to_ras

    out_dir, result = pipeline_output
    copy = tmp_path / "out"
    shutil.copytree(out_dir, copy)
    timings = {}
    mrb = write_scene_mrb(copy, SAMPLE_CT, timings=timings)
    assert mrb == copy / "scene.mrb" and mrb.stat().st_size > 0
    assert not [p for p in copy.iterdir() if p.name.startswith(".scene-")]
    assert {"CT file read", "CT node", "WriteToMRB"} <= set(timings)

    # What Slicer opens: a zip of one folder holding the scene and its data. The CT is in it
    # once, as gzipped int16 (its HU are whole numbers), and the zip does not compress it again.
    expected = read_ct(SAMPLE_CT)
    with zipfile.ZipFile(mrb) as bundle:
        assert {name.split("/")[0] for name in bundle.namelist()} == {"scene"}
        assert "scene/scene.mrml" in bundle.namelist()
        ct_entry = bundle.getinfo("scene/Data/CT.nrrd")
        assert ct_entry.compress_type == zipfile.ZIP_STORED
        header = bundle.read(ct_entry).split(b"\n\n", 1)[0].decode("ascii").splitlines()
    assert "type: short" in header and "encoding: gzip" in header
    assert ct_entry.file_size < 2 * int(np.prod(expected.GetSize()))  # fewer bytes than the raw int16 voxels
    assert mrb.stat().st_size < SAMPLE_CT.stat().st_size  # the whole scene, smaller than the CT file it holds

    assert scene.ReadFromMRB(str(mrb))
    volumes = [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
               for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    ct = next(v for v in volumes if v.GetName() == "CT" and not v.IsA("vtkMRMLLabelMapVolumeNode"))
    # Every voxel round-trips, at the place the pipeline had it.
    assert np.array_equal(node_array(ct), sitk.GetArrayViewFromImage(expected))
    import vtk

    ijk_to_ras = vtk.vtkMatrix4x4()
    ct.GetIJKToRASMatrix(ijk_to_ras)
    for index in [(0, 0, 0), tuple(n - 1 for n in expected.GetSize())]:
        ras = ijk_to_ras.MultiplyPoint((*index, 1.0))[:3]
        assert np.allclose(ras, lps_to_ras(expected.TransformIndexToPhysicalPoint(index)), atol=1e-3)
    display = ct.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (1000, 350)

    segmentation_node = scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    segmentation = segmentation_node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == \
        list(VERTEBRA_NAMES)
    # The segments hold labels.nrrd's voxels (stored cropped to L1-L4's box, placed by their own geometry).
    for name in VERTEBRA_NAMES:
        count, centroid = labels_voxels_ras(copy / LABELS_NRRD, LABEL_OF[name])
        if count:
            got_count, got_centroid = segment_voxels_ras(segmentation_node, name)
            assert got_count == count and np.allclose(got_centroid, centroid, atol=0.01), name
    table = scene.GetFirstNodeByClass("vtkMRMLTableNode")
    assert table.GetNumberOfRows() == len(result.vertebrae) + 2  # + the mean and the level names
    for row, v in enumerate(result.vertebrae):
        assert table.GetCellText(row, 0) == v.name
        if v.bmd_mg_cm3 is not None:
            assert float(table.GetCellText(row, 1)) == pytest.approx(v.bmd_mg_cm3, abs=0.01)

    # The pipeline passes the CT it holds (a SimpleITK image, LPS): the same bundle.
    from osteobmd.scene.bare_scene import new_scene

    from_image = write_scene_mrb(copy, ct_image=expected, mrb_path=str(copy / "from_image.mrb"))
    with new_scene() as other:
        assert other.scene.ReadFromMRB(str(from_image))
        assert np.array_equal(node_array(other.scene.GetFirstNodeByName("CT")), node_array(ct))
        assert other.scene.GetFirstNodeByClass("vtkMRMLSegmentationNode").GetSegmentation().GetNumberOfSegments() == 4
    with pytest.raises(ValueError, match="needs the CT"):
        write_scene_mrb(copy)


def test_a_ct_with_fractional_values_keeps_them_in_the_scene(tmp_path):
    """Only whole-number HU become int16: a resampled (fractional) CT keeps float32, exactly."""
    pytest.importorskip("slicer", reason="slicer-core (the 'slicer' extra) is not installed")
    import SimpleITK as sitk

    from osteobmd.scene.bare_scene import new_scene
    from osteobmd.scene.volumes import add_ct_image

    values = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) - 60
    whole = sitk.GetImageFromArray(values)
    fractional = sitk.GetImageFromArray(values + 0.25)
    too_big = sitk.GetImageFromArray(values * 1000)  # up to 59000: outside int16
    with new_scene() as context:
        for image, vtk_type in ((whole, "short"), (fractional, "float"), (too_big, "float")):
            node = add_ct_image(context.scene, image)
            assert node.GetImageData().GetScalarTypeAsString() == vtk_type
            assert np.array_equal(node_array(node), sitk.GetArrayViewFromImage(image))


# --------------------------------------------------------------------------- case list (no Slicer needed)


def _touch_ct(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not read by the case list")
    return path


def test_case_list_state_persists_across_reopening(tmp_path):
    from OsteoBMDLib import case_list

    folder = tmp_path / "cts"
    for name in ("patient10.nii.gz", "patient2.nii.gz", "patient1.nrrd", "patient1_labels.nrrd", "notes.txt"):
        _touch_ct(folder / name)
    _touch_ct(folder / "case_gt" / "ct.nrrd")  # ground-truth layout
    dicom = folder / "series7"
    dicom.mkdir()
    (dicom / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)

    cases = case_list.CaseList.open(folder)
    assert [c.case_id for c in cases.cases] == ["case_gt", "patient1", "patient2", "patient10", "series7"]
    assert cases.cases[-1].ct_path == str(dicom.resolve())
    assert all(c.status == "new" for c in cases.cases)
    assert cases.current.case_id == "case_gt" and not cases.has_previous

    cases.next()
    cases.set_status(cases.current, case_list.STATUS_MEASURED)
    cases.next()
    cases.set_status("patient2", case_list.STATUS_CORRECTED)
    cases.advance_status("patient2", case_list.STATUS_MEASURED)  # never moves back
    cases.set_status("case_gt", case_list.STATUS_SAVED)
    assert cases.output_dir(cases.current, "auto") == folder / "OsteoBMD-results" / "patient2" / "auto"

    reopened = case_list.CaseList.open(folder)
    assert reopened.current.case_id == "patient2"  # where the reader left off
    assert {c.case_id: c.status for c in reopened.cases} == {
        "case_gt": "saved", "patient1": "measured", "patient2": "corrected", "patient10": "new", "series7": "new",
    }
    assert reopened.counts() == {"new": 2, "measured": 1, "corrected": 1, "saved": 1}
    assert reopened.first_unfinished_index() == 1
    # The only names the tool made: its fixed folder/state names.
    assert sorted(p.name for p in (folder / "OsteoBMD-results").iterdir()) == ["osteobmd_cases.json"]


def test_case_list_from_csv_and_status_from_disk(tmp_path):
    from OsteoBMDLib import case_list

    a = _touch_ct(tmp_path / "scans" / "a.mha")
    b = _touch_ct(tmp_path / "elsewhere" / "b.nii")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(f"case_id,ct\nfirst,scans/a.mha\n,{b}\n")
    cases = case_list.CaseList.open(csv_path)
    assert [(c.case_id, c.ct_path) for c in cases.cases] == [("first", str(a.resolve())), ("b", str(b.resolve()))]
    assert cases.work_dir == tmp_path / "list-OsteoBMD-results"
    # Results already on disk (no state file yet) show as measured.
    results = cases.output_dir("b", "auto") / RESULTS_JSON
    results.parent.mkdir(parents=True)
    results.write_text("{}")
    assert {c.case_id: c.status for c in case_list.CaseList.open(csv_path).cases} == {"first": "new", "b": "measured"}

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(case_list.CaseListError, match="No CT was found"):
        case_list.CaseList.open(empty)


# --------------------------------------------------------------------------- worker (no Slicer needed)


def _script(body: str) -> list:
    return [sys.executable, "-c", textwrap.dedent(body)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_worker_reports_progress_and_finishes():
    from OsteoBMDLib.worker import FINISHED, BackgroundProcess

    worker = BackgroundProcess(_script("""
        import json, sys, time
        for i, stage in enumerate(["read", "canal", "segmentation"]):
            sys.stderr.write(json.dumps({"stage": stage, "fraction": (i + 1) / 4, "message": stage + " done"}) + "\\n")
            sys.stderr.flush()
            time.sleep(0.05)
        sys.stderr.write("a plain log line\\n")
        print("stdout line")
    """)).start()
    status = worker.wait(timeout=60)
    assert status.state == FINISHED and status.returncode == 0 and status.fraction == 1.0
    assert status.stage == "segmentation" and status.message == "segmentation done"
    assert "a plain log line" in worker.log and "stdout line" in worker.log
    assert not any(line.startswith("{") for line in worker.log)


def test_worker_failure_gives_the_one_line_message():
    from OsteoBMDLib.worker import FAILED, BackgroundProcess

    worker = BackgroundProcess(_script("""
        import sys
        sys.stderr.write('{"stage": "read", "fraction": 0.05, "message": "reading"}\\n')
        sys.stderr.write("osteobmd: 'x.nii' does not exist. Check the path and try again.\\n")
        sys.exit(2)
    """)).start()
    status = worker.wait(timeout=60)
    assert status.state == FAILED and status.returncode == 2
    assert status.error == "osteobmd: 'x.nii' does not exist. Check the path and try again."
    assert status.fraction == pytest.approx(0.05)


@pytest.mark.skipif(sys.platform == "win32", reason="checks POSIX process groups")
def test_worker_cancel_kills_the_process_tree(tmp_path):
    from OsteoBMDLib.worker import CANCELLED, BackgroundProcess

    pid_file = tmp_path / "child.pid"
    worker = BackgroundProcess(_script(f"""
        import json, subprocess, sys, time
        # a grandchild, as the PythonSlicer launcher starts the real interpreter
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        for i in range(1000):
            sys.stderr.write(json.dumps({{"stage": "segmentation", "fraction": i / 1000, "message": "slice %d" % i}}) + "\\n")
            sys.stderr.flush()
            time.sleep(0.05)
    """)).start()
    deadline = time.time() + 60
    while (worker.poll().fraction == 0 or not pid_file.exists() or not pid_file.read_text(encoding="utf-8")) and time.time() < deadline:
        time.sleep(0.05)
    assert worker.status.running and worker.status.fraction > 0
    child_pid = int(pid_file.read_text(encoding="utf-8"))
    assert _alive(child_pid)

    status = worker.cancel()
    assert status.state == CANCELLED and status.done
    assert worker.proc.poll() is not None
    for _ in range(100):
        if not _alive(child_pid):
            break
        time.sleep(0.05)
    assert not _alive(child_pid), "the grandchild survived the cancel"


def test_pipeline_worker_runs_the_real_cli_on_bad_input(tmp_path):
    from osteobmd.options import RunOptions
    from OsteoBMDLib.worker import EXIT_INPUT, FAILED, PipelineWorker, pipeline_command

    # The run's choices reach the command only through RunOptions.to_argv().
    options = RunOptions(device="cpu", mean_vertebrae=("L1", "L2"), mask_path="m.nrrd", weights_dir="w",
                         write_scene=False, overwrite=True)
    cmd = pipeline_command("py", "ct.nii", "out", options)
    assert cmd == ["py", "-m", "osteobmd", "run", "ct.nii", "--out", "out", "--progress", "json", *options.to_argv()]
    for flag in ("--device cpu", "--mask m.nrrd", "--vertebrae L1,L2", "--overwrite", "--weights w", "--no-scene"):
        assert flag in " ".join(cmd)

    worker = PipelineWorker(sys.executable, str(tmp_path / "missing.nii.gz"), str(tmp_path / "out"), RunOptions(),
                            pythonpath=str(MODULE_DIR))
    worker.cwd = str(tmp_path)
    status = worker.start().wait(timeout=300)
    assert status.state == FAILED and status.returncode == EXIT_INPUT
    assert "does not exist" in status.error and "Traceback" not in "\n".join(worker.log)
    assert not worker.has_results
