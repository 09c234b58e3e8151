"""The real-CT evaluation's metrics on constructed label maps, crops, and the shipped reference masks."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, SAMPLE_CT
from osteobmd.evaluation.real_ct import (
    REFERENCE_CODES, SPINE_BACK_MM, SPINE_FRONT_MM, crop_mm, score_case, score_labels, write_crop,
)
from osteobmd.results import LABELS_NRRD, RESULTS_JSON

REFERENCES = REPO / "Testing" / "data" / "real_ct"
SHARED = Path("/work/shared/data")
BODIES = ("T12", "L1", "L2", "L3", "L4", "L5", "sacrum")
SLAB = slice(14, 18)  # the sagittal columns i a prediction labels


def _reference_array(shape=(90, 30, 32)) -> np.ndarray:
    """Seven bodies stacked along z (sacrum at the bottom), each 10 slices with a 3-slice disc, full width."""
    ref = np.zeros(shape, np.uint8)
    for n, name in enumerate(reversed(BODIES)):
        k0 = 2 + n * 13
        ref[k0:k0 + 10, 8:22, 4:28] = REFERENCE_CODES[name]
    return ref


def _prediction(ref: np.ndarray, shift: int = 0) -> np.ndarray:
    """L1..L4 labels on the slab; shift=1 puts each label on the body below its name."""
    pred = np.zeros(ref.shape, np.uint8)
    lumbar = ("L1", "L2", "L3", "L4", "L5")
    for n in range(1, 5):
        body = REFERENCE_CODES[lumbar[n - 1 + shift]]
        where = ref == body
        where[:, :, :SLAB.start] = False
        where[:, :, SLAB.stop:] = False
        pred[where] = n
    return pred


def _write_case(tmp_path: Path, pred: np.ndarray, valid: bool) -> Path:
    out = tmp_path / "result"
    out.mkdir()
    image = sitk.GetImageFromArray(pred)
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(out / LABELS_NRRD))
    vertebrae = [{"name": n, "bmd_mg_cm3": 100.0 + i, "valid": valid, "reasons": [],
                  "patch": {"mean_hu": 150.0 + i}} for i, n in enumerate(("L1", "L2", "L3", "L4"))]
    (out / RESULTS_JSON).write_text(json.dumps({"case": "c", "valid": valid, "vertebrae": vertebrae,
                                                "level_anchor": "sacrum", "mean_bmd_mg_cm3": 101.0,
                                                "level_naming": {"valid": True, "anchor": "sacrum", "anchors_agree": None,
                                                                 "flags": ["levels may be off by one"]}}))
    return out


def _reference_image(ref: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(ref)
    image.SetSpacing((1.0, 1.0, 2.0))
    return image


def test_a_perfect_prediction_scores_dice_one_and_named_right_on_the_slab(tmp_path):
    ref = _reference_array()
    out = _write_case(tmp_path, _prediction(ref), valid=True)
    score = score_case(out, _reference_image(ref), "c")
    assert score.ran and score.valid
    # The reference bodies are wider than the slab: Dice counts the labelled slices only.
    assert [s.dice for s in score.levels] == [1.0] * 4
    assert score.named_right == 4 and not score.wrong_on_valid
    assert score.found == {"L1": "L1", "L2": "L2", "L3": "L3", "L4": "L4"}
    assert score.scored_sagittal_slices == SLAB.stop - SLAB.start
    assert [s.patch_mean_hu for s in score.levels] == [150.0, 151.0, 152.0, 153.0]
    assert score.naming == {"anchor": "sacrum", "anchors_agree": None, "flags": ["levels may be off by one"]}


def test_a_prediction_one_level_off_is_named_wrong_and_flagged_when_valid(tmp_path):
    ref = _reference_array()
    out = _write_case(tmp_path, _prediction(ref, shift=1), valid=True)
    score = score_case(out, _reference_image(ref), "c")
    assert score.named_right == 0
    assert [s.best_reference for s in score.levels] == ["L2", "L3", "L4", "L5"]
    assert [s.dice for s in score.levels] == [0.0] * 4
    assert score.found == {"L2": "L1", "L3": "L2", "L4": "L3", "L5": "L4"}
    assert score.wrong_on_valid


def test_an_invalid_result_with_wrong_names_is_not_a_wrong_valid_result(tmp_path):
    ref = _reference_array()
    score = score_case(_write_case(tmp_path, _prediction(ref, shift=1), valid=False), _reference_image(ref), "c")
    assert score.named_right == 0 and not score.wrong_on_valid


def test_a_missing_level_gets_no_name_and_dice_zero():
    ref = _reference_array()
    pred = _prediction(ref)
    pred[pred == 3] = 0
    levels, found, _, _ = score_labels(pred, ref)
    assert levels[2].predicted is False and levels[2].named_right is None and levels[2].dice == 0.0
    assert "L3" not in found and levels[3].named_right


def test_a_reference_on_another_grid_is_refused(tmp_path):
    ref = _reference_array()
    out = _write_case(tmp_path, _prediction(ref), valid=True)
    with pytest.raises(ValueError, match="not on the grid"):
        score_case(out, _reference_image(ref[:-4]), "c")


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                                       (1, 0, 0, 0, 1, 0, 0, 0, -1)])
@pytest.mark.parametrize("side", ["top", "bottom"])
def test_a_crop_cuts_the_right_end_and_keeps_the_geometry(direction, side):
    array = np.arange(20 * 4 * 5, dtype=np.int16).reshape(20, 4, 5)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 3.0))
    image.SetOrigin((10.0, -5.0, 100.0))
    image.SetDirection(direction)
    cropped = crop_mm(image, side, 30.0)
    assert cropped.GetSize() == (5, 4, 10)

    def z_range(img):
        zs = [img.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in (0, img.GetSize()[2] - 1)]
        return min(zs), max(zs)

    (lo, hi), (clo, chi) = z_range(image), z_range(cropped)
    assert (clo, chi) == ((lo, hi - 30.0) if side == "top" else (lo + 30.0, hi))
    # Every kept voxel keeps its value at its physical place.
    for k in (0, 9):
        point = cropped.TransformIndexToPhysicalPoint((2, 1, k))
        assert cropped[2, 1, k] == image[image.TransformPhysicalPointToIndex(point)]


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                                       (0, 0, 1, 1, 0, 0, 0, 1, 0)])  # the last: PIR-like axis order
def test_a_spine_crop_keeps_the_box_around_the_bodies_in_physical_space(direction, tmp_path):
    # A 2 mm grid, 400 x 300 x 120 mm, with "L1-L4" in a block centred at x = 30, y = -20 mm (LPS).
    size = (200, 150, 60)
    reference = sitk.Image(size, sitk.sitkUInt8)
    reference.SetSpacing((2.0, 2.0, 2.0))
    reference.SetDirection(direction)
    reference.SetOrigin((0.0, 0.0, 0.0))
    reference.SetOrigin(tuple(np.asarray((30.0, -20.0, 0.0))
                              - np.asarray(reference.TransformContinuousIndexToPhysicalPoint(tuple((n - 1) / 2 for n in size)))))
    ref = sitk.GetArrayFromImage(reference)
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in ref.shape], indexing="ij")
    points = np.stack([ii, jj, kk], -1).reshape(-1, 3) * 2.0
    lps = points @ np.asarray(direction, float).reshape(3, 3).T + np.asarray(reference.GetOrigin())
    x, y, z = (lps[:, a].reshape(ref.shape) for a in range(3))
    body = (np.abs(x - 30) < 20) & (np.abs(y + 20) < 15) & (np.abs(z - z.mean()) < 40)
    ref[body] = REFERENCE_CODES["L2"]
    ct = sitk.GetImageFromArray((x * 10).astype(np.int16))  # voxel value = its x in 0.1 mm
    ct.CopyInformation(reference)
    labels = sitk.GetImageFromArray(ref)
    labels.CopyInformation(reference)
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(labels, str(tmp_path / "ref.nii.gz"))
    ct_out, ref_out = write_crop(tmp_path / "ct.nii.gz", tmp_path / "ref.nii.gz", "spine", 50.0, tmp_path / "crop")
    cropped, cropped_ref = sitk.ReadImage(str(ct_out)), sitk.ReadImage(str(ref_out))
    assert cropped.GetSize() == cropped_ref.GetSize()
    xs = sitk.GetArrayFromImage(cropped) / 10.0
    assert xs.min() >= 30 - 50 - 2 and xs.max() <= 30 + 50 + 2  # +-50 mm (one voxel of rounding)
    assert xs.max() - xs.min() >= 100 - 2
    assert (sitk.GetArrayFromImage(cropped_ref) == REFERENCE_CODES["L2"]).sum() == body.sum()  # the bodies whole
    corners = [cropped.TransformIndexToPhysicalPoint(c) for c in ((0, 0, 0), tuple(n - 1 for n in cropped.GetSize()))]
    ys = sorted(p[1] for p in corners)
    assert ys[0] >= -20 - SPINE_FRONT_MM - 2 and ys[1] <= -20 + SPINE_BACK_MM + 2
    zs = sorted(p[2] for p in corners)
    assert zs[1] - zs[0] == pytest.approx(z.max() - z.min())  # every slice along the body kept


def _check_reference_on_ct(ct_path: Path, reference_path: Path) -> np.ndarray:
    ct = sitk.ReadImage(str(ct_path))
    ref = sitk.ReadImage(str(reference_path))
    assert ref.GetPixelID() == sitk.sitkUInt8
    assert ref.GetSize() == ct.GetSize()
    assert np.allclose(ref.GetOrigin(), ct.GetOrigin(), atol=1e-3)
    assert np.allclose(ref.GetSpacing(), ct.GetSpacing(), atol=1e-4)
    assert np.allclose(ref.GetDirection(), ct.GetDirection(), atol=1e-6)
    labels = sitk.GetArrayFromImage(ref)
    hu = sitk.GetArrayFromImage(ct)
    assert set(np.unique(labels)) == {0, *REFERENCE_CODES.values()}
    # Each body lies on bone: its median is above soft tissue and disc (below 100 HU); the
    # TotalSegmentator sample's bodies read 119-160 HU, the pancreas case's 286-354.
    for code in REFERENCE_CODES.values():
        assert np.median(hu[labels == code]) > 100
    return labels


def _centre_z_mm(reference_path: Path, code: int) -> float:
    ref = sitk.ReadImage(str(reference_path))
    k = np.nonzero(sitk.GetArrayFromImage(ref) == code)[0]
    return ref.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, float(k.mean())))[2]


def test_the_totalsegmentator_reference_lies_on_the_bundled_sample_ct():
    path = REFERENCES / "real_ct_totalsegmentator_example" / "reference_levels.nii.gz"
    _check_reference_on_ct(SAMPLE_CT, path)
    # Bodies from top to bottom in the order of their names.
    zs = [_centre_z_mm(path, REFERENCE_CODES[n]) for n in BODIES]
    assert zs == sorted(zs, reverse=True)


PANCREAS = SHARED / "real_ct_pancreas_ct_cb_001"


@pytest.mark.skipif(not (PANCREAS / "ct.nii.gz").exists(), reason="the shared real CTs are not present")
def test_the_pancreas_reference_lies_on_its_ct_and_matches_the_listed_levels():
    path = REFERENCES / "real_ct_pancreas_ct_cb_001" / "reference_levels.nii.gz"
    _check_reference_on_ct(PANCREAS / "ct.nii.gz", path)
    listed = json.loads((PANCREAS / "levels.json").read_text(encoding="utf-8"))["bodies_z_mm"]
    for name, z in listed.items():
        assert abs(_centre_z_mm(path, REFERENCE_CODES[name]) - z["centre"]) <= 8.0, name


def test_the_anchors_in_view_follow_the_crop(tmp_path):
    ref = _reference_array()
    image = _reference_image(ref)
    out = _write_case(tmp_path, _prediction(ref), valid=True)
    assert score_case(out, image, "c").anchors_in_view == ["T12", "sacrum"]
    # The sacrum is the lowest 10 slices (+2 empty) of 2 mm: 24 mm off the bottom takes it away.
    bottom = crop_mm(image, "bottom", 24.0)
    assert score_case(tmp_path / "none", bottom, "c").anchors_in_view == ["T12"]
    assert not score_case(tmp_path / "none", bottom, "c").ran
