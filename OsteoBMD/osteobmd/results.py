"""The result of one case: what `results.json` holds and what every consumer reads.

Keep this the single definition of the output schema (CLI, batch, evaluation and the
Slicer logic all go through `CaseResult.from_dict` / `to_dict`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
LABELS_NRRD = "labels.nrrd"
PATCHES_NPZ = "patches.npz"
PATCHES_PNG = "patches.png"
OVERVIEW_PNG = "overview.png"
SCENE_MRB = "scene.mrb"
SCHEMA_VERSION = 2


@dataclass
class PatchInfo:
    """Where a trabecular patch was taken: enough to show the exact voxels used."""

    center_lps_mm: List[float]
    size_mm: float
    size_px: int
    spacing_mm: float
    slice_offsets_mm: List[float]
    # Centre voxel of the patch in the CT's own index space (i, j, k), as read from disk.
    center_ijk: List[float]
    # The patch's corners in LPS mm (axial square at the centre slice).
    corners_lps_mm: List[List[float]]
    mean_hu: Optional[float] = None


@dataclass
class VertebraResult:
    name: str
    bmd_mg_cm3: Optional[float]
    center_lps_mm: Optional[List[float]]
    patch: Optional[PatchInfo]
    valid: bool
    reasons: List[str] = field(default_factory=list)
    # Size of the segmented body on the sagittal plane, for the plausibility check.
    sagittal_area_mm2: Optional[float] = None
    height_mm: Optional[float] = None
    from_corrected_mask: bool = False

    @staticmethod
    def from_dict(d: dict) -> "VertebraResult":
        d = dict(d)
        patch = d.get("patch")
        d["patch"] = PatchInfo(**patch) if patch else None
        known = VertebraResult.__dataclass_fields__
        return VertebraResult(**{k: v for k, v in d.items() if k in known})


@dataclass
class CaseResult:
    case: str
    vertebrae: List[VertebraResult]
    mean_bmd_mg_cm3: Optional[float]
    mean_vertebrae: List[str]
    classification: Optional[str]
    valid: bool
    messages: List[str] = field(default_factory=list)
    timings_s: Dict[str, float] = field(default_factory=dict)
    versions: Dict[str, str] = field(default_factory=dict)
    # The anatomy the level names were counted from: "sacrum+ribs" (both agree), "sacrum",
    # "ribs", "sacrum|ribs" (each names its own side of a missed body), "none" (not named) or
    # "user" (the user's label map); whether two anchors were checked against each other and
    # agree (False: they disagree, transitional anatomy; None: nothing to check against);
    # and the naming stage's whole record (naming.LevelNaming.to_dict()).
    level_anchor: str = "none"
    levels_consistent: Optional[bool] = None
    level_naming: Optional[dict] = None
    mask_source: str = "network"  # "network" or "user" (--mask)
    calibration: Optional[dict] = None
    schema_version: int = SCHEMA_VERSION

    def vertebra(self, name: str) -> Optional[VertebraResult]:
        for v in self.vertebrae:
            if v.name == name:
                return v
        return None

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "CaseResult":
        d = dict(d)
        d["vertebrae"] = [VertebraResult.from_dict(v) for v in d.get("vertebrae", [])]
        known = CaseResult.__dataclass_fields__
        return CaseResult(**{k: v for k, v in d.items() if k in known})

    def write_json(self, path: Path) -> None:
        """Atomic: a reader (the batch, the Slicer panel) never sees half a file."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @staticmethod
    def read_json(path: Path) -> "CaseResult":
        return CaseResult.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


CSV_COLUMNS = (
    "case", "vertebra", "bmd_mg_cm3", "valid", "reasons", "in_mean",
    "center_x_mm", "center_y_mm", "center_z_mm", "patch_size_mm", "patch_mean_hu",
    "from_corrected_mask",
)


def csv_rows(result: CaseResult) -> List[dict]:
    rows = []
    for v in result.vertebrae:
        c = v.center_lps_mm or [None, None, None]
        rows.append({
            "case": result.case,
            "vertebra": v.name,
            "bmd_mg_cm3": "" if v.bmd_mg_cm3 is None else f"{v.bmd_mg_cm3:.1f}",
            "valid": int(v.valid),
            "reasons": "; ".join(v.reasons),
            "in_mean": int(v.valid and v.name in result.mean_vertebrae and v.bmd_mg_cm3 is not None),
            "center_x_mm": "" if c[0] is None else f"{c[0]:.1f}",
            "center_y_mm": "" if c[1] is None else f"{c[1]:.1f}",
            "center_z_mm": "" if c[2] is None else f"{c[2]:.1f}",
            "patch_size_mm": "" if not v.patch else f"{v.patch.size_mm:.1f}",
            "patch_mean_hu": "" if not v.patch or v.patch.mean_hu is None else f"{v.patch.mean_hu:.1f}",
            "from_corrected_mask": int(v.from_corrected_mask),
        })
    return rows


ANCHOR_WORDS = {
    "sacrum+ribs": "counted from the sacrum and the ribs (both agree)",
    "sacrum": "counted up from the sacrum only",
    "ribs": "counted down from the lowest rib (T12) only",
    "sacrum|ribs": "counted from the sacrum below a missed body and from the ribs above it",
    "user": "as named in the user's label map",
}


def naming_notes(level_naming: Optional[dict]) -> List[str]:
    """The naming stage's message and flags, worded as a result's notes say them."""
    naming = level_naming or {}
    return [m for m in [naming.get("message")] if m] + [f"Level names: {f}." for f in naming.get("flags", [])]


def notes_besides_naming(result: CaseResult) -> List[str]:
    """The result's notes without the naming's own (shown where the naming verdict is shown)."""
    naming = set(naming_notes(result.level_naming))
    return [m for m in result.messages if m not in naming]


def level_naming_summary(result: CaseResult) -> Tuple[str, bool, str]:
    """(how the levels were named, whether the names can be trusted, the naming notes) for tables."""
    naming = result.level_naming or {}
    how = ANCHOR_WORDS.get(result.level_anchor, "not named: no anatomical anchor in view")
    notes = "; ".join([m for m in [naming.get("message")] if m] + list(naming.get("flags", [])))
    trusted = result.level_anchor == "user" or naming_verdict(result)[0] is True
    return how, trusted, notes


def naming_verdict(result: CaseResult) -> Tuple[Optional[bool], List[str]]:
    """(verdict, lines) on the level names, for pictures: True named by counting with nothing
    against it, False doubtful (flagged, e.g. the anchors disagree), None not named by
    counting (no anchor, or the user's own names). lines[0] is the headline."""
    naming = result.level_naming or {}
    anchor = result.level_anchor or "none"
    flags = [str(f) for f in naming.get("flags", [])]
    if anchor == "user":
        return None, ["Level names as given in the user's label map (not checked)."]
    if not naming.get("valid") or anchor not in ANCHOR_WORDS:
        verdict, headline = None, "Level names NOT known: no anchor (sacrum, ribs) could be used."
    elif flags:
        verdict, headline = False, f"Level names doubtful: {ANCHOR_WORDS[anchor]}, but flagged."
    else:
        verdict, headline = True, f"Level names {ANCHOR_WORDS[anchor]}."
    return verdict, [headline] + naming_notes(naming)
