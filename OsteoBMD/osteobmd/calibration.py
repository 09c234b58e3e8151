"""Per-scanner HU calibration, applied to the trabecular patches before the BMD network.

The paper trained on one scanner model and its BMD was biased on the others (METHOD 6:
vendor B under-, vendor C over-estimated). This module offers a correction it lacked, as
one `Calibration` (HU' = slope * HU + intercept) of one of three kinds:

- "linear": a user-given map, e.g. from a calibration phantom scanned on that scanner
  (the reliable choice when one is available);
- "internal": a phantomless, patient-specific calibration from the patient's own air and
  fat, estimated from each CT (internal_calibration.py, which says what it can and cannot do);
- "none": no change.

One way in (`parse_calibration`: "internal" comes back pending), one way to estimate
(`resolve_calibration`, per case), one way to apply (`Calibration.apply`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Sequence

from .errors import InputError

KINDS = ("none", "internal", "linear")

# Reference HU the measured tissues are mapped to.
AIR_REFERENCE_HU = -1000.0
FAT_REFERENCE_HU = -100.0


@dataclass
class Calibration:
    """A linear map from measured HU to calibrated HU: HU' = slope * HU + intercept."""

    kind: str = "none"
    slope: float = 1.0
    intercept: float = 0.0
    # HU measured in this CT (internal) and the HU they were mapped to.
    measured: Dict[str, Optional[float]] = field(default_factory=dict)
    reference: Dict[str, float] = field(default_factory=dict)
    note: str = ""
    # What was asked for: "internal" that had to be refused keeps kind "none".
    requested: str = ""
    details: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown calibration kind {self.kind!r}")
        if not self.requested:
            self.requested = self.kind

    @property
    def pending(self) -> bool:
        """An internal calibration asked for but not yet estimated from a CT."""
        return self.kind == "internal" and not self.measured

    def apply(self, hu):
        """Calibrated HU of a numpy array (returned as float32) or a SimpleITK image."""
        if self.pending:
            raise ValueError("internal calibration not estimated yet; call resolve_calibration(cal, ct) first")
        # Imported here so that parsing options (`osteobmd --help`, the panel) stays light;
        # wherever HU are calibrated these are loaded already.
        import numpy as np
        import SimpleITK as sitk

        if isinstance(hu, sitk.Image):
            if self.kind == "none":
                return hu
            return sitk.Cast(hu, sitk.sitkFloat32) * float(self.slope) + float(self.intercept)
        a = np.asarray(hu, dtype=np.float32)
        if self.kind == "none":
            return a
        return (a * np.float32(self.slope) + np.float32(self.intercept)).astype(np.float32, copy=False)

    @property
    def spec(self) -> str:
        """What the user asked for, in the form `parse_calibration` reads back."""
        if self.requested == "linear":
            return f"linear:{self.slope!r},{self.intercept!r}"
        return "internal" if self.requested == "internal" else "none"

    def invert(self, hu):
        """Measured HU from calibrated HU (for display of thresholds in scanner HU)."""
        import numpy as np

        a = np.asarray(hu, dtype=np.float64)
        return (a - self.intercept) / self.slope

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: Optional[dict]) -> "Calibration":
        if not d:
            return Calibration()
        known = Calibration.__dataclass_fields__
        return Calibration(**{k: v for k, v in d.items() if k in known})


def no_calibration(note: str = "no calibration requested", requested: str = "none") -> Calibration:
    return Calibration(kind="none", note=note, requested=requested)


def linear_calibration(slope: float, intercept: float, note: str = "") -> Calibration:
    """A user-given map HU' = slope * HU + intercept (e.g. from a phantom)."""
    slope = float(slope)
    intercept = float(intercept)
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise InputError("The linear calibration needs finite numbers: linear:SLOPE,INTERCEPT, e.g. linear:1.02,-3.5.")
    if not (0.5 <= slope <= 2.0):
        raise InputError(
            f"The calibration slope {slope:g} is implausible (a CT's HU scale is never off by a factor "
            "outside 0.5-2); give linear:SLOPE,INTERCEPT with the slope near 1, e.g. linear:1.02,-3.5."
        )
    return Calibration(kind="linear", slope=slope, intercept=intercept,
                       note=note or f"user-given linear calibration HU' = {slope:g} * HU {intercept:+g}")


def parse_calibration(spec: Optional[str]) -> Calibration:
    """Parse the user's choice: "none", "internal" or "linear:SLOPE,INTERCEPT".

    "internal" comes back pending: `resolve_calibration(cal, ct, spine_center)` estimates
    it from each case's CT.
    """
    text = "none" if spec is None else str(spec).strip()
    low = text.lower()
    if low in ("", "none", "off"):
        return no_calibration()
    if low == "internal":
        return Calibration(kind="internal", note="internal calibration: to be estimated from the CT")
    if low.startswith("linear"):
        _, sep, rest = text.partition(":")
        parts = [p.strip() for p in rest.split(",")] if sep else []
        if len(parts) != 2:
            raise InputError(f"Calibration '{text}' is not of the form linear:SLOPE,INTERCEPT (e.g. linear:1.02,-3.5).")
        try:
            slope, intercept = float(parts[0]), float(parts[1])
        except ValueError:
            raise InputError(f"Calibration '{text}': SLOPE and INTERCEPT must be numbers, "
                             "e.g. linear:1.02,-3.5.") from None
        return linear_calibration(slope, intercept)
    raise InputError(f"Unknown calibration '{text}'; use none, internal, or linear:SLOPE,INTERCEPT "
                     "(e.g. linear:1.02,-3.5).")


def resolve_calibration(cal: Optional[Calibration], ct,
                        spine_center_lps_mm: Optional[Sequence[float]] = None) -> Calibration:
    """Estimate a pending internal calibration; anything else is returned unchanged."""
    if cal is None:
        return no_calibration()
    if cal.pending:
        # Imported here: parsing options (the CLI, the panel) must not load scipy and SimpleITK.
        from .internal_calibration import estimate_internal_calibration

        return estimate_internal_calibration(ct, spine_center_lps_mm)
    return cal
