"""Case-level parameters: every random choice of a case, drawn from a seed, then overridden.

Each group of parameters has its own random stream (numpy SeedSequence children), and every
number is always drawn, whatever the overrides: so changing one override (or the vendor)
never changes the rest of the case. Same seed + same overrides -> same case.
"""

from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

from .constants import VENDORS

# Probabilities of the hard cases: off for make_case, small in make_cohort.
CASE_PROBABILITIES = dict(
    p_fracture=0.0,
    p_metal=0.0,
    p_contrast=0.0,
    p_oral_contrast=0.0,
    p_transitional=0.0,
    p_partial=0.0,
)
COHORT_PROBABILITIES = dict(
    p_fracture=0.06,
    p_metal=0.04,
    p_contrast=0.25,
    p_oral_contrast=0.08,
    p_transitional=0.06,
    p_partial=0.08,
)

SLICE_CHOICES = (0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
SLICE_WEIGHTS = (0.12, 0.22, 0.2, 0.12, 0.12, 0.1, 0.12)
VIEWS = ("full", "lumbar", "top_cut", "bottom_cut")
TRANSITIONAL = (None, "six_lumbar", "sacralized_L5")
CONTRAST = (None, "arterial", "portal")

# Keys a caller may override (with their meaning); anything else is an error.
OVERRIDES: Dict[str, str] = {
    # scanner / grid
    "matrix": "in-plane matrix (int or (ny, nx)); default 512",
    "spacing_xy": "in-plane pixel spacing mm (0.6-1.0)",
    "slice_mm": "slice thickness = spacing in z, mm (0.625-3)",
    "lateral_mm": "crop the left-right extent to this many mm around the spine (faster)",
    "noise_hu": "noise standard deviation in HU (0 = no noise)",
    "psf_mm": "in-plane point-spread sigma mm",
    "nps_peak": "peak frequency of the noise power spectrum, cycles/mm",
    "hu_a": "global HU slope of the scanner", "hu_b": "global HU offset of the scanner",
    "soft_step_mm": "z step of the soft-tissue key slices (speed/quality)",
    "view": "full | lumbar | top_cut | bottom_cut",
    # density
    "bmd_mean": "case mean trabecular BMD (L1-L3) mg/cm3",
    "bmd": "dict level -> BMD mg/cm3 (overrides per level)",
    "bone_slope": "HU per mg/cm3 of the bone calibration",
    "marrow_offset": "HU of the trabecular compartment at zero BMD (marrow fat)",
    "age": "years (drives degeneration, calcification, marrow fat)",
    # anatomy
    "size": "skeletal size factor (~1)", "obesity": "0 (thin) .. 1 (obese)",
    "sacral_slope_deg": "S1 endplate angle to the horizontal",
    "lordosis_deg": "L1-S1 lordosis angle",
    "scoliosis_deg": "Cobb angle of a lumbar curve (signed)",
    "rotation_deg": "axial rotation of the spine at the apex",
    "transitional": "None | six_lumbar | sacralized_L5",
    # hard cases
    "fracture": "False | True | level name (T12, L1 ... L4)",
    "fracture_ratio": "anterior/posterior height ratio of the wedge (0.5-0.9)",
    "metal": "False | True | 'screws' | 'cement'",
    "contrast": "None | 'arterial' | 'portal'",
    "oral_contrast": "bool",
    **{k: "probability of this hard case when not forced" for k in CASE_PROBABILITIES},
}


def _streams(seed: int):
    ss = np.random.SeedSequence(int(seed))
    names = ("flags", "density", "body", "spine", "organs", "scanner", "texture", "noise", "metal", "view")
    return {n: np.random.default_rng(c) for n, c in zip(names, ss.spawn(len(names)))}


def sample_params(seed: int, vendor: str = "A", overrides: Dict[str, Any] | None = None) -> Dict[str, Any]:
    overrides = dict(overrides or {})
    bad = sorted(set(overrides) - set(OVERRIDES))
    if bad:
        raise TypeError(f"unknown synthetic-case override(s) {bad}; valid keys: {sorted(OVERRIDES)}")
    if vendor not in VENDORS:
        raise ValueError(f"vendor must be one of {sorted(VENDORS)}, not {vendor!r}")
    rs = _streams(seed)
    prob = {k: float(overrides.get(k, v)) for k, v in CASE_PROBABILITIES.items()}
    p: Dict[str, Any] = {"seed": int(seed), "vendor": vendor}

    # ---- hard-case flags: draw all uniforms first, in a fixed order
    r = rs["flags"]
    u = r.random(8)
    lvl_u = r.random(3)
    p["fracture"] = None
    if u[0] < prob["p_fracture"]:
        p["fracture"] = ["T12", "L1", "L1", "L2", "L2", "L3", "L4"][int(lvl_u[0] * 7)]
    p["fracture_ratio"] = float(0.55 + 0.3 * lvl_u[1])
    p["metal"] = None
    if u[1] < prob["p_metal"]:
        p["metal"] = "screws" if lvl_u[2] < 0.7 else "cement"
    p["contrast"] = None
    if u[2] < prob["p_contrast"]:
        p["contrast"] = "portal" if u[6] < 0.7 else "arterial"
    p["oral_contrast"] = bool(u[3] < prob["p_oral_contrast"])
    p["transitional"] = None
    if u[4] < prob["p_transitional"]:
        p["transitional"] = "six_lumbar" if u[7] < 0.5 else "sacralized_L5"
    view_u = rs["view"].random(2)
    p["view"] = "full" if view_u[1] < 0.85 else "lumbar"
    if u[5] < prob["p_partial"]:
        p["view"] = "top_cut" if view_u[0] < 0.5 else "bottom_cut"

    # ---- density: the three ACR classes equally likely
    r = rs["density"]
    cls = r.integers(0, 3)
    lo, hi = [(32.0, 80.0), (80.0, 120.0), (120.0, 230.0)][cls]
    p["bmd_mean"] = float(r.uniform(lo, hi))
    p["level_jitter"] = r.normal(0.0, 0.03, 12).tolist()
    p["level_trend"] = float(r.normal(0.0, 0.015))
    p["bone_slope"] = float(np.clip(r.normal(1.10, 0.035), 1.0, 1.2))
    age_noise = r.normal(0.0, 8.0)
    marrow_noise = r.normal(0.0, 6.0)
    p["tex_u"] = r.random(4).tolist()

    # ---- body
    r = rs["body"]
    p["size"] = float(np.clip(r.normal(1.0, 0.06), 0.84, 1.18))
    p["obesity"] = float(r.beta(2.0, 2.4))
    p["body_u"] = r.random(16).tolist()

    # ---- spine shape
    r = rs["spine"]
    p["sacral_slope_deg"] = float(np.clip(r.normal(36.0, 7.0), 18.0, 58.0))
    tl = float(np.clip(r.normal(-9.0, 6.0), -25.0, 8.0))
    cobb_u, side_u = r.random(2)
    if cobb_u < 0.75:
        cobb = r.uniform(0.0, 5.0)
    elif cobb_u < 0.95:
        cobb = r.uniform(5.0, 20.0)
    else:
        cobb = r.uniform(20.0, 38.0)
    p["scoliosis_deg"] = float(cobb if side_u < 0.5 else -cobb)
    p["rotation_deg"] = float(r.normal(0.0, 2.0))
    p["spine_u"] = r.random(24).tolist()
    p["lordosis_deg"] = p["sacral_slope_deg"] - tl

    # ---- scanner
    r = rs["scanner"]
    p["spacing_xy"] = float(r.uniform(0.6, 1.0))
    p["slice_mm"] = float(r.choice(SLICE_CHOICES, p=np.asarray(SLICE_WEIGHTS) / sum(SLICE_WEIGHTS)))
    base = math.exp(r.uniform(math.log(7.0), math.log(26.0)))
    p["noise_base"] = base
    p["psf_mm"] = float(r.uniform(0.35, 0.75))
    p["nps_jitter"] = float(r.normal(0.0, 0.03))
    a_nom, b_nom = VENDORS[vendor]
    ja, jb = r.normal(0.0, 1.0, 2)
    p["hu_a"] = float(a_nom + 0.008 * ja)
    p["hu_b"] = float(b_nom + 2.0 * jb)
    p["fov_u"] = r.random(6).tolist()
    p["lateral_mm"] = None
    p["matrix"] = 512
    p["soft_step_mm"] = 4.0

    # ---- apply overrides (after every draw)
    for k, v in overrides.items():
        if k.startswith("p_"):
            continue
        p[k] = v
    if "lordosis_deg" not in overrides:
        p["lordosis_deg"] = p["sacral_slope_deg"] - tl
    if p.get("fracture") is True:
        p["fracture"] = "L1"
    if p.get("fracture") is False:
        p["fracture"] = None
    if p.get("metal") is True:
        p["metal"] = "screws"
    if p.get("metal") is False:
        p["metal"] = None
    if p.get("contrast") is True:
        p["contrast"] = "portal"
    if p.get("contrast") is False:
        p["contrast"] = None
    if p.get("transitional") is True:
        p["transitional"] = "six_lumbar"
    if p["fracture"] is not None and p["fracture"] not in ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"):
        raise ValueError("fracture must be False, True or a level name T10 ... L5")
    if p["metal"] not in (None, "screws", "cement"):
        raise ValueError("metal must be False, True, 'screws' or 'cement'")
    if p["view"] not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}")
    if p["transitional"] not in TRANSITIONAL:
        raise ValueError(f"transitional must be one of {TRANSITIONAL}")
    if p["contrast"] not in CONTRAST:
        raise ValueError(f"contrast must be one of {CONTRAST}")
    if p["view"] == "lumbar" and "spacing_xy" not in overrides:
        p["spacing_xy"] = 0.6 + 0.12 * p["fov_u"][5]
    # thin slices are noisier (same dose): noise ~ 1/sqrt(thickness)
    if "noise_hu" not in overrides:
        p["noise_hu"] = float(np.clip(p["noise_base"] * math.sqrt(1.25 / p["slice_mm"]), 8.0, 35.0))
    if "nps_peak" not in overrides:
        p["nps_peak"] = float(np.clip(0.20 + 0.5 * (0.75 - p["psf_mm"]) + p["nps_jitter"], 0.15, 0.5))
    # age follows density (older -> lower BMD), marrow fat follows age
    if "age" not in overrides:
        p["age"] = float(np.clip(88.0 - 0.27 * p["bmd_mean"] + age_noise, 22.0, 95.0))
    if "marrow_offset" not in overrides:
        p["marrow_offset"] = float(-4.0 - 0.2 * (p["age"] - 60.0) + marrow_noise)
    p["probabilities"] = prob
    return p
