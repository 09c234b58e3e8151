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
from osteobmd.naming import LevelNaming
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
    # The finder's classes on the CT's own sagittal grid: background, body, sacrum.
    assert segmentation.fused.shape == (ct.GetSize()[2], ct.GetSize()[1])
    assert set(np.unique(segmentation.fused)) <= {0, 1, 2} and (segmentation.fused == 1).any()
    assert segmentation.spacing_zy == (ct.GetSpacing()[2], ct.GetSpacing()[1])
    assert segmentation.slab_indices == tuple(canal.slab_indices)
    volume = sitk.GetArrayFromImage(segmentation.labels_volume(ct, (segmentation.fused == 1).astype(np.uint8)))
    assert set(np.flatnonzero(volume.any(axis=(0, 1)))) == set(canal.slab_indices)


def _finder_map(labels: sitk.Image, sacrum_level: str = None) -> np.ndarray:
    """The toy's mid-sagittal bodies as the finder would see them; one of them may be called sacrum."""
    lab = sitk.GetArrayViewFromImage(labels).max(axis=2)
    fused = (lab > 0).astype(np.uint8)
    if sacrum_level:
        fused[lab == VERTEBRAE_ORDER.index(sacrum_level) + 1] = 2
    return fused


VERTEBRAE_ORDER = ["L1", "L2", "L3", "L4"]


def _slab_canal(ct):
    x = ct.GetOrigin()[0] + np.arange(ct.GetSize()[0]) * ct.GetSpacing()[0]
    slab = [int(i) for i in np.flatnonzero(np.abs(x - 4.0) <= 3.5)]
    return CanalResult(np.zeros((1, 3)), np.zeros(1, int), np.array([4.0, 30.0, 90.0]), slab)


def test_name_levels_counts_up_from_the_sacrum_into_the_slab(toy):
    ct, labels = toy
    canal = _slab_canal(ct)
    spacing = (ct.GetSpacing()[2], ct.GetSpacing()[1])
    # The lowest block plays the sacrum: the three bodies above it are L5, L4 and L3.
    fused = _finder_map(labels, sacrum_level="L4")
    labelling = stages.name_levels(ct, canal, Segmentation(fused, spacing, tuple(canal.slab_indices)))
    assert labelling.source == "network" and labelling.naming.anchor == "sacrum" and labelling.naming.valid
    np.testing.assert_allclose(labelling.spine_center_lps_mm, [4.0, 30.0, 90.0])
    out = sitk.GetArrayViewFromImage(labelling.labels)
    toy_labels = sitk.GetArrayViewFromImage(labels)
    i = canal.slab_indices[len(canal.slab_indices) // 2]
    # The toy's L1 block is counted as L3 and its L2 block as L4; its L3 block (now L5) is not measured.
    assert set(np.unique(out[toy_labels[:, :, i] == 1, i])) == {3}
    assert set(np.unique(out[toy_labels[:, :, i] == 2, i])) == {4}
    assert not out[toy_labels[:, :, i] == 3, i].any()
    outside = [k for k in range(out.shape[2]) if k not in canal.slab_indices]
    assert not out[:, :, outside].any()


def test_without_an_anchor_no_level_is_named_and_every_level_says_why(toy, regression_only):
    ct, labels = toy
    canal = _slab_canal(ct)
    fused = _finder_map(labels)  # four bodies, no sacrum, no ribs in the toy
    labelling = stages.name_levels(ct, canal, Segmentation(fused, (ct.GetSpacing()[2], ct.GetSpacing()[1]),
                                                           tuple(canal.slab_indices)))
    assert not labelling.naming.valid and labelling.naming.anchor is None
    assert not sitk.GetArrayViewFromImage(labelling.labels).any()
    measured = stages.cut_patches(ct, labelling.labels, no_calibration(), PatchConfig(), SegmentationConfig())
    result = stages.verdicts_and_mean("toy", measured, {}, labelling, no_calibration(), ("L1", "L2", "L3"))
    assert not result.valid and result.level_anchor == "none" and result.level_naming["valid"] is False
    assert all(any("could not be named" in r for r in v.reasons) for v in result.vertebrae)
    # The bodies were found, only not named: no level is called "missing from the segmentation".
    assert not any("missing" in r for v in result.vertebrae for r in v.reasons)
    assert labelling.naming.message in result.messages


def test_user_labelling_is_marked_and_an_empty_one_refused(toy):
    _, labels = toy
    labelling = stages.user_labelling(labels)
    assert labelling.source == "user" and labelling.naming is None
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
    naming = LevelNaming(["L1", "L2", "L3", "L4", "L5"], "sacrum", True, "names ok", sources=["sacrum"] * 5)
    labelling = stages.Labelling(labels, naming, "network", notes=["user map"])
    measured = _measured({"L1": 150.0, "L2": 114.0, "L3": 78.0, "L4": 42.0})
    refused = parse_calibration("internal")
    refused = type(refused)(kind="none", requested="internal", note="no air")
    result = stages.verdicts_and_mean("c1", measured, {n: 90.0 for n in measured.patches}, labelling, refused,
                                      ("L1", "L2"))
    assert (result.case, result.mean_bmd_mg_cm3, result.classification, result.valid) == ("c1", 90.0, "osteopenia", True)
    assert result.messages == ["user map", "HU calibration 'internal' could not be made (no air); raw HU used.",
                               "names ok"]
    assert result.mask_source == "network" and not any(v.from_corrected_mask for v in result.vertebrae)
    assert result.calibration["requested"] == "internal" and result.level_anchor == "sacrum"
    assert result.level_naming["named_levels"] == ["L1", "L2", "L3", "L4", "L5"]
    assert result.levels_consistent is None  # one anchor: nothing to check the names against
