"""Sagittal preprocessing (METHOD 2), trabecular patches (METHOD 3) and validity checks."""

import numpy as np
import pytest

from osteobmd.config import PatchConfig, SegmentationConfig
from osteobmd.patches import extract_patch, vertebra_geometry
from osteobmd.sagittal import SagittalGrid, prepare_for_network, resample_labels, window01
from osteobmd.validity import bmd_reasons, geometry_reasons
from toy_ct import VERTEBRAE, make_toy_ct, mid_sagittal_labels


def test_window_uses_fixed_bounds_not_image_min_max():
    cfg = SegmentationConfig()
    assert window01(np.array([-150.0, 350.0, 850.0]), cfg).tolist() == [0.0, 0.5, 1.0]
    # A dim image stays dim: no per-image stretching.
    assert window01(np.full(4, 0.0), cfg).max() == pytest.approx(0.15)


@pytest.mark.parametrize("spacing_zy", [(0.625, 0.7), (3.0, 3.0)])
def test_network_grid_has_the_fixed_spacing_and_maps_back(spacing_zy):
    cfg = SegmentationConfig(spacing_mm=1.5)
    shape = (int(240 / spacing_zy[0]), int(200 / spacing_zy[1]))
    labels = np.zeros(shape, np.uint8)
    zz, yy = np.mgrid[0:shape[0], 0:shape[1]]
    labels[(np.abs(zz * spacing_zy[0] - 120) < 30) & (np.abs(yy * spacing_zy[1] - 80) < 25)] = 2
    image01, grid = prepare_for_network(labels * 100.0, spacing_zy, cfg)
    assert image01.shape[0] % 16 == 0 and image01.shape[1] % 16 == 0
    net_labels = resample_labels(labels, spacing_zy, cfg, grid=grid)
    # 60 mm x 50 mm of label is 40 x 33 pixels at 1.5 mm, whatever the input spacing.
    assert (net_labels == 2).sum() == pytest.approx(40 * 33, rel=0.1)
    onehot = np.stack([net_labels == c for c in range(3)]).astype(np.float32)
    back = grid.to_input_grid(onehot).argmax(axis=0)
    assert (back == labels).mean() > 0.99


def test_paper_crop_to_512():
    cfg = SegmentationConfig(spacing_mm=0.7, crop_size=512)
    grid = SagittalGrid.make((700, 600), (0.7, 0.7), cfg)
    assert grid.out_shape == (512, 512) and grid.offset[0] < 0  # centre-cropped


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 1.0), (3.0, 3.0, 3.0)])
def test_patch_is_cortex_free_and_reads_the_trabecular_hu(spacing):
    ct, labels = make_toy_ct(spacing)
    labels = mid_sagittal_labels(labels)
    geometry = vertebra_geometry(labels)
    assert list(geometry) == ["L1", "L2", "L3", "L4"]
    for name, g in geometry.items():
        patch = extract_patch(ct, g.center_lps_mm, PatchConfig(), labels, int(name[1]))
        assert patch.hu.shape == (3, 32, 32)
        assert patch.reasons == []
        assert patch.info.size_mm == pytest.approx(32 * 0.7)
        # No cortex (700 HU) in the patch: it reads the trabecular value set in the phantom.
        assert patch.info.mean_hu == pytest.approx(VERTEBRAE[name][1], abs=3.0)
        assert patch.x01.max() <= 1.0 and patch.x01.min() >= 0.0


def test_patch_flags_metal():
    ct, labels = make_toy_ct((1.0, 1.0, 1.0), metal_in="L3")
    labels = mid_sagittal_labels(labels)
    g = vertebra_geometry(labels)
    assert any("metal" in r for r in extract_patch(ct, g["L3"].center_lps_mm, labels=labels, label_value=3).reasons)
    assert extract_patch(ct, g["L1"].center_lps_mm, labels=labels, label_value=1).reasons == []


def test_patch_outside_bone_is_flagged():
    ct, labels = make_toy_ct((1.0, 1.0, 1.0))
    g = vertebra_geometry(mid_sagittal_labels(labels))
    # A "centre" in the soft tissue far in front of the spine.
    centre = g["L2"].center_lps_mm + np.array([0.0, -45.0, 0.0])
    assert any("not inside trabecular bone" in r for r in extract_patch(ct, centre).reasons)


def test_validity_missing_order_and_size():
    ct, labels = make_toy_ct((2.0, 2.0, 2.0), vertebrae=("L1", "L2", "L3"))
    g = vertebra_geometry(mid_sagittal_labels(labels))
    reasons = geometry_reasons(g)
    assert reasons["L1"] == [] and any("missing" in r for r in reasons["L4"])
    swapped = {"L1": g["L2"], "L2": g["L1"], "L3": g["L3"]}
    assert any("out of order" in r for r in geometry_reasons(swapped)["L1"])
    g["L3"].sagittal_area_mm2 = 50.0
    assert any("implausible size" in r for r in geometry_reasons(g)["L3"])
    assert bmd_reasons(120.0) == [] and bmd_reasons(900.0)


def test_validity_flags_a_skipped_level():
    """Labels 'L2' and 'L3' three bodies apart: a level between them is unlabelled or misnamed."""
    ct, labels = make_toy_ct((2.0, 2.0, 2.0))
    g = vertebra_geometry(mid_sagittal_labels(labels))
    assert all(r == [] for r in geometry_reasons(g).values())
    g["L3"].center_lps_mm = g["L3"].center_lps_mm - np.array([0.0, 0.0, 80.0])
    reasons = geometry_reasons(g)
    assert any("one vertebra apart" in r for r in reasons["L2"] + reasons["L3"])
    # The chain is broken, so no name is trusted: L1 and L4 are flagged too.
    assert any("level names unreliable" in r for r in reasons["L1"] + reasons["L4"])
