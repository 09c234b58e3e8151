"""The synthetic lumbar CT generator: determinism, labels, density, vendors, I/O, views.

Cases are generated on reduced grids (fewer, larger pixels) so the file runs in well under
a minute; the anatomy and the HU models are the same as at full size.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from osteobmd.synthetic import LEVEL_CODES, SyntheticCase, make_case, make_cohort, write_case

FAST = dict(matrix=256, spacing_xy=0.9, slice_mm=2.5)  # spine-centred 230 mm field of view
WIDE = dict(matrix=400, spacing_xy=1.0, slice_mm=3.0)  # the whole abdomen


def arr(img):
    return sitk.GetArrayFromImage(img)


def core_mean(case: SyntheticCase, label: int, erode_mm: float = 4.0) -> float:
    """Mean HU inside a vertebral body, away from its cortex."""
    lab = arr(case.labels) == label
    sx, sy, sz = case.ct.GetSpacing()
    it = max(1, int(round(erode_mm / max(sx, sz))))
    core = ndi.binary_erosion(lab, iterations=it)
    return float(arr(case.ct)[core].mean())


def centroid_mm(img, mask):
    k, j, i = np.argwhere(mask).mean(axis=0)
    return np.array(img.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k))))


@pytest.fixture(scope="module")
def case7():
    return make_case(7, **FAST)


def test_case_structure(case7):
    c = case7
    assert isinstance(c, SyntheticCase)
    assert c.ct.GetPixelID() == sitk.sitkFloat32
    assert c.labels.GetPixelID() == sitk.sitkUInt8 and c.levels.GetPixelID() == sitk.sitkUInt8
    assert c.ct.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    for im in (c.labels, c.levels):
        assert im.GetSize() == c.ct.GetSize()
        assert im.GetSpacing() == c.ct.GetSpacing() and im.GetOrigin() == c.ct.GetOrigin()
    assert np.allclose(c.ct.GetSpacing(), (0.9, 0.9, 2.5))
    assert {"L1", "L2", "L3", "L4"} <= set(c.bmd)
    json.dumps(c.meta)  # serialisable
    for key in ("seed", "vendor", "calibration", "spacing_mm", "noise_hu", "levels_in_view", "fracture",
                "metal", "contrast", "transitional", "lordosis_deg", "scoliosis_deg"):
        assert key in c.meta
    assert c.meta["seed"] == 7 and c.meta["vendor"] == "A"


def test_lateral_crop_keeps_the_spine():
    c = make_case(7, lateral_mm=120, **FAST)
    nx = c.ct.GetSize()[0]
    assert nx == round(120 / 0.9)
    assert set(np.unique(arr(c.labels)).tolist()) == {0, 1, 2, 3, 4}
    # the crop is centred on the spine: the L2 body sits mid-image left-right
    i = np.argwhere(arr(c.labels) == 2)[:, 2].mean()
    assert abs(i - (nx - 1) / 2) < 15


def test_deterministic_by_seed():
    a = make_case(11, **FAST)
    b = make_case(11, **FAST)
    c = make_case(12, **FAST)
    assert np.array_equal(arr(a.ct), arr(b.ct))
    assert np.array_equal(arr(a.labels), arr(b.labels))
    assert a.bmd == b.bmd
    strip = lambda m: {k: v for k, v in m.items() if k != "timing_s"}
    assert strip(a.meta) == strip(b.meta)
    assert a.bmd != c.bmd
    assert arr(a.ct).shape != arr(c.ct).shape or not np.array_equal(arr(a.ct), arr(c.ct))


def test_labels_values_order_and_sizes(case7):
    c = case7
    lab = arr(c.labels)
    lev = arr(c.levels)
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3, 4}
    assert set(np.unique(lev).tolist()) <= {0, *LEVEL_CODES.values()}
    # labels are exactly the L1..L4 bodies of the level map
    for name, value in (("L1", 1), ("L2", 2), ("L3", 3), ("L4", 4)):
        assert np.array_equal(lab == value, lev == LEVEL_CODES[name])
    z = [centroid_mm(c.labels, lab == v)[2] for v in (1, 2, 3, 4)]
    assert z[0] > z[1] > z[2] > z[3]  # LPS: z grows superiorly, L1 on top
    # consecutive bodies ~ one body + one disc apart
    gaps = -np.diff(z)
    assert np.all((gaps > 25.0) & (gaps < 50.0)), gaps
    sx, sy, sz = c.ct.GetSpacing()
    for v in (1, 2, 3, 4):
        m = lab == v
        vol_cm3 = m.sum() * sx * sy * sz / 1000.0
        assert 12.0 < vol_cm3 < 70.0, (v, vol_cm3)
        # left-right width on the axial slice through the body centre
        k = int(round(np.argwhere(m)[:, 0].mean()))
        cols = np.nonzero(m[k].any(axis=0))[0]
        rows = np.nonzero(m[k].any(axis=1))[0]
        width, depth = (np.ptp(cols) + 1) * sx, (np.ptp(rows) + 1) * sy
        assert 33.0 < width < 62.0, (v, width)
        assert 24.0 < depth < 48.0, (v, depth)
    # the bodies are bone: brighter than the soft tissue around them
    assert core_mean(c, 2) > -20.0


def test_trabecular_hu_follows_bmd():
    bmd, hu = [], []
    for seed, target in zip(range(20, 28), (45, 65, 85, 105, 125, 150, 180, 210)):
        c = make_case(seed, bmd_mean=target, **FAST)
        for name, v in (("L1", 1), ("L2", 2), ("L3", 3), ("L4", 4)):
            bmd.append(c.bmd[name])
            hu.append(core_mean(c, v))
    r = np.corrcoef(bmd, hu)[0, 1]
    slope = np.polyfit(bmd, hu, 1)[0]
    assert r > 0.9, r
    assert 0.8 < slope < 1.4, slope


def test_vendors_read_low_and_high_on_the_same_anatomy():
    cases = {v: make_case(3, vendor=v, **FAST) for v in "ABC"}
    assert np.array_equal(arr(cases["A"].labels), arr(cases["B"].labels))
    assert np.array_equal(arr(cases["A"].labels), arr(cases["C"].labels))
    assert cases["A"].bmd == cases["B"].bmd == cases["C"].bmd
    bone = {v: np.mean([core_mean(c, k) for k in (1, 2, 3, 4)]) for v, c in cases.items()}
    assert bone["B"] < bone["A"] - 5.0
    assert bone["C"] > bone["A"] + 5.0
    cal = {v: c.meta["calibration"] for v, c in cases.items()}
    assert cal["B"]["hu_a"] < 1.0 < cal["C"]["hu_a"]
    # the global error applies to every tissue: voxel-wise, B ~ a*A + b
    a, b = arr(cases["A"].ct), arr(cases["B"].ct)
    m = (a > -900) & (a < 1500)
    fit = np.polyfit(a[m][::50], b[m][::50], 1)
    assert abs(fit[0] - cal["B"]["hu_a"] / cal["A"]["hu_a"]) < 0.02


def _mode(values, lo, hi, bw=2.0):
    h, e = np.histogram(values, bins=np.arange(lo, hi + bw, bw))
    h = ndi.gaussian_filter1d(h.astype(float), 3)
    return float(e[np.argmax(h)] + bw / 2)


def test_air_fat_muscle_near_nominal_for_vendor_A():
    c = make_case(5, **WIDE)
    a = arr(c.ct)
    assert abs(_mode(a, -1100, -850) - (-1000.0)) < 15.0
    assert abs(_mode(a, -180, -40) - (-100.0)) < 15.0
    assert abs(_mode(a, 10, 100) - 50.0) < 15.0
    assert a.min() >= -1024 and a.max() <= 3071


def test_write_case_round_trip(tmp_path, case7):
    c = case7
    write_case(c, tmp_path / "case")
    d = tmp_path / "case"
    ct = sitk.ReadImage(str(d / "ct.nrrd"))
    assert ct.GetPixelID() == sitk.sitkInt16
    assert np.allclose(ct.GetSpacing(), c.ct.GetSpacing()) and np.allclose(ct.GetOrigin(), c.ct.GetOrigin())
    assert np.abs(arr(ct).astype(np.float32) - arr(c.ct)).max() <= 0.5 + 1e-3
    lab = sitk.ReadImage(str(d / "labels.nrrd"))
    assert np.array_equal(arr(lab), arr(c.labels))
    with open(d / "bmd.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["vertebra"] for r in rows] == ["L1", "L2", "L3", "L4"]
    for r in rows:
        assert abs(float(r["bmd_mg_cm3"]) - c.bmd[r["vertebra"]]) < 0.01
    meta = json.loads((d / "case.json").read_text(encoding="utf-8"))
    assert meta == json.loads(json.dumps(c.meta))


def test_partial_views_really_drop_levels():
    full = make_case(2, view="full", **FAST)
    top = make_case(2, view="top_cut", **FAST)
    bottom = make_case(2, view="bottom_cut", **FAST)
    assert {"T12", "L1", "L4", "L5", "S"} <= set(full.meta["levels_in_view"])
    lev_top = set(np.unique(arr(top.levels)).tolist())
    assert LEVEL_CODES["T12"] not in lev_top and LEVEL_CODES["T11"] not in lev_top
    assert "T12" not in top.meta["levels_in_view"]
    assert "L1" not in top.meta["levels_complete"]
    lev_bot = set(np.unique(arr(bottom.levels)).tolist())
    assert LEVEL_CODES["S"] not in lev_bot and LEVEL_CODES["L5"] not in lev_bot
    assert "L4" not in bottom.meta["levels_complete"]
    assert arr(top.ct).shape[0] < arr(full.ct).shape[0]
    assert arr(bottom.ct).shape[0] < arr(full.ct).shape[0]


def test_hard_cases_are_off_by_default_and_forced_by_overrides():
    assert not any(make_case(s, **FAST).meta[k] for s in (1,) for k in ("fracture", "metal", "contrast"))
    c = make_case(1, metal="screws", **FAST)
    assert c.meta["metal"] == "screws" and arr(c.ct).max() > 2000
    f = make_case(1, fracture="L2", fracture_ratio=0.6, **FAST)
    n = make_case(1, **FAST)
    assert f.meta["fracture"] == "L2"
    v_f = (arr(f.labels) == 2).sum()
    v_n = (arr(n.labels) == 2).sum()
    assert v_f < 0.92 * v_n  # the wedge took height off the body
    t = make_case(1, transitional="six_lumbar", **FAST)
    assert "L6" in t.meta["levels_in_view"] and t.meta["lumbar_count"] == 6
    with pytest.raises(TypeError):
        make_case(1, not_an_option=3)


def test_make_cohort_is_deterministic_and_resumable(tmp_path):
    small = dict(matrix=160, spacing_xy=1.0, slice_mm=3.0, view="bottom_cut")
    paths = make_cohort(tmp_path / "cohort", 2, seed0=40, **small)
    assert [p.name for p in paths] == ["case_0000", "case_0001"]
    for p in paths:
        for f in ("ct.nrrd", "labels.nrrd", "bmd.csv", "case.json"):
            assert (p / f).is_file()
    meta = json.loads((paths[1] / "case.json").read_text(encoding="utf-8"))
    assert meta["seed"] == 41
    stamp = [(p / "ct.nrrd").stat().st_mtime_ns for p in paths]
    (paths[1] / "case.json").unlink()  # an interrupted case is redone, a complete one skipped
    again = make_cohort(tmp_path / "cohort", 2, seed0=40, **small)
    assert again == paths
    assert (paths[0] / "ct.nrrd").stat().st_mtime_ns == stamp[0]
    assert (paths[1] / "case.json").is_file()
    a = sitk.ReadImage(str(paths[1] / "ct.nrrd"))
    b = make_case(41, **small, **{k: v for k, v in meta["overrides"].items() if k not in small})
    assert np.abs(arr(a).astype(np.float32) - arr(b.ct)).max() <= 0.5 + 1e-3  # same case, int16-rounded
