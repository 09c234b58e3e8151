"""Validity verdicts: each vertebra carries the reasons it cannot be trusted.

An invalid vertebra never enters the mean; the reasons travel with the result so the
reader (and the batch summary) sees why.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from .config import VERTEBRA_NAMES
from .patches import VertebraGeometry

# Mid-sagittal area and height of a lumbar body (adult: ~700-1500 mm2, ~22-32 mm high);
# wide bounds, so only masks that are clearly not one vertebral body are flagged.
MIN_AREA_MM2, MAX_AREA_MM2 = 250.0, 2800.0
MIN_HEIGHT_MM, MAX_HEIGHT_MM = 12.0, 50.0
# Centre-to-centre distance of neighbouring lumbar bodies (body + disc: adult ~30-42 mm).
MIN_PITCH_MM, MAX_PITCH_MM = 18.0, 55.0
# Trabecular BMD outside this range is not a measurement of bone.
MIN_BMD, MAX_BMD = -20.0, 400.0


def geometry_reasons(geometry: Dict[str, VertebraGeometry]) -> Dict[str, List[str]]:
    """Missing vertebrae, labels out of order, implausible sizes."""
    reasons: Dict[str, List[str]] = {name: [] for name in VERTEBRA_NAMES}
    for name in VERTEBRA_NAMES:
        g = geometry.get(name)
        if g is None:
            reasons[name].append("missing: not found in the segmentation (out of view or not segmented)")
            continue
        if not MIN_AREA_MM2 <= g.sagittal_area_mm2 <= MAX_AREA_MM2:
            reasons[name].append(
                f"implausible size: sagittal area {g.sagittal_area_mm2:.0f} mm2 "
                f"(expected {MIN_AREA_MM2:.0f}-{MAX_AREA_MM2:.0f} mm2)"
            )
        if not MIN_HEIGHT_MM <= g.height_mm <= MAX_HEIGHT_MM:
            reasons[name].append(
                f"implausible size: height {g.height_mm:.0f} mm (expected {MIN_HEIGHT_MM:.0f}-{MAX_HEIGHT_MM:.0f} mm)"
            )
    # L1 lies above L2 above L3 above L4 (LPS z grows superior), one vertebra apart.
    present = [n for n in VERTEBRA_NAMES if n in geometry]
    for upper, lower in zip(present, present[1:]):
        if geometry[upper].center_lps_mm[2] <= geometry[lower].center_lps_mm[2]:
            for n in (upper, lower):
                reasons[n].append(f"labels out of order: {upper} is not above {lower}")
            continue
        steps = VERTEBRA_NAMES.index(lower) - VERTEBRA_NAMES.index(upper)
        gap = float(np.linalg.norm(geometry[upper].center_lps_mm - geometry[lower].center_lps_mm))
        if not MIN_PITCH_MM * steps <= gap <= MAX_PITCH_MM * steps:
            for n in (upper, lower):
                reasons[n].append(
                    f"labels not one vertebra apart: {upper} and {lower} centres are {gap:.0f} mm apart "
                    f"(expected {MIN_PITCH_MM * steps:.0f}-{MAX_PITCH_MM * steps:.0f} mm); a level may be skipped or misnamed"
                )
    # A broken chain means the names are unreliable on both sides of the break: none is trusted.
    broken = [n for n in present if any(r.startswith(("labels out of order", "labels not one vertebra")) for r in reasons[n])]
    if broken:
        for n in present:
            if n not in broken:
                reasons[n].append(f"level names unreliable: the labels break between {broken[0]} and {broken[-1]}")
    return reasons


def bmd_reasons(bmd: float) -> List[str]:
    if not MIN_BMD <= bmd <= MAX_BMD:
        return [f"implausible BMD {bmd:.0f} mg/cm3 (expected {MIN_BMD:.0f}-{MAX_BMD:.0f} mg/cm3)"]
    return []
