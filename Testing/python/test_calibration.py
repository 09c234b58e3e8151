"""osteobmd.calibration and internal_calibration: internal (air + fat) and user linear HU calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from osteobmd.calibration import Calibration, linear_calibration, parse_calibration, resolve_calibration
from osteobmd.internal_calibration import estimate_internal_calibration
from osteobmd.errors import InputError

SAMPLE_CT = Path(__file__).resolve().parents[2] / "samples" / "ct.nii.gz"


def phantom(transform=(1.0, 0.0), padding=-3024.0, air=True, fat=True, noise=12.0, seed=0,
            shape=(30, 200, 200), spacing=(1.5, 1.5, 2.5)) -> sitk.Image:
    """A trunk-like phantom: air around a fat ellipse with a muscle core and a bone disc,
    inside a reconstruction circle padded with `padding`; HU' = a*HU + b applied to the
    scanned values (not to the padding)."""
    nz, ny, nx = shape
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:ny, :nx].astype(np.float32)
    cy, cx = ny / 2, nx / 2
    sl = np.full((ny, nx), -1000.0 if air else -100.0, np.float32)
    body = ((y - cy) / (0.32 * ny)) ** 2 + ((x - cx) / (0.42 * nx)) ** 2 < 1
    sl[body] = -100.0 if fat else 45.0
    core = ((y - cy) / (0.2 * ny)) ** 2 + ((x - cx) / (0.28 * nx)) ** 2 < 1
    sl[core] = 45.0
    sl[(y - cy - 10) ** 2 + (x - cx) ** 2 < 12 ** 2] = 250.0  # vertebral body
    vol = np.repeat(sl[None], nz, axis=0) + rng.normal(0, noise, (nz, ny, nx)).astype(np.float32)
    a, b = transform
    vol = a * vol + b
    if padding is not None:
        vol[:, (y - cy) ** 2 + (x - cx) ** 2 > (0.49 * nx) ** 2] = padding
    image = sitk.GetImageFromArray(vol.astype(np.float32))
    image.SetSpacing(spacing)
    return image


@pytest.mark.parametrize("padding", [-3024.0, -1024.0, None])
def test_internal_calibration_inverts_planted_transform(padding):
    ct = phantom(transform=(0.9, -15.0), padding=padding)
    cal = estimate_internal_calibration(ct)
    assert cal.kind == "internal", cal.note
    # The true inverse of HU' = 0.9 HU - 15 is HU = HU'/0.9 + 15/0.9.
    assert cal.slope == pytest.approx(1 / 0.9, rel=0.02)
    assert cal.intercept == pytest.approx(15 / 0.9, abs=2.0)
    assert cal.measured["air"] == pytest.approx(0.9 * -1000 - 15, abs=5)
    assert cal.measured["fat"] == pytest.approx(0.9 * -100 - 15, abs=3)
    # Bone in the transformed scan comes back to its true HU.
    assert float(cal.apply(np.array([0.9 * 250 - 15]))[0]) == pytest.approx(250, abs=4)
    assert cal.measured["muscle"] == pytest.approx(0.9 * 45 - 15, abs=4)
    assert "internal calibration" in cal.note


def test_internal_calibration_identity_on_a_calibrated_scan():
    cal = estimate_internal_calibration(phantom(), spine_center_lps_mm=(150.0, 160.0, 37.5))
    assert cal.kind == "internal"
    assert cal.slope == pytest.approx(1.0, abs=0.01)
    assert cal.intercept == pytest.approx(0.0, abs=2.0)
    assert cal.details["muscle_region"] == "paraspinal"


def test_internal_calibration_refuses_without_air():
    cal = estimate_internal_calibration(phantom(air=False, padding=None))
    assert cal.kind == "none" and cal.requested == "internal"
    assert "air" in cal.note and "refused" in cal.note
    assert cal.slope == 1.0 and cal.intercept == 0.0
    hu = np.array([100.0, 200.0])
    np.testing.assert_array_equal(cal.apply(hu), hu.astype(np.float32))


def test_internal_calibration_refuses_without_fat():
    cal = estimate_internal_calibration(phantom(fat=False))
    assert cal.kind == "none" and "fat" in cal.note


@pytest.mark.parametrize("true_air, expect_kind", [(-1010.0, "internal"), (-1035.0, "none")])
def test_clamped_air_is_not_mistaken_for_the_air_level(true_air, expect_kind):
    # Scanners storing unsigned values clamp air at -1024; with noise SD 25 a real air
    # level of -1010 leaves ~29 % of the air voxels at exactly -1024.
    ct = phantom(padding=-1024.0, noise=25.0, seed=3)
    vol = sitk.GetArrayFromImage(ct)
    vol[vol < -500] += true_air + 1000.0
    vol = np.round(np.maximum(vol, -1024.0))
    clamped = sitk.GetImageFromArray(vol)
    clamped.CopyInformation(ct)
    cal = estimate_internal_calibration(clamped)
    assert cal.kind == expect_kind, cal.note
    if expect_kind == "internal":
        assert cal.details["air_clamped_at"] == -1024.0
        assert cal.measured["air"] == pytest.approx(true_air, abs=4.0)
    else:
        assert "clamped" in cal.note


def test_internal_calibration_on_a_full_size_ct():
    # Its speed is a benchmark figure (benchmarks/benchmark_pipeline.py prints the calibration stage), not a test.
    ny = nx = 512
    y, x = np.mgrid[:ny, :nx]
    sl = np.full((ny, nx), -1000, np.int16)
    sl[((y - 256) / 160.0) ** 2 + ((x - 256) / 210.0) ** 2 < 1] = -100
    sl[((y - 256) / 100.0) ** 2 + ((x - 256) / 140.0) ** 2 < 1] = 40
    noise = np.random.default_rng(1).integers(-15, 16, (ny, nx), dtype=np.int16)
    sl = sl + noise
    sl[(y - 256) ** 2 + (x - 256) ** 2 > 250 ** 2] = -2048
    ct = sitk.GetImageFromArray(np.broadcast_to(sl, (400, ny, nx)).copy())
    ct.SetSpacing((0.7, 0.7, 1.0))
    cal = estimate_internal_calibration(ct)
    assert cal.kind == "internal" and cal.slope == pytest.approx(1.0, abs=0.02)


@pytest.mark.skipif(not SAMPLE_CT.exists(), reason="bundled sample CT not present")
def test_real_sample_ct_needs_almost_no_correction():
    ct = sitk.DICOMOrient(sitk.Cast(sitk.ReadImage(str(SAMPLE_CT)), sitk.sitkFloat32), "LPS")
    cal = estimate_internal_calibration(ct)
    assert cal.kind == "internal", cal.note
    assert -1030 < cal.measured["air"] < -970 and -125 < cal.measured["fat"] < -80
    assert cal.slope == pytest.approx(1.0, abs=0.05)


def test_spec_parsing():
    assert parse_calibration("none").kind == "none"
    assert parse_calibration(None).kind == "none"
    pending = parse_calibration("internal")
    assert pending.kind == "internal" and pending.pending
    with pytest.raises(ValueError):
        pending.apply(np.zeros(2))
    resolved = resolve_calibration(pending, phantom(transform=(0.9, -15.0)))
    assert resolved.kind == "internal" and not resolved.pending
    assert resolve_calibration(parse_calibration("Internal"), phantom()).kind == "internal"
    lin = parse_calibration("linear:1.02,-3.5")
    assert (lin.kind, lin.slope, lin.intercept) == ("linear", 1.02, -3.5)
    assert parse_calibration(" linear: 0.98 , 4 ").intercept == 4.0
    for bad in ("linear", "linear:1.02", "linear:a,b", "linear:1,2,3", "linear:5,0", "linear:nan,0", "phantom"):
        with pytest.raises(InputError):
            parse_calibration(bad)


def test_apply_and_round_trip():
    cal = linear_calibration(1.1, -10.0)
    np.testing.assert_allclose(cal.apply(np.array([[0.0, 100.0]])), [[-10.0, 100.0]], rtol=1e-6)
    assert cal.apply(np.array([1.0])).dtype == np.float32
    np.testing.assert_allclose(cal.invert(cal.apply(np.array([123.0]))), [123.0], rtol=1e-5)
    image = sitk.GetImageFromArray(np.full((2, 3, 4), 100, np.int16))
    assert sitk.GetArrayFromImage(cal.apply(image)).max() == pytest.approx(100.0)
    again = Calibration.from_dict(cal.to_dict())
    assert again == cal
    assert Calibration.from_dict(None).kind == "none"
    np.testing.assert_array_equal(Calibration().apply([1.0, 2.0]), np.array([1.0, 2.0], np.float32))
    internal = estimate_internal_calibration(phantom(transform=(0.9, -15.0)))
    assert Calibration.from_dict(internal.to_dict()).slope == internal.slope
