"""METHOD 2: segmentation metrics against reference label maps.

Per vertebra (labels 1..4 = L1..L4) and case:
    DSC = 2TP / (2TP + FP + FN),  PPV = TP / (TP + FP),  sensitivity = TP / (TP + FN).
A case is valid when all four vertebrae have DSC > 0.5 (the paper's rule). The paper
also reports the share of cases with all four DSC >= 0.90 and with at least three of
the four above 0.90; both are given too.

Undefined values are not invented: a vertebra absent from both maps has no DSC; PPV is
undefined when the prediction has no voxel of that label, sensitivity when the
reference has none. Means and SDs are over the cases where the value is defined (the
count `n` says how many). A case whose reference lacks one of L1..L4 cannot be judged
by the four-vertebra rule and is left out of `valid_share` (with a note).
A reference case without a prediction counts as a failed (invalid) case.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..config import VERTEBRA_NAMES
from ..errors import InputError
from ..io import to_lps
from .stats import _f, mean_sd

PathLike = Union[str, Path]

LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")
# File names looked for inside a case sub-folder (an `osteobmd run` output folder or a
# ground-truth case folder both hold labels.nrrd).
CASE_LABEL_NAMES = ("labels.nrrd", "labels.nii.gz", "labels.nii", "labels.mha")
VALID_DSC = 0.5
GOOD_DSC = 0.90
_NL = len(VERTEBRA_NAMES) + 1  # background + L1..L4


def _stem(name: str) -> Optional[str]:
    low = name.lower()
    for suffix in sorted(LABEL_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return None


def find_label_maps(folder: PathLike) -> "OrderedDict[str, Path]":
    """Case id -> label map path: image files directly in `folder` (id = file name
    without suffix) and case sub-folders holding labels.nrrd (id = sub-folder name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not a folder; give a folder of label maps "
                         "(one file per case, or one sub-folder per case with labels.nrrd).")
    found: Dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        key, path = None, None
        if entry.is_file():
            key = _stem(entry.name)
            path = entry
        elif entry.is_dir():
            for name in CASE_LABEL_NAMES:
                if (entry / name).is_file():
                    key, path = entry.name, entry / name
                    break
        if key is None:
            continue
        if key in found:
            raise InputError(f"The folder '{folder.name}' holds two label maps for case '{key}' "
                             f"('{found[key].name}' and '{path.name}'); keep one per case.")
        found[key] = path
    if not found:
        raise InputError(f"The folder '{folder.name}' holds no label maps (NIfTI/NRRD/MHA files, or "
                         "case sub-folders with labels.nrrd).")
    return OrderedDict(sorted(found.items()))


def _read_labels(path: Path) -> sitk.Image:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"'{path}' could not be read as a label map.") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"'{path.name}' is not a 3D single-component label map.")
    return to_lps(image)


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4, atol=1e-4)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-2)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4)
    )


def _clean(array: np.ndarray) -> np.ndarray:
    """Labels 1..4 kept, anything else (other structures, negatives) = background."""
    a = np.asarray(array)
    return np.where((a >= 1) & (a <= 4), a, 0).astype(np.uint8)


def label_confusion(pred: np.ndarray, ref: np.ndarray, chunk: int = 32) -> np.ndarray:
    """5 x 5 voxel counts, rows = reference label, columns = predicted label (0..4).
    Works slab by slab so a 512x512x400 pair never needs int64 copies of the whole volume."""
    if pred.shape != ref.shape:
        raise ValueError("label maps must have the same shape")
    counts = np.zeros(_NL * _NL, dtype=np.int64)
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.ndim < 1 or pred.shape[0] == 0:
        return counts.reshape(_NL, _NL)
    for start in range(0, pred.shape[0], chunk):
        p = _clean(pred[start:start + chunk])
        r = _clean(ref[start:start + chunk])
        index = r * np.uint8(_NL) + p  # <= 24 fits uint8
        counts += np.bincount(index.ravel(), minlength=_NL * _NL)
    return counts.reshape(_NL, _NL)


def overlap_metrics(pred: np.ndarray, ref: np.ndarray) -> "OrderedDict[str, dict]":
    """Per vertebra {dice, ppv, sensitivity, tp, fp, fn, in_ref, in_pred} of one case."""
    c = label_confusion(pred, ref)
    out = OrderedDict()
    for k, name in enumerate(VERTEBRA_NAMES, start=1):
        tp = int(c[k, k])
        fn = int(c[k, :].sum() - tp)
        fp = int(c[:, k].sum() - tp)
        out[name] = {
            "dice": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else None,
            "ppv": tp / (tp + fp) if (tp + fp) > 0 else None,
            "sensitivity": tp / (tp + fn) if (tp + fn) > 0 else None,
            "tp": tp, "fp": fp, "fn": fn,
            "in_ref": (tp + fn) > 0, "in_pred": (tp + fp) > 0,
        }
    return out


def case_validity(metrics: Dict[str, dict]) -> Tuple[Optional[bool], str]:
    """(valid, reason) by the paper's rule; valid None when the reference lacks a vertebra."""
    missing = [v for v, m in metrics.items() if not m["in_ref"]]
    if missing:
        return None, "reference has no " + ", ".join(missing)
    low = [f"{v} DSC {m['dice']:.2f}" for v, m in metrics.items() if m["dice"] <= VALID_DSC]
    if low:
        return False, "DSC <= 0.5: " + ", ".join(low)
    return True, ""


def _load_pair(pred_path: Path, ref_path: Path, notes: List[str], case: str) -> Tuple[np.ndarray, np.ndarray]:
    pred = _read_labels(pred_path)
    ref = _read_labels(ref_path)
    if not _same_grid(pred, ref):
        # Put the prediction on the reference grid (nearest neighbour keeps labels).
        pred = sitk.Resample(pred, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, pred.GetPixelID())
        notes.append(f"Case '{case}': the prediction was resampled onto the reference grid "
                     "(the two label maps have different geometry).")
    # Copies: a view would dangle once the images go out of scope.
    return sitk.GetArrayFromImage(pred), sitk.GetArrayFromImage(ref)


def summarize_segmentation(case_metrics: "OrderedDict[str, dict]", n_missing: int = 0,
                           notes: Optional[List[str]] = None) -> dict:
    """Aggregate per-case metrics ({case: {vertebra: metrics}}) into the report fields."""
    notes = list(notes or [])
    per_case = []
    summary = {"dice": OrderedDict(), "ppv": OrderedDict(), "sensitivity": OrderedDict()}
    for name in VERTEBRA_NAMES:
        for metric in summary:
            values = [m[name][metric] for m in case_metrics.values() if m[name][metric] is not None]
            summary[metric][name] = mean_sd(values)
    n_valid = n_judged = n_all_good = n_three_good = 0
    for case, m in case_metrics.items():
        valid, reason = case_validity(m)
        row = {"case": case, "valid": valid, "reason": reason}
        for name in VERTEBRA_NAMES:
            row[f"dice_{name}"] = _f(m[name]["dice"])
        per_case.append(row)
        if valid is None:
            continue
        n_judged += 1
        n_valid += int(valid)
        good = sum(1 for name in VERTEBRA_NAMES if m[name]["dice"] is not None and m[name]["dice"] > GOOD_DSC)
        all_good = all(m[name]["dice"] is not None and m[name]["dice"] >= GOOD_DSC for name in VERTEBRA_NAMES)
        n_all_good += int(all_good)
        n_three_good += int(good >= 3)
    unjudged = len(case_metrics) - n_judged
    if unjudged:
        notes.append(f"{unjudged} case(s) have a reference without all of L1-L4; they get per-vertebra "
                     "metrics but are left out of the valid share.")
    if n_missing:
        notes.append(f"{n_missing} reference case(s) have no predicted label map; they count as invalid.")
    denominator = n_judged + n_missing
    return {
        "dice": summary["dice"],
        "ppv": summary["ppv"],
        "sensitivity": summary["sensitivity"],
        "dice_mean_all": mean_sd([m[n]["dice"] for m in case_metrics.values() for n in VERTEBRA_NAMES
                                  if m[n]["dice"] is not None]),
        "n_seg_cases": len(case_metrics),
        "n_seg_missing": n_missing,
        "n_valid": n_valid,
        "valid_share": n_valid / denominator if denominator else None,
        "valid_rule": "all four of L1-L4 with DSC > 0.5 (paper)",
        "share_all_dsc_ge_090": n_all_good / denominator if denominator else None,
        "share_three_dsc_gt_090": n_three_good / denominator if denominator else None,
        "seg_cases": per_case,
        "notes": notes,
    }


def sagittal_slab(pred: np.ndarray, ref: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Both maps restricted to the sagittal slices (LPS x, the last axis) the prediction labels.

    The network segments the mid-sagittal slab, and the paper scores sagittal images; a
    3D reference body would otherwise count its lateral parts as misses. With an empty
    prediction, the reference's fullest sagittal slice is scored (all misses).
    """
    cols = np.flatnonzero((_clean(pred) > 0).any(axis=(0, 1)))
    if cols.size == 0:
        cols = np.array([int(np.argmax((_clean(ref) > 0).sum(axis=(0, 1))))])
    return pred[:, :, cols], ref[:, :, cols]


def evaluate_segmentation(pred_dir: PathLike, ref_dir: PathLike, plane: str = "sagittal") -> dict:
    """Per-vertebra DSC / PPV / sensitivity (mean, SD) and the valid share of the cases
    in `ref_dir`, matched to `pred_dir` by case id (file stem or case sub-folder name).

    plane "sagittal" scores the prediction's sagittal slab (as the paper scores sagittal
    images); "3d" scores the whole volumes."""
    preds = find_label_maps(pred_dir)
    refs = find_label_maps(ref_dir)
    common = [k for k in refs if k in preds]
    if not common:
        raise InputError(
            f"No case id occurs in both label folders (predictions e.g. {list(preds)[:3]}, references e.g. "
            f"{list(refs)[:3]}); name the files (or case sub-folders) the same in both."
        )
    notes: List[str] = []
    extra = [k for k in preds if k not in refs]
    if extra:
        notes.append(f"{len(extra)} predicted label map(s) have no reference and are ignored.")
    missing = [k for k in refs if k not in preds]
    metrics = OrderedDict()
    for case in common:
        pred, ref = _load_pair(preds[case], refs[case], notes, case)
        if plane == "sagittal":
            pred, ref = sagittal_slab(pred, ref)
        metrics[case] = overlap_metrics(pred, ref)
    report = summarize_segmentation(metrics, n_missing=len(missing), notes=notes)
    report["seg_missing_cases"] = missing
    report["seg_plane"] = plane
    return report
