"""Labels and *_ijk indices on the CT's own grid, whatever orientation the CT file was stored in.

The pipeline works in LPS; what it writes for the user goes back onto the stored grid, so
voxel (i, j, k) of labels.nrrd is voxel (i, j, k) of the CT file.
"""

import numpy as np
import pytest
import SimpleITK as sitk

from osteobmd import io
from osteobmd.cli import SAMPLE_CT
from osteobmd.pipeline import run_case
from osteobmd.results import CaseResult
from test_io import SHARED, THORAX_DICOM
from toy_ct import VERTEBRAE, make_toy_ct

TS_BODIES = SHARED / "vertebral_bodies.nii.gz"  # TotalSegmentator on the sample's grid: 20..23 = L1..L4


def stored_as(lps: sitk.Image, code: str) -> sitk.Image:
    """The same physical image as `lps` (identity direction), its array permuted/flipped by hand
    to the axes `code` names, with the direction and origin that go with them."""
    a = sitk.GetArrayFromImage(lps)  # (z, y, x) = (S, P, L) axes
    nx, ny, nz = lps.GetSize()
    sx, sy, sz = lps.GetSpacing()
    if code == "LPS":
        array, direction, corner, spacing = a, (1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 0), (sx, sy, sz)
    elif code == "RAS":  # i: L->R, j: P->A, k: I->S
        array, direction = a[:, ::-1, ::-1], (-1, 0, 0, 0, -1, 0, 0, 0, 1)
        corner, spacing = (nx - 1, ny - 1, 0), (sx, sy, sz)
    elif code == "PIR":  # i: A->P, j: S->I, k: L->R
        array = np.transpose(a[::-1, :, ::-1], (2, 0, 1))
        direction, corner, spacing = (0, 0, -1, 1, 0, 0, 0, -1, 0), (nx - 1, 0, nz - 1), (sy, sz, sx)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(spacing)
    image.SetDirection([float(v) for v in direction])
    image.SetOrigin(lps.TransformIndexToPhysicalPoint(corner))
    assert io.orientation_code(image) == code
    return image


def write_and_read(tmp_path, lps: sitk.Image, code: str):
    """(the stored file as ITK reads it, what io.read_ct gives) for `lps` stored in `code`."""
    path = tmp_path / f"ct_{code}.nrrd"
    sitk.WriteImage(stored_as(lps, code), str(path))
    return sitk.ReadImage(str(path)), io.read_ct(path)


@pytest.fixture(scope="module")
def toy_lps():
    ct, _ = make_toy_ct((6.0, 5.0, 4.0))  # unequal spacings, so a wrong permutation shows
    return sitk.Cast(ct, sitk.sitkInt16)


@pytest.mark.parametrize("code", ["LPS", "RAS", "PIR"])
def test_reading_and_mapping_back_gives_the_stored_grid_exactly(tmp_path, toy_lps, code):
    stored, ct = write_and_read(tmp_path, toy_lps, code)
    # The pipeline sees the same LPS image whatever the storage.
    assert ct.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(toy_lps))
    back = io.to_input_grid(ct, ct)
    assert back.GetSize() == stored.GetSize()
    assert back.GetOrigin() == stored.GetOrigin()
    assert back.GetSpacing() == stored.GetSpacing()
    assert back.GetDirection() == stored.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(stored))


@pytest.mark.parametrize("code", ["LPS", "RAS", "PIR"])
def test_a_label_at_an_lps_point_lands_on_the_ct_files_voxel_of_that_point(tmp_path, toy_lps, code):
    stored, ct = write_and_read(tmp_path, toy_lps, code)
    # A voxel centre (ITK rounds half-way points differently along flipped axes), off-centre in every axis.
    point = ct.TransformIndexToPhysicalPoint(ct.TransformPhysicalPointToIndex((10.0, -20.0, VERTEBRAE["L2"][0])))
    labels = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(ct)
    labels[ct.TransformPhysicalPointToIndex(point)] = 2
    on_file_grid = sitk.GetArrayFromImage(io.to_input_grid(labels, ct))
    k, j, i = np.argwhere(on_file_grid == 2)[0]
    assert (i, j, k) == stored.TransformPhysicalPointToIndex(point)
    # *_ijk indices: the same point's continuous index on the file's grid.
    assert io.input_grid(ct).continuous_index(point) == pytest.approx(
        stored.TransformPhysicalPointToContinuousIndex(point), abs=1e-9)


@pytest.mark.skipif(not THORAX_DICOM.exists(), reason="shared real DICOM series not present")
def test_a_dicom_series_maps_back_to_the_series_grid():
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(THORAX_DICOM)))
    series = reader.Execute()
    ct = io.read_ct(THORAX_DICOM)
    back = io.to_input_grid(ct, ct)
    assert (back.GetSize(), back.GetOrigin(), back.GetSpacing(), back.GetDirection()) == (
        series.GetSize(), series.GetOrigin(), series.GetSpacing(), series.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(series))


def test_an_image_on_another_grid_is_not_mapped(toy_lps):
    ct = io.to_lps(sitk.Cast(toy_lps, sitk.sitkFloat32))
    with pytest.raises(ValueError, match="not on the LPS grid"):
        io.to_input_grid(ct[1:, :, :], ct)


@pytest.mark.skipif(not TS_BODIES.exists(), reason="shared TotalSegmentator labels not present")
def test_run_on_a_ras_stored_ct_writes_labels_on_its_grid(tmp_path):
    """`run --mask` on the sample (RAS-stored NIfTI): labels.nrrd is the mask as given, voxel for voxel."""
    stored = sitk.ReadImage(str(SAMPLE_CT))
    assert io.orientation_code(stored) == "RAS"
    bodies = sitk.GetArrayFromImage(sitk.ReadImage(str(TS_BODIES)))
    mask = np.where((bodies >= 20) & (bodies <= 23), bodies - 19, 0).astype(np.uint8)
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(stored)
    sitk.WriteImage(mask_image, str(tmp_path / "mask.nii.gz"))
    run_case(SAMPLE_CT, tmp_path / "out", mask_path=tmp_path / "mask.nii.gz", write_scene=False)
    labels = sitk.ReadImage(str(tmp_path / "out" / "labels.nrrd"))
    assert labels.GetSize() == stored.GetSize()
    assert labels.GetOrigin() == stored.GetOrigin()
    assert labels.GetSpacing() == stored.GetSpacing()
    assert labels.GetDirection() == stored.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), mask)
    result = CaseResult.read_json(tmp_path / "out" / "results.json")
    patches = [v.patch for v in result.vertebrae if v.patch is not None]
    assert patches
    for patch in patches:
        assert patch.center_ijk == pytest.approx(
            stored.TransformPhysicalPointToContinuousIndex(patch.center_lps_mm), abs=1e-4)
