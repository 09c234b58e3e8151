"""Reading CTs and label maps: formats, orientation, and every bad input a user meets."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from osteobmd import io
from osteobmd.errors import InputError
from toy_ct import make_toy_ct

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_ct_totalsegmentator_example"
THORAX_DICOM = SHARED / "dicom_series_thorax_no_lumbar"


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_formats_read_to_the_same_lps_volume(tmp_path, suffix):
    ct, _ = make_toy_ct((3.0, 3.0, 3.0))
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(sitk.Cast(ct, sitk.sitkInt16), str(path))
    back = io.read_ct(path)
    assert back.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(ct))


def test_ras_stored_volume_is_reoriented_to_lps(tmp_path):
    ct, _ = make_toy_ct((3.0, 3.0, 3.0))
    flipped = sitk.Flip(ct, [True, True, False])  # stored R->L reversed: a RAS-like layout
    assert flipped.GetDirection()[0] == -1
    sitk.WriteImage(flipped, str(tmp_path / "ras.nii.gz"))
    back = io.read_ct(tmp_path / "ras.nii.gz")
    assert back.GetDirection()[0] == 1 and back.GetDirection()[4] == 1
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(ct))


@pytest.mark.skipif(not THORAX_DICOM.exists(), reason="shared real DICOM series not present")
def test_dicom_series_folder_reads_as_one_volume():
    ct = io.read_ct(THORAX_DICOM)
    assert ct.GetSize() == (512, 512, 20)
    assert ct.GetSpacing()[2] == pytest.approx(2.0)


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        io.read_ct(tmp_path / "nope.nii.gz")


def test_file_that_is_not_an_image(tmp_path):
    p = tmp_path / "notes.nii.gz"
    p.write_text("this is not an image")
    with pytest.raises(InputError, match="could not be read as an image"):
        io.read_ct(p)


def test_corrupt_truncated_file(tmp_path):
    ct, _ = make_toy_ct((3.0, 3.0, 3.0))
    p = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct, str(p), True)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        io.read_ct(p)


def test_2d_image(tmp_path):
    p = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.Image(64, 64, sitk.sitkInt16), str(p))
    with pytest.raises(InputError, match="2D image"):
        io.read_ct(p)


def test_image_that_is_not_ct(tmp_path):
    ct, _ = make_toy_ct((3.0, 3.0, 3.0))
    mri_like = sitk.RescaleIntensity(ct, 0, 1)  # no HU range: air is not -1000
    sitk.WriteImage(mri_like, str(tmp_path / "mri.nii.gz"))
    with pytest.raises(InputError, match="Hounsfield"):
        io.read_ct(tmp_path / "mri.nii.gz")


def test_labelmap_on_another_grid_is_refused(tmp_path):
    ct, labels = make_toy_ct((3.0, 3.0, 3.0))
    coarse = sitk.Resample(labels, [s // 2 for s in labels.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                           labels.GetOrigin(), [6.0, 6.0, 6.0], labels.GetDirection(), 0, labels.GetPixelID())
    sitk.WriteImage(coarse, str(tmp_path / "labels.nrrd"))
    with pytest.raises(InputError, match="does not lie on the CT's grid"):
        io.read_labelmap(tmp_path / "labels.nrrd", io.to_lps(ct))


def test_labelmap_with_foreign_values_is_refused(tmp_path):
    ct, labels = make_toy_ct((3.0, 3.0, 3.0))
    sitk.WriteImage(labels * 20, str(tmp_path / "labels.nrrd"))  # TotalSegmentator-style codes
    with pytest.raises(InputError, match="expects"):
        io.read_labelmap(tmp_path / "labels.nrrd", io.to_lps(ct))


def test_case_id_never_comes_from_dicom_tags():
    assert io.case_id_from_path("/data/subject-12.nii.gz") == "subject-12"
    assert io.case_id_from_path("/data/scan.nrrd") == "scan"
