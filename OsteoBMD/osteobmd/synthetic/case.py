"""One synthetic case: parameters -> anatomy -> soft tissue + spine -> scanner -> images."""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict

import numpy as np
import SimpleITK as sitk

from .anatomy import build_anatomy
from .constants import LEVEL_CODES, LUMBAR_LABELS
from .params import _streams, sample_params
from .scanner import add_noise, apply_hu_scale, metal_streaks, noise_modulation
from .softtissue import render_soft_volume
from .spine import render_ribs, render_spine

F32 = np.float32
GENERATOR_VERSION = "1.0"


@dataclass
class SyntheticCase:
    ct: sitk.Image  # float32 HU, LPS, identity direction
    labels: sitk.Image  # uint8, 1..4 = L1..L4 vertebral bodies
    levels: sitk.Image  # uint8, every vertebral body in view, codes LEVEL_CODES
    bmd: Dict[str, float]  # true trabecular BMD (mg/cm3) per vertebra
    meta: dict = field(default_factory=dict)


def _grid(p, anat):
    sxy = float(p["spacing_xy"])
    sz = float(p["slice_mm"])
    mat = p["matrix"]
    ny, nx = (mat, mat) if isinstance(mat, (int, np.integer)) else (int(mat[0]), int(mat[1]))
    fu = p["fov_u"]
    lz = anat.level_z
    sp = anat.spine_fn
    bmid = anat.body.at(lz["L3"])
    cxs, cys = sp.canal(lz["L3"])
    if p["view"] == "lumbar":
        cx = float(cxs) + 8.0 * (fu[0] - 0.5)
        cy = float(cys) - 45.0 + 16.0 * (fu[1] - 0.5)
    else:
        cx = bmid["cx"] + 16.0 * (fu[0] - 0.5)
        cy = bmid["cy"] + 12.0 * (fu[1] - 0.5) + 10.0
        # keep the back of the patient in the field of view when it is small
        half = ny * sxy / 2.0
        back = anat.body.y_back + 4.0
        if cy + half < back:
            cy = back - half
    if p.get("lateral_mm"):
        nx = min(nx, int(round(float(p["lateral_mm"]) / sxy)))
        cx = float(cxs)
    X = cx + (np.arange(nx) - (nx - 1) / 2.0) * sxy
    Y = cy + (np.arange(ny) - (ny - 1) / 2.0) * sxy
    # z extent by view
    H = {v.name: v.H for v in anat.vertebrae}
    view = p["view"]
    if view == "lumbar":
        top = lz["T12"] + fu[2] * 0.5 * H["T12"]
        bot = lz["S1"] - fu[3] * (lz["S1"] - lz["S2"])
    else:
        top = lz["T11"] + fu[2] * (lz["T10"] + 0.5 * H["T10"] - lz["T11"])
        bot = lz["S2"] - fu[3] * (lz["S2"] - lz["S5"] + 20.0)
        if view == "top_cut":
            top = lz["L1"] - 0.2 * H["L1"] - fu[2] * (lz["L1"] - lz["L2"]) * 0.8
        elif view == "bottom_cut":
            bot = lz["L4"] + 0.2 * H["L4"] + fu[3] * (lz["L3"] - lz["L4"]) * 0.6
    nz = max(int(math.floor((top - bot) / sz)) + 1, 2)
    Z = bot + np.arange(nz) * sz
    return X.astype(np.float64), Y.astype(np.float64), Z.astype(np.float64), (sxy, sxy, sz)


def make_case(seed: int, vendor: str = "A", **overrides) -> SyntheticCase:
    """Generate one synthetic lumbar CT (deterministic for a given seed, vendor and overrides).

    See `params.OVERRIDES` for the keys accepted as overrides."""
    t0 = time.perf_counter()
    p = sample_params(seed, vendor, overrides)
    rs = _streams(seed)
    anat = build_anatomy(p, (rs["spine"], rs["body"], rs["organs"], rs["metal"]))
    X, Y, Z, spacing = _grid(p, anat)
    sxy, _, sz = spacing
    psf = float(p["psf_mm"])
    edge = max(0.6 * sxy, 1.1 * psf)
    t1 = time.perf_counter()
    V = render_soft_volume(anat, p, X, Y, Z, rs["texture"], edge, max(float(p["soft_step_mm"]), sz))
    t2 = time.perf_counter()
    render_ribs(V, X, Y, Z, anat, p, sz, edge)
    levels, metal, present = render_spine(V, X, Y, Z, anat, p, sz, psf, rs["texture"])
    t3 = time.perf_counter()
    if metal is not None:
        metal_streaks(V, metal, X, Y, rs["metal"])
    apply_hu_scale(V, p["hu_a"], p["hu_b"])
    mod = noise_modulation(X, Y, anat.body.at(anat.level_z["L3"]))
    add_noise(V, rs["noise"], float(p["noise_hu"]), sxy, float(p["nps_peak"]), sz, mod)
    np.clip(V, -1024.0, 3071.0, out=V)
    t4 = time.perf_counter()

    lut = np.zeros(256, np.uint8)
    for name, lab in LUMBAR_LABELS.items():
        lut[LEVEL_CODES[name]] = lab
    labels = lut[levels]
    order = [v.name for v in anat.vertebrae] + ["S"]
    in_view = [n for n in order if LEVEL_CODES[n] in set(present)]
    # a level is complete when its body does not touch the first or last slice
    complete = []
    for n in in_view:
        c = LEVEL_CODES[n]
        if not (levels[0] == c).any() and not (levels[-1] == c).any():
            complete.append(n)

    # world placement: image centre near the isocentre, random table position
    fu = p["fov_u"]
    off = np.array([-float(X.mean()), -float(Y.mean()) + 30.0 * (fu[4] - 0.5), -400.0 - 500.0 * fu[4]])
    origin = (float(X[0] + off[0]), float(Y[0] + off[1]), float(Z[0] + off[2]))

    def img(a, dtype):
        im = sitk.GetImageFromArray(a.astype(dtype, copy=False))
        im.SetSpacing(spacing)
        im.SetOrigin(origin)
        im.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        return im

    bmd = {k: round(float(v), 2) for k, v in anat.info["bmd"].items()}
    slope, moff = p["bone_slope"], p["marrow_offset"]
    boost = 8.0 if p["contrast"] == "portal" else 5.0 if p["contrast"] == "arterial" else 0.0
    meta = dict(
        generator="osteobmd.synthetic", generator_version=GENERATOR_VERSION,
        seed=int(seed), vendor=vendor,
        source="synthetic", corrected=True,
        overrides=json.loads(json.dumps(overrides, default=str)),
        spacing_mm=[float(s) for s in spacing], size=[len(X), len(Y), len(Z)], origin_mm=list(origin),
        slice_mm=float(sz), noise_hu=float(p["noise_hu"]), psf_mm=psf, nps_peak_cyc_mm=float(p["nps_peak"]),
        calibration=dict(hu_a=float(p["hu_a"]), hu_b=float(p["hu_b"]),
                         note="HU_measured = hu_a * HU_true + hu_b for every tissue"),
        bone_calibration=dict(slope_hu_per_mg_cm3=float(slope), marrow_offset_hu=float(moff),
                              contrast_boost_hu=boost,
                              note="HU_true(trabecular) = slope * BMD + marrow_offset + contrast_boost"),
        nominal_true_hu=dict(air=-1000.0, fat=-100.0, muscle=50.0, blood=42.0),
        bmd_mean_L1_L3=round(float(p["bmd_mean"]), 2), bmd_mg_cm3=bmd,
        levels_in_view=in_view, levels_complete=complete,
        lumbar_count=sum(1 for v in anat.vertebrae if v.kind == "L"),
        view=p["view"], fracture=p["fracture"],
        fracture_ratio=float(p["fracture_ratio"]) if p["fracture"] else None,
        metal=p["metal"], contrast=p["contrast"], oral_contrast=bool(p["oral_contrast"]),
        transitional=p["transitional"],
        lordosis_deg=round(float(p["lordosis_deg"]), 2), sacral_slope_deg=round(float(p["sacral_slope_deg"]), 2),
        scoliosis_deg=round(float(p["scoliosis_deg"]), 2), rotation_deg=round(float(p["rotation_deg"]), 2),
        age=round(float(p["age"]), 1), obesity=round(float(p["obesity"]), 3), skeletal_size=round(float(p["size"]), 3),
        level_codes=dict(LEVEL_CODES),
        timing_s=dict(anatomy=round(t1 - t0, 3), soft=round(t2 - t1, 3), spine=round(t3 - t2, 3),
                      scanner=round(t4 - t3, 3), total=round(time.perf_counter() - t0, 3)),
    )
    return SyntheticCase(ct=img(V, np.float32), labels=img(labels, np.uint8), levels=img(levels, np.uint8),
                         bmd=bmd, meta=meta)


def write_case(case: SyntheticCase, folder, with_levels: bool = True) -> None:
    """folder/ct.nrrd (int16 HU, compressed), labels.nrrd, levels.nrrd, bmd.csv, case.json.

    case.json is written last (atomically): its presence marks a complete case folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    a = np.rint(sitk.GetArrayViewFromImage(case.ct))
    np.clip(a, -32768, 32767, out=a)
    ct = sitk.GetImageFromArray(a.astype(np.int16))
    ct.CopyInformation(case.ct)
    sitk.WriteImage(ct, str(folder / "ct.nrrd"), True)
    sitk.WriteImage(case.labels, str(folder / "labels.nrrd"), True)
    if with_levels:
        sitk.WriteImage(case.levels, str(folder / "levels.nrrd"), True)
    in_view = case.meta.get("levels_in_view")
    if in_view is None:
        present = set(np.unique(sitk.GetArrayViewFromImage(case.labels)).tolist())
    else:
        present = {LUMBAR_LABELS[n] for n in in_view if n in LUMBAR_LABELS}
    with open(folder / "bmd.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["vertebra", "bmd_mg_cm3"])
        for name, lab in LUMBAR_LABELS.items():
            if lab in present and name in case.bmd:
                w.writerow([name, f"{case.bmd[name]:.2f}"])
    tmp = folder / "case.json.tmp"
    with open(tmp, "w") as f:
        json.dump(case.meta, f, indent=1)
    os.replace(tmp, folder / "case.json")
