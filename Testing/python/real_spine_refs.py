"""Reference sagittal class maps (0 background, 1 body, 2 sacrum) for the two shared real CTs,
with the true level name of every reference body, for the naming tests.

- TotalSegmentator sample: bodies from vertebral_bodies.nii.gz (19 T12 ... 24 L5), sacrum
  from labels 25/26 of the full map, both on the canal slab.
- Pancreas-CT-CB_001: T12-L5 and the sacrum from the project's reference masks
  (Testing/data/real_ct/<case>/reference_levels.nii.gz: 12 T12, 21..25 L1..L5, 30 sacrum; or
  the folder in $OSTEOBMD_REAL_REFS) when present; otherwise bodies T12-L5 are the bone
  (> 110 HU) of the slab in front of the canal within levels.json's z ranges (shrunk by 1 mm)
  and the sacrum the bone below L5. Bodies above T12 are bone components of a narrower column
  (unnamed; thoracic discs are thin at 3 mm, so some come merged, which find_bodies must split).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[2]
DATA = Path("/work/shared/data")
TS = DATA / "real_ct_totalsegmentator_example"
PANCREAS = DATA / "real_ct_pancreas_ct_cb_001"
LEVELS = ["T12", "L1", "L2", "L3", "L4", "L5"]


@dataclass
class RealSpine:
    name: str
    ct: sitk.Image
    class_map: np.ndarray  # [k, j] on the CT's sagittal grid
    truth: Dict[str, np.ndarray]  # level -> its body's pixels on the class map
    canal: object  # osteobmd.canal.CanalResult of this CT

    @property
    def spacing_zy(self):
        return (self.ct.GetSpacing()[2], self.ct.GetSpacing()[1])

    def crop_rows(self, first: int, stop: int) -> "RealSpine":
        """The same case with only slices first..stop-1 (CT and maps cropped alike). The canal
        is the whole scan's, kept on the remaining slices (centres are in mm, so they stay)."""
        from osteobmd.canal import CanalResult

        keep = (self.canal.slice_indices >= first) & (self.canal.slice_indices < stop)
        canal = CanalResult(self.canal.centers_lps_mm[keep], self.canal.slice_indices[keep] - first,
                            self.canal.spine_center_lps_mm, list(self.canal.slab_indices))
        return RealSpine(self.name, self.ct[:, :, first:stop], self.class_map[first:stop],
                         {k: v[first:stop] for k, v in self.truth.items()}, canal)

    def true_names(self, finding) -> list:
        """The true level of each found body (None above T12 / unknown)."""
        out = []
        for b in finding.bodies:
            hit = [n for n, m in self.truth.items() if (m & b.mask).sum() > 0.5 * b.mask.sum()]
            out.append(hit[0] if hit else None)
        return out


def _reference_levels(case_dir: str):
    """The reference label map of a case on its CT grid (LPS array), or None."""
    from osteobmd.io import to_lps

    for root in (os.environ.get("OSTEOBMD_REAL_REFS"), REPO / "Testing" / "data" / "real_ct"):
        if root and (Path(root) / case_dir / "reference_levels.nii.gz").exists():
            return sitk.GetArrayFromImage(to_lps(sitk.ReadImage(str(Path(root) / case_dir / "reference_levels.nii.gz"))))
    return None


REFERENCE_CODES = {"T12": 12, "L1": 21, "L2": 22, "L3": 23, "L4": 24, "L5": 25}
SACRUM_CODE = 30


def _need(path: Path):
    if not path.exists():
        pytest.skip(f"real CT data not available ({path})")


def totalsegmentator_spine() -> RealSpine:
    _need(TS / "ct.nii.gz")
    return _totalsegmentator_spine()


def pancreas_spine() -> RealSpine:
    _need(PANCREAS / "ct.nii.gz")
    return _pancreas_spine()


@lru_cache(maxsize=1)
def _totalsegmentator_spine() -> RealSpine:
    from osteobmd.canal import detect_canal
    from osteobmd.io import read_ct, to_lps

    ct = read_ct(TS / "ct.nii.gz")
    bodies = sitk.GetArrayFromImage(to_lps(sitk.ReadImage(str(TS / "vertebral_bodies.nii.gz"))))
    full = sitk.GetArrayFromImage(to_lps(sitk.ReadImage(str(TS / "totalsegmentator_all_structures.nii.gz"))))
    canal = detect_canal(ct)
    slab = canal.slab_indices
    body = (bodies[:, :, slab] > 0).mean(axis=2) >= 0.5
    sacrum = np.isin(full[:, :, slab], (25, 26)).mean(axis=2) >= 0.5
    cm = np.zeros(body.shape, np.uint8)
    cm[sacrum] = 2
    cm[body] = 1
    truth = {n: (bodies[:, :, slab] == lab).mean(axis=2) >= 0.5 for n, lab in zip(LEVELS, range(19, 25))}
    return RealSpine("totalsegmentator_example", ct, cm, truth, canal)


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    return lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)


@lru_cache(maxsize=1)
def _pancreas_spine() -> RealSpine:
    from osteobmd.canal import detect_canal
    from osteobmd.io import read_ct

    ct = read_ct(PANCREAS / "ct.nii.gz")
    levels = json.loads((PANCREAS / "levels.json").read_text(encoding="utf-8"))["bodies_z_mm"]
    canal = detect_canal(ct)
    sag = sitk.GetArrayViewFromImage(ct)[:, :, canal.slab_indices].mean(axis=2)
    _, sy, sz = ct.GetSpacing()
    oz, oy = ct.GetOrigin()[2], ct.GetOrigin()[1]
    jc = (np.median(canal.centers_lps_mm[:, 1]) - oy) / sy
    z = oz + np.arange(sag.shape[0]) * sz
    column = np.zeros(sag.shape, bool)
    column[:, int(jc - 70 / sy): int(jc - 6 / sy)] = True
    cm = np.zeros(sag.shape, np.uint8)
    truth = {}
    reference = _reference_levels("real_ct_pancreas_ct_cb_001")
    if reference is not None:
        on_slab = reference[:, :, canal.slab_indices]
        for name, code in REFERENCE_CODES.items():
            truth[name] = (on_slab == code).mean(axis=2) >= 0.5
            cm[truth[name]] = 1
        cm[((on_slab == SACRUM_CODE).mean(axis=2) >= 0.5) & (cm == 0)] = 2
    else:
        for name, r in levels.items():
            rows = ((z >= r["inferior"] + 1) & (z <= r["superior"] - 1))[:, None]
            m = ndimage.binary_fill_holes(_largest(column & rows & (sag > 110)))
            cm[m] = 1
            truth[name] = m
    # Thoracic bodies are shallower; a narrower column keeps the contrast-filled heart out.
    thoracic = np.zeros(sag.shape, bool)
    thoracic[:, int(jc - 45 / sy): int(jc - 6 / sy)] = True
    bone = ndimage.binary_opening(thoracic & (sag > 150), np.ones((2, 2), bool))
    above = bone & (z[:, None] > levels["T12"]["superior"] + 3)
    lab, n = ndimage.label(above)
    for i in range(1, n + 1):
        m = ndimage.binary_fill_holes(lab == i)
        if m.sum() * sy * sz > 200:
            cm[m] = 1
    if reference is None:
        below = column & (sag > 150) & (z[:, None] < levels["L5"]["inferior"] - 4)
        cm[ndimage.binary_fill_holes(_largest(below)) & (cm == 0)] = 2
    return RealSpine("pancreas_ct_cb_001", ct, cm, truth, canal)
