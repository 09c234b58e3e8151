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


SAMPLE_CT = Path(__file__).resolve().parents[2] / "samples" / "ct.nii.gz"


def _write(array, path, like=None):
    image = sitk.GetImageFromArray(array)
    if like is not None:
        image.CopyInformation(like)
    sitk.WriteImage(image, str(path))
    return path


def test_tight_spine_crop_without_air_is_a_ct(tmp_path):
    """A crop of the sample's lumbar spine (bodies, canal, muscle, fat) with no air in view."""
    ct = io.read_ct(SAMPLE_CT)
    crop = sitk.Cast(ct[52:72, 56:76, 44:74], sitk.sitkInt16)  # 60 x 60 x 90 mm round the spine
    values = sitk.GetArrayViewFromImage(crop)
    assert values.min() > -300 and values.max() > 1000  # no air, bone in view: like the real crops
    back = io.read_ct(_write(sitk.GetArrayFromImage(crop), tmp_path / "crop.nii.gz", crop))
    assert back.GetSize() == crop.GetSize()


def test_tight_crop_with_a_few_voxels_below_air_is_a_ct(tmp_path):
    """Real crops hold a few edge voxels below -1100 HU (the shared TotalSegmentator CT does):
    the crop is still a CT; a stray value must not decide."""
    hu = _body_like().astype(np.float32)
    hu[0, 0, :3] = -1207.0  # 3 of 13824 voxels
    assert io.read_ct(_write(hu, tmp_path / "crop.nii.gz")).GetSize() == (24, 24, 24)
    hu.reshape(-1)[::250] = -1500.0  # 0.4 % far below air, and no air in view: not HU
    with pytest.raises(InputError, match="does not look like a CT"):
        io.read_ct(_write(hu, tmp_path / "not_hu.nii.gz"))


def _body_like(seed=0):
    """A body-shaped mix: soft tissue, some fat, a bone tail (as in HU)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(40, 60, (24, 24, 24)), -120, 1200) + 600 * (rng.random((24, 24, 24)) > 0.97)


def test_mri_like_image_is_refused(tmp_path):
    # Arbitrary positive units: background 0, tissue a few hundred, fat bright; no negative values.
    mri = np.abs(_body_like()) * 2.0 + 10.0
    with pytest.raises(InputError, match="does not look like a CT in Hounsfield units.*MRI"):
        io.read_ct(_write(mri.astype(np.float32), tmp_path / "t1.nii.gz"))


def test_mask_is_refused_as_a_mask(tmp_path):
    mask = (np.arange(24 ** 3).reshape(24, 24, 24) % 5).astype(np.uint8)
    with pytest.raises(InputError, match="mask or label map.*--mask"):
        io.read_ct(_write(mask, tmp_path / "labels.nii.gz"))


@pytest.mark.parametrize("top, kind", [(255.0, "0..255"), (1.0, "0..1")])
def test_rescaled_exports_are_refused(tmp_path, top, kind):
    hu = _body_like()
    scaled = (hu - hu.min()) / (hu.max() - hu.min()) * top
    with pytest.raises(InputError, match=f"rescaled.*{kind}.*original CT"):
        io.read_ct(_write(scaled.astype(np.float32), tmp_path / "export.nii.gz"))


def test_the_body_like_mix_in_hu_is_accepted(tmp_path):
    """The same mix in HU passes: the refusals above are about units, not about the test image."""
    assert io.read_ct(_write(_body_like().astype(np.float32), tmp_path / "hu.nii.gz")).GetSize() == (24, 24, 24)


def test_a_dicom_header_saying_ct_is_believed(tmp_path):
    hu = (_body_like() + 300).astype(np.int16)  # no fat and no air: by values alone not a CT
    image = sitk.GetImageFromArray(hu)
    with pytest.raises(InputError):
        io.check_is_ct(image, "x")
    io.check_is_ct(image, "x", header_says_ct=True)


def test_dicom_series_modality_reaches_the_check(tmp_path):
    """A series whose values alone would be refused reads because its slices say Modality CT."""
    image = sitk.GetImageFromArray((_body_like() + 300).astype(np.int16))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        writer_image = image[:, :, k]
        for tag, value in (("0008|0060", "CT"), ("0020|000d", "1.2.3"), ("0020|000e", "1.2.3.4"),
                           ("0020|0013", str(k + 1)), ("0020|0032", f"0\\0\\{k}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0008|0018", f"1.2.3.4.{k + 1}")):
            writer_image.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice{k:03d}.dcm"))
        writer.Execute(writer_image)
    assert io.read_ct(tmp_path).GetSize() == (24, 24, 24)


def test_reading_an_empty_folder_prints_no_itk_warning(tmp_path, capfd):
    # Every caller of read_ct (the CLI, the panel, the scene writer) gets only the tool's words.
    with pytest.raises(InputError):
        io.read_ct(tmp_path)
    err = capfd.readouterr().err
    assert "WARNING" not in err and "itk" not in err.lower()
