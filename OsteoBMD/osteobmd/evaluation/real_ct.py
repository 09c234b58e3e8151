"""Score one pipeline result on a real CT against a reference mask of every body in view.

The reference (Testing/data/real_ct/<case>/reference_levels.nii.gz) labels T12 = 12,
L1..L5 = 21..25 and the sacrum = 30 on the CT's grid; the pipeline's labels.nrrd labels
1..4 = L1..L4 on the sagittal slab only. So every overlap here is counted on the sagittal
slices the prediction covers, and each predicted label is judged by the reference body it
overlaps most: a label on the wrong body is a naming error, whatever its Dice.
Also here: cropping a CT and its reference (top or bottom N mm) to test views without an anchor.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..io import to_lps
from ..results import LABELS_NRRD, RESULTS_JSON
from .segmentation import _same_grid

LUMBAR = ("L1", "L2", "L3", "L4")
REFERENCE_CODES = {"T12": 12, "L1": 21, "L2": 22, "L3": 23, "L4": 24, "L5": 25, "sacrum": 30}
REFERENCE_NAMES = {v: k for k, v in REFERENCE_CODES.items()}
# A reference body counts as found by a predicted label when the label covers this share
# of the body's voxels on the scored slices (a stray rim of a neighbour does not count).
FOUND_SHARE = 0.2


@dataclass
class LevelScore:
    name: str  # the predicted label's name, L1..L4
    predicted: bool  # the label is in the prediction
    best_reference: Optional[str] = None  # the reference body it overlaps most
    named_right: Optional[bool] = None
    dice: Optional[float] = None  # against the reference body of the same name, scored slices only
    valid: Optional[bool] = None
    reasons: List[str] = field(default_factory=list)
    bmd_mg_cm3: Optional[float] = None
    patch_mean_hu: Optional[float] = None


@dataclass
class CaseScore:
    case: str
    ran: bool  # the pipeline wrote a result
    error: Optional[str] = None  # its message when it did not
    valid: Optional[bool] = None
    mean_bmd_mg_cm3: Optional[float] = None
    classification: Optional[str] = None
    levels: List[LevelScore] = field(default_factory=list)
    # Reference bodies that received an L1..L4 label, as "reference body <- predicted label".
    found: Dict[str, str] = field(default_factory=dict)
    reference_in_view: List[str] = field(default_factory=list)  # on the scored slices
    # The anchors the reference holds anywhere in the (cropped) CT: T12 (the lowest ribs) and the sacrum.
    anchors_in_view: List[str] = field(default_factory=list)
    naming: Dict[str, object] = field(default_factory=dict)
    scored_sagittal_slices: int = 0
    messages: List[str] = field(default_factory=list)

    @property
    def named_right(self) -> int:
        return sum(1 for s in self.levels if s.named_right)

    @property
    def predicted(self) -> int:
        return sum(1 for s in self.levels if s.predicted)

    @property
    def wrong_on_valid(self) -> bool:
        """A result that calls itself valid carries a wrong level name."""
        return bool(self.valid) and any(s.predicted and s.named_right is False for s in self.levels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(named_right=self.named_right, predicted=self.predicted, wrong_on_valid=self.wrong_on_valid)
        return d


def _lps_array(image: sitk.Image) -> Tuple[np.ndarray, sitk.Image]:
    oriented = to_lps(image)
    return sitk.GetArrayFromImage(oriented), oriented


def score_labels(predicted: np.ndarray, reference: np.ndarray) -> Tuple[List[LevelScore], Dict[str, str], List[str], int]:
    """Score a prediction (1..4 = L1..L4) against a reference (12, 21..25, 30), both [k, j, i] in LPS.

    Only the sagittal slices (i) that hold a predicted label are scored. Returns the per-level
    scores, the found map, the reference bodies in view on those slices and their number.
    """
    if predicted.shape != reference.shape:
        raise ValueError(f"prediction {predicted.shape} and reference {reference.shape} differ in shape")
    columns = np.flatnonzero(np.isin(predicted, (1, 2, 3, 4)).any(axis=(0, 1)))
    pred = predicted[:, :, columns]
    ref = reference[:, :, columns]
    in_view = [REFERENCE_NAMES[v] for v in sorted(np.unique(ref)) if v in REFERENCE_NAMES]
    ref_sizes = {v: int((ref == v).sum()) for v in REFERENCE_NAMES}
    levels, found = [], {}
    for n, name in enumerate(LUMBAR, start=1):
        mask = pred == n
        score = LevelScore(name=name, predicted=bool(mask.any()))
        target = ref == REFERENCE_CODES[name]
        if score.predicted or target.any():
            score.dice = round(float(2.0 * (mask & target).sum() / (mask.sum() + target.sum())), 4)
        if score.predicted:
            under = ref[mask]
            counts = {v: int((under == v).sum()) for v in REFERENCE_NAMES}
            best = max(counts, key=counts.get)
            if counts[best] > 0:
                score.best_reference = REFERENCE_NAMES[best]
            score.named_right = score.best_reference == name
            for v, c in counts.items():
                if ref_sizes[v] and c >= FOUND_SHARE * ref_sizes[v]:
                    body = REFERENCE_NAMES[v]
                    found[body] = f"{found[body]}+{name}" if body in found else name
        levels.append(score)
    return levels, found, in_view, int(columns.size)


def _patch_mean_hu(vertebra: dict) -> Optional[float]:
    """The patch's mean HU as results.json stores it (every patch has one)."""
    patch = vertebra.get("patch") or {}
    return None if patch.get("mean_hu") is None else round(float(patch["mean_hu"]), 1)


def naming_record(result: dict) -> Dict[str, object]:
    """How results.json says the levels were named: anchor, whether the anchors agree, flags."""
    naming = result.get("level_naming") or {}
    return {"anchor": result.get("level_anchor", "none"), "anchors_agree": naming.get("anchors_agree"),
            "flags": list(naming.get("flags", []))}


def score_case(result_dir: Path, reference: sitk.Image, case: str = "") -> CaseScore:
    """Score one pipeline output folder against a reference label map on the same CT."""
    result_dir = Path(result_dir)
    ref, ref_lps = _lps_array(reference)
    anchors = [name for name in ("T12", "sacrum") if (ref == REFERENCE_CODES[name]).any()]
    results_path = result_dir / RESULTS_JSON
    if not results_path.exists():
        return CaseScore(case=case, ran=False, error="no results.json", anchors_in_view=anchors)
    result = json.loads(results_path.read_text(encoding="utf-8"))
    labels = sitk.ReadImage(str(result_dir / LABELS_NRRD))
    pred, pred_lps = _lps_array(labels)
    if not _same_grid(pred_lps, ref_lps):
        raise ValueError(
            f"{case}: the reference mask is not on the grid of the pipeline's labels "
            f"(size {ref_lps.GetSize()} vs {pred_lps.GetSize()}); score it against the CT it was made on."
        )
    levels, found, in_view, slices = score_labels(pred, ref)
    by_name = {v.get("name"): v for v in result.get("vertebrae", [])}
    for score in levels:
        v = by_name.get(score.name)
        if v is None:
            continue
        score.valid = bool(v.get("valid"))
        score.reasons = list(v.get("reasons") or [])
        score.bmd_mg_cm3 = v.get("bmd_mg_cm3")
        score.patch_mean_hu = _patch_mean_hu(v)
    return CaseScore(
        case=case or result.get("case", result_dir.name),
        ran=True,
        valid=bool(result.get("valid")),
        mean_bmd_mg_cm3=result.get("mean_bmd_mg_cm3"),
        classification=result.get("classification"),
        levels=levels,
        found=found,
        reference_in_view=in_view,
        anchors_in_view=anchors,
        naming=naming_record(result),
        scored_sagittal_slices=slices,
        messages=list(result.get("messages") or []),
    )


def superior_axis(image: sitk.Image) -> Tuple[int, int]:
    """The image axis that runs along the body (z) and +1 if its index grows superior, else -1."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[2])))
    return axis, 1 if direction[2, axis] > 0 else -1


def crop_mm(image: sitk.Image, side: str, mm: float) -> sitk.Image:
    """The image with `mm` of its top ("top": superior) or bottom ("bottom") cut away.

    A crop by whole slices (nothing resampled): the geometry of the kept voxels is unchanged.
    """
    if side not in ("top", "bottom"):
        raise ValueError(f"side must be 'top' or 'bottom', not {side!r}")
    axis, sign = superior_axis(image)
    n = image.GetSize()[axis]
    cut = int(round(mm / image.GetSpacing()[axis]))
    if cut >= n - 1:
        raise ValueError(f"cutting {mm} mm leaves no image (only {n * image.GetSpacing()[axis]:.0f} mm along the body)")
    # Index 0 is the inferior end when the axis grows superior.
    cut_at_high_index = (side == "top") == (sign > 0)
    start, stop = (0, n - cut) if cut_at_high_index else (cut, n)
    index = [slice(None)] * 3
    index[axis] = slice(start, stop)
    return image[tuple(index)]


# A spine-only reconstruction: from this far in front of the lumbar bodies' centre to this
# far behind it (the spinous processes end about 60-70 mm behind it), in mm (LPS y).
SPINE_FRONT_MM, SPINE_BACK_MM = 60.0, 75.0


def spine_box(reference: sitk.Image, half_width_mm: float) -> Tuple[slice, slice, slice]:
    """Index slices of a tight spine crop: +-half_width_mm left-right of the reference's
    L1-L4 centre, SPINE_FRONT_MM in front of it to SPINE_BACK_MM behind, every slice."""
    ref = sitk.GetArrayViewFromImage(reference)
    k, j, i = np.nonzero(np.isin(ref, [REFERENCE_CODES[n] for n in LUMBAR]))
    if k.size == 0:
        raise ValueError("the reference holds no L1-L4 body to centre the crop on")
    centre = np.asarray(reference.TransformContinuousIndexToPhysicalPoint((i.mean(), j.mean(), k.mean())))
    centre_index = np.asarray(reference.TransformPhysicalPointToContinuousIndex(tuple(centre)))
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    reach = {0: (-half_width_mm, half_width_mm), 1: (-SPINE_FRONT_MM, SPINE_BACK_MM)}  # LPS x, y
    box = []
    for axis in range(3):
        physical = int(np.argmax(np.abs(direction[:, axis])))
        n = reference.GetSize()[axis]
        if physical not in reach:
            box.append(slice(0, n))
            continue
        step = direction[physical, axis] * reference.GetSpacing()[axis]  # mm per index along it
        ends = sorted(centre_index[axis] + mm / step for mm in reach[physical])
        box.append(slice(max(0, int(np.floor(ends[0]))), min(n, int(np.ceil(ends[1])) + 1)))
    return tuple(box)


def write_crop(ct_path: Path, reference_path: Path, side: str, mm: float, out_dir: Path) -> Tuple[Path, Path]:
    """Crop a CT and its reference alike; write both as NIfTI into out_dir. side: "top" or
    "bottom" (mm cut away there), or "spine" (a tight crop +-mm around the spine)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ct_out, ref_out = out_dir / "ct.nii.gz", out_dir / "reference_levels.nii.gz"
    ct, reference = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(reference_path))
    if side == "spine":
        box = spine_box(reference, mm)
        ct, reference = ct[box], reference[box]
    else:
        ct, reference = crop_mm(ct, side, mm), crop_mm(reference, side, mm)
    sitk.WriteImage(ct, str(ct_out), True)
    sitk.WriteImage(reference, str(ref_out), True)
    return ct_out, ref_out
