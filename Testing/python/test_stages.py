"""Each stage of pipeline.run_case on its own, with typed values in and out (stages.py)."""

import numpy as np
import pytest
import SimpleITK as sitk

from osteobmd import io as ctio
from osteobmd import stages
from osteobmd.calibration import linear_calibration, no_calibration, parse_calibration
from osteobmd.canal import CanalResult
from osteobmd.cli import SAMPLE_CT
from osteobmd.config import PatchConfig, SegmentationConfig
from osteobmd.errors import InputError
from osteobmd.levels import LevelCheck
from osteobmd.patches import network_input
from osteobmd.results import PatchInfo
from osteobmd.segmentation import Segmentation
from osteobmd.weights import load_models
from toy_ct import VERTEBRAE, make_toy_ct, mid_sagittal_labels

SPACING = (1.5, 1.5, 1.5)


@pytest.fixture(scope="module")
def toy():
    ct, labels = make_toy_ct(SPACING)
    return ct, mid_sagittal_labels(labels)


@pytest.fixture(scope="module")
def regression_only():
    return load_models(device="cpu", segmentation=False)


def test_read_gives_the_ct_in_lps_and_the_mask_on_its_grid(tmp_path, toy):
    ct, labels = toy
    flipped = sitk.Flip(ct, [True, False, False])  # stored right-to-left: read back as LPS
    sitk.WriteImage(flipped, str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(sitk.Flip(labels, [True, False, False]), str(tmp_path / "labels.nrrd"))
    case = stages.read(tmp_path / "ct.nrrd", tmp_path / "labels.nrrd")
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(case.ct), sitk.GetArrayViewFromImage(ct))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(case.user_labels), sitk.GetArrayViewFromImage(labels))
    assert stages.read(tmp_path / "ct.nrrd").user_labels is None


def test_spine_and_segment_on_the_real_sample():
    ct = ctio.read_ct(SAMPLE_CT)
    models = load_models(device="cpu")
    canal = stages.find_spine(ct)
    segmentation = stages.segment(ct, canal, models)
    labels = sitk.GetArrayViewFromImage(segmentation.labels)
    assert segmentation.labels.GetSize() == ct.GetSize()
    assert set(np.unique(labels)) - {0} and set(np.unique(labels)) <= {0, 1, 2, 3, 4}
    # Labels only in the canal's sagittal slab, the same fused map in each of its slices.
    in_slab = np.flatnonzero(labels.any(axis=(0, 1)))
    assert set(in_slab) <= set(canal.slab_indices)
    assert segmentation.fused.shape == labels[:, :, 0].shape
    assert segmentation.spacing_zy == (ct.GetSpacing()[2], ct.GetSpacing()[1])


def test_name_levels_keeps_the_labels_and_judges_the_names(toy):
    ct, labels = toy
    def fused(values):  # bodies from superior to inferior, 36 mm apart
        image = np.zeros((220, 60), np.uint8)
        for n, value in enumerate(values):
            image[200 - n * 24 - 8:200 - n * 24 + 8, 20:45] = value
        return image

    canal = CanalResult(np.zeros((1, 3)), np.zeros(1, int), np.array([4.0, 30.0, 90.0]), [10, 11, 12])
    labelling = stages.name_levels(ct, canal, Segmentation(labels, fused([7, 1, 2, 3, 4, 5, 6]), (1.5, 1.5)))
    assert labelling.source == "network" and labelling.labels is labels
    np.testing.assert_allclose(labelling.spine_center_lps_mm, [4.0, 30.0, 90.0])
    assert (labelling.level_check.anchor, labelling.level_check.consistent) == ("sacrum+T12", True)
    shifted = fused([7, 1, 2, 3, 4, 6])  # L4 straight on the sacrum: the names may be shifted
    doubtful = stages.name_levels(ct, canal, Segmentation(labels, shifted, (1.5, 1.5))).level_check
    assert doubtful.consistent is False


def test_user_labelling_is_marked_and_an_empty_one_refused(toy):
    _, labels = toy
    labelling = stages.user_labelling(labels)
    assert labelling.source == "user" and labelling.level_check.anchor == "user"
    assert labelling.spine_center_lps_mm is None and labelling.notes
    empty = sitk.Image(labels.GetSize(), sitk.sitkUInt8)
    with pytest.raises(InputError, match="empty"):
        stages.user_labelling(empty)


def test_calibrate_estimates_a_pending_internal_request_only(toy):
    ct, _ = toy
    linear = linear_calibration(1.1, -5.0)
    assert stages.calibrate(ct, linear) is linear
    assert stages.calibrate(ct, no_calibration()).kind == "none"
    resolved = stages.calibrate(ct, parse_calibration("internal"))
    assert not resolved.pending and resolved.requested == "internal"


def test_cut_patches_feeds_the_calibrated_hu_to_the_network_and_keeps_the_scanner_hu(toy):
    ct, labels = toy
    window = SegmentationConfig()
    plain = stages.cut_patches(ct, labels, no_calibration(), PatchConfig(), window)
    cal = linear_calibration(1.2, -30.0)
    calibrated = stages.cut_patches(ct, labels, cal, PatchConfig(), window)
    assert list(plain.patches) == ["L1", "L2", "L3", "L4"]
    for name, patch in calibrated.patches.items():
        np.testing.assert_array_equal(patch.hu, plain.patches[name].hu)
        np.testing.assert_array_equal(patch.x01, network_input(cal.apply(patch.hu), window))
        assert not np.array_equal(patch.x01, plain.patches[name].x01)
        assert patch.info.mean_hu == pytest.approx(VERTEBRAE[name][1], abs=5.0)
    assert plain.reasons == {n: [] for n in ("L1", "L2", "L3", "L4")}


def test_regress_orders_the_bmd_by_the_trabecular_hu(toy, regression_only):
    ct, labels = toy
    measured = stages.cut_patches(ct, labels, no_calibration(), PatchConfig(), SegmentationConfig())
    bmd = stages.regress(regression_only, measured)
    assert list(bmd) == ["L1", "L2", "L3", "L4"]
    # Trabecular HU: L1 180 > L2 140 > L3 100 > L4 70 (toy_ct); denser bone reads higher.
    assert bmd["L1"] > bmd["L2"] > bmd["L3"] > bmd["L4"]
    empty = stages.Measurements({}, {}, {})
    assert stages.regress(regression_only, empty) == {}


def _measured(centres_z):
    """Measurements with hand-made geometry (no image needed)."""
    from osteobmd.patches import Patch, VertebraGeometry

    geometry, patches = {}, {}
    for name, z in centres_z.items():
        geometry[name] = VertebraGeometry(np.array([0.0, 0.0, z]), 1000.0, 26.0, 5000)
        info = PatchInfo([0.0, 0.0, z], 22.4, 32, 0.7, [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [], 100.0)
        patches[name] = Patch(np.zeros((3, 32, 32), np.float32), np.zeros((3, 32, 32), np.float32), info, 1.0)
    reasons = {n: ([] if n in centres_z else ["missing"]) for n in ("L1", "L2", "L3", "L4")}
    return stages.Measurements(geometry, patches, reasons)


def test_verdicts_flag_implausible_bmd_and_the_mean_skips_invalid_levels():
    measured = _measured({"L1": 150.0, "L2": 114.0, "L3": 78.0})
    vertebrae = stages.vertebra_verdicts(measured, {"L1": 100.0, "L2": 900.0, "L3": 110.0}, False)
    assert [v.valid for v in vertebrae] == [True, False, True, False]
    assert "implausible BMD" in vertebrae[1].reasons[0] and vertebrae[3].reasons == ["missing"]
    assert measured.reasons["L2"] == []  # the stage's input is not changed
    mean, notes = stages.mean_bmd(vertebrae, ("L1", "L2", "L3"))
    assert mean == pytest.approx(105.0) and "L2 skipped" in notes[0]
    assert stages.mean_bmd(vertebrae, ("L2", "L4")) == (None, [
        "No valid measurement: none of L2, L4 passed the checks (see reasons)."])


def test_verdicts_and_mean_assemble_the_result_and_its_notes_in_order(toy):
    _, labels = toy
    labelling = stages.Labelling(labels, LevelCheck("sacrum", True, ["names ok"]), "user", notes=["user map"])
    measured = _measured({"L1": 150.0, "L2": 114.0, "L3": 78.0, "L4": 42.0})
    refused = parse_calibration("internal")
    refused = type(refused)(kind="none", requested="internal", note="no air")
    result = stages.verdicts_and_mean("c1", measured, {n: 90.0 for n in measured.patches}, labelling, refused,
                                      ("L1", "L2"))
    assert (result.case, result.mean_bmd_mg_cm3, result.classification, result.valid) == ("c1", 90.0, "osteopenia", True)
    assert result.messages == ["user map", "HU calibration 'internal' could not be made (no air); raw HU used.",
                               "names ok"]
    assert result.mask_source == "user" and all(v.from_corrected_mask for v in result.vertebrae)
    assert result.calibration["requested"] == "internal" and result.level_anchor == "sacrum"
