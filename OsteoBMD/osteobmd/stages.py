"""The stages of one case, in order; each takes and returns typed values and runs alone.

    read -> find the spine -> segment -> name the levels -> calibrate -> cut patches
         -> regress -> verdicts and mean -> write (outputs.write_outputs)

`pipeline.run_case` chains them. With a user's label map (--mask) the three middle stages
are replaced by `user_labelling`. The work itself lives in one module per step (io, canal,
segmentation, bodies/ribs/naming, calibration, patches, regression, validity); a stage fixes
what goes in and what comes out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from . import io as ctio
from .calibration import Calibration, resolve_calibration
from .canal import CanalResult, detect_canal
from .config import LABEL_OF, VERTEBRA_NAMES, CanalConfig, PatchConfig, SegmentationConfig, classify_bmd
from .errors import InputError
from .bodies import BODY_CLASS, find_bodies
from .naming import LevelNaming, name_levels as count_levels
from .patches import Patch, VertebraGeometry, extract_patch, vertebra_geometry
from .progress import ProgressCallback, silent
from .regression import predict_bmd
from .results import CaseResult, VertebraResult, naming_notes
from .ribs import detect_ribs
from .segmentation import Segmentation, find_vertebrae
from .validity import bmd_reasons, geometry_reasons
from .weights import Models

PathLike = Union[str, Path]


@dataclass
class CaseImages:
    ct: sitk.Image  # float32 HU, LPS
    user_labels: Optional[sitk.Image] = None  # --mask: measured instead of segmenting


@dataclass
class Labelling:
    """The L1-L4 label map that is measured, and how far its level names can be trusted."""

    labels: sitk.Image
    naming: Optional[LevelNaming]  # None for the user's label map (names as the user gave them)
    source: str  # "network" or "user"
    spine_center_lps_mm: Optional[np.ndarray] = None
    notes: List[str] = field(default_factory=list)


@dataclass
class Measurements:
    """Per vertebra: where it is, its trabecular patch, and the reasons not to trust it so far."""

    geometry: Dict[str, VertebraGeometry]
    patches: Dict[str, Patch]
    reasons: Dict[str, List[str]]


def read(ct_path: PathLike, mask_path: Optional[PathLike] = None, progress: ProgressCallback = silent) -> CaseImages:
    """The CT (checked to be a 3D CT in HU) and the user's label map on its grid, if given."""
    progress("read", 0.0, "reading the CT")
    ct = ctio.read_ct(ct_path)
    user_labels = ctio.read_labelmap(mask_path, ct) if mask_path else None
    progress("read", 1.0, "CT read")
    return CaseImages(ct, user_labels)


def find_spine(ct: sitk.Image, cfg: CanalConfig = CanalConfig(), progress: ProgressCallback = silent) -> CanalResult:
    """The spinal canal, the spine centre and the sagittal slab; InputError when no spine is in view."""
    return detect_canal(ct, cfg, progress)


def segment(ct: sitk.Image, canal: CanalResult, models: Models, cfg: SegmentationConfig = SegmentationConfig(),
            progress: ProgressCallback = silent) -> Segmentation:
    """Vertebral bodies and the sacrum on the slab; InputError when no body is found."""
    segmentation = find_vertebrae(ct, canal, models.segmentation, models.segmentation_meta, cfg, models.device,
                                  progress)
    if not (segmentation.fused == BODY_CLASS).any():
        raise InputError(
            "No vertebral body was found in this scan. OsteoBMD needs a CT that shows "
            "the lumbar spine; this one may show another part of the body."
        )
    return segmentation


def name_levels(ct: sitk.Image, canal: CanalResult, segmentation: Segmentation) -> Labelling:
    """Which body is L1..L4, counted from the sacrum and from the lowest rib-bearing vertebra."""
    finding = find_bodies(segmentation.fused, segmentation.spacing_zy)
    naming = count_levels(finding, detect_ribs(ct, finding, canal))
    labels = segmentation.labels_volume(ct, naming.lumbar_labels)
    return Labelling(labels, naming, "network", canal.spine_center_lps_mm)


def user_labelling(labels: sitk.Image) -> Labelling:
    """The user's label map stands in for find the spine / segment / name the levels."""
    if not sitk.GetArrayViewFromImage(labels).any():
        raise InputError("The label map is empty: label L1-L4 (values 1-4) before measuring.")
    return Labelling(labels, None, "user", notes=["Measured from a user-given label map (segmentation skipped); "
                                                  "levels as named in it."])


def calibrate(ct: sitk.Image, request: Calibration, spine_center_lps_mm=None) -> Calibration:
    """The HU calibration asked for, estimated from this CT when it is "internal"."""
    return resolve_calibration(request, ct, spine_center_lps_mm)


def cut_patches(ct: sitk.Image, labels: sitk.Image, calibration: Calibration, patch_cfg: PatchConfig,
                window: SegmentationConfig, progress: ProgressCallback = silent) -> Measurements:
    """Each labelled vertebra's centre and trabecular patch; geometry and patch reasons."""
    progress("patches", 0.0, "cutting trabecular patches")
    geometry = vertebra_geometry(labels)
    reasons = geometry_reasons(geometry)
    patches = {}
    for n, name in enumerate(VERTEBRA_NAMES):
        if name in geometry:
            patch = extract_patch(ct, geometry[name].center_lps_mm, patch_cfg, labels, LABEL_OF[name], window,
                                  calibration if calibration.kind != "none" else None)
            reasons[name].extend(patch.reasons)
            patches[name] = patch
        progress("patches", (n + 1) / len(VERTEBRA_NAMES), name)
    return Measurements(geometry, patches, reasons)


def regress(models: Models, measured: Measurements, progress: ProgressCallback = silent) -> Dict[str, float]:
    """BMD (mg/cm3) of each vertebra that has a patch."""
    names = list(measured.patches)
    inputs = np.stack([measured.patches[n].x01 for n in names]) if names else np.zeros((0,))
    bmd = predict_bmd(models.regression, inputs, models.device)
    progress("regression", 1.0, "BMD regressed")
    return {n: float(b) for n, b in zip(names, bmd)}


def naming_reasons(naming: Optional[LevelNaming]) -> List[str]:
    """Why no level can be trusted when the bodies could not be named by counting."""
    if naming is None or naming.valid:
        return []
    return ["levels could not be named by counting from the sacrum or the ribs (see the naming note)"]


def vertebra_verdicts(measured: Measurements, bmd: Dict[str, float], from_user_labels: bool,
                      naming: Optional[LevelNaming] = None) -> List[VertebraResult]:
    """One result per level L1-L4; valid only when no reason speaks against it."""
    vertebrae = []
    unnamed = naming_reasons(naming)
    for name in VERTEBRA_NAMES:
        g = measured.geometry.get(name)
        # A level that is missing because nothing could be named is not "missing from the
        # segmentation": the bodies were found, and the naming reason alone says why.
        level = [] if unnamed and g is None else list(measured.reasons[name])
        reasons = unnamed + level + (bmd_reasons(bmd[name]) if name in bmd else [])
        vertebrae.append(VertebraResult(
            name=name,
            bmd_mg_cm3=round(bmd[name], 2) if name in bmd else None,
            center_lps_mm=[round(float(v), 2) for v in g.center_lps_mm] if g else None,
            patch=measured.patches[name].info if name in measured.patches else None,
            valid=not reasons,
            reasons=reasons,
            sagittal_area_mm2=round(g.sagittal_area_mm2, 1) if g else None,
            height_mm=round(g.height_mm, 1) if g else None,
            from_corrected_mask=from_user_labels,
        ))
    return vertebrae


def mean_bmd(vertebrae: Sequence[VertebraResult], mean_vertebrae: Sequence[str]) -> Tuple[Optional[float], List[str]]:
    """The mean over the chosen vertebrae that are valid, and notes on what was left out."""
    chosen = [v for v in vertebrae if v.name in mean_vertebrae]
    used = [v for v in chosen if v.valid and v.bmd_mg_cm3 is not None]
    skipped = [v.name for v in chosen if v not in used]
    if not used:
        return None, ["No valid measurement: none of " + ", ".join(mean_vertebrae) + " passed the checks (see reasons)."]
    notes = []
    if skipped:
        notes.append(f"Mean over {', '.join(v.name for v in used)} only: {', '.join(skipped)} skipped (see reasons).")
    return round(float(np.mean([v.bmd_mg_cm3 for v in used])), 2), notes


def calibration_notes(calibration: Calibration) -> List[str]:
    if calibration.kind != "none":
        return [f"HU calibration: {calibration.kind} (slope {calibration.slope:.3f}, "
                f"intercept {calibration.intercept:.1f} HU)."]
    if calibration.requested != "none":
        return [f"HU calibration '{calibration.requested}' could not be made ({calibration.note}); raw HU used."]
    return []


def verdicts_and_mean(case_id: str, measured: Measurements, bmd: Dict[str, float], labelling: Labelling,
                      calibration: Calibration, mean_vertebrae: Sequence[str]) -> CaseResult:
    """The case's result: per-vertebra verdicts, the mean and its class, and the notes."""
    vertebrae = vertebra_verdicts(measured, bmd, labelling.source == "user", labelling.naming)
    mean, mean_notes = mean_bmd(vertebrae, mean_vertebrae)
    level_naming = labelling.naming.to_dict() if labelling.naming is not None else None
    return CaseResult(
        case=case_id,
        vertebrae=vertebrae,
        mean_bmd_mg_cm3=mean,
        mean_vertebrae=list(mean_vertebrae),
        classification=classify_bmd(mean) if mean is not None else None,
        valid=mean is not None,
        messages=labelling.notes + calibration_notes(calibration) + mean_notes + naming_notes(level_naming),
        level_anchor="user" if labelling.naming is None else (labelling.naming.anchor or "none"),
        levels_consistent=labelling.naming.anchors_agree if labelling.naming is not None else None,
        level_naming=level_naming,
        mask_source=labelling.source,
        calibration=calibration.to_dict() if calibration.requested != "none" else None,
    )
