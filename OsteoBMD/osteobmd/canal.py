"""METHOD 1: spinal-canal detection -> spine centre -> the sagittal candidate slab.

Per axial slice: bone = HU > 150, closing, NOT, drop what touches the slice border
(outside air and the body's soft tissue, which reach the border through the skin), keep
holes of a canal's size and contents (CSF, not air or bone), then drop 3D components
too short to be a canal. What remains is the vertebral foramen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .config import CanalConfig
from .errors import InputError
from .progress import ProgressCallback, silent

# CSF and epidural fat fill the canal; air (couch foam, bowel gas) and bone do not.
CANAL_MIN_HU = -150.0
CANAL_MAX_HU = 130.0
# Several 3D pieces (the canal is open between laminae at disc levels) are one canal
# when their mean centres lie this close in the axial plane.
SAME_CANAL_MM = 15.0
# Soft tissue is above this; air, lung and couch foam below it.
TRUNK_MIN_HU = -300.0
# Pieces further apart along z than a vertebra plus two discs are not one canal.
MAX_GAP_MM = 45.0


@dataclass
class CanalResult:
    # Per-slice canal centres (LPS mm), one row per axial slice where a canal was found.
    centers_lps_mm: np.ndarray
    # The CT slice index k of each row of centers_lps_mm.
    slice_indices: np.ndarray
    # Mean of the per-slice centres: the spine centre (its x picks the sagittal slab).
    spine_center_lps_mm: np.ndarray
    # The x indices (i) of the CT's sagittal slices that form the candidate slab.
    slab_indices: List[int] = field(default_factory=list)

    @property
    def center_index(self) -> int:
        return self.slab_indices[len(self.slab_indices) // 2]


def _working_image(ct: sitk.Image, spacing_mm: float) -> sitk.Image:
    """A coarser copy in plane (never finer than the CT), same slices."""
    sx, sy, sz = ct.GetSpacing()
    new_spacing = (max(sx, spacing_mm), max(sy, spacing_mm), sz)
    if np.allclose(new_spacing, ct.GetSpacing()):
        return ct
    size = [
        max(1, int(round(n * s / t))) for n, s, t in zip(ct.GetSize(), ct.GetSpacing(), new_spacing)
    ]
    # Averaging before subsampling keeps thin cortex visible on the coarse grid.
    return sitk.Resample(
        ct, size, sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), new_spacing,
        ct.GetDirection(), -1024.0, sitk.sitkFloat32,
    )


def _label(mask: np.ndarray, structure: np.ndarray) -> Tuple[np.ndarray, int]:
    """ndimage.label into the platform's index type: np.bincount and fancy indexing then use
    the labels as they are (int32 labels cost a 64-bit copy each time, seconds on a big CT)."""
    labels = np.empty(mask.shape, np.intp)
    n = ndimage.label(mask, structure=structure, output=labels)
    return labels, int(n)


def canal_mask(hu: np.ndarray, spacing_xyz, cfg: CanalConfig) -> np.ndarray:
    """The canal voxels of an LPS volume `hu[k, j, i]` (boolean, same shape)."""
    sx, sy, sz = spacing_xyz
    bone = hu > cfg.bone_threshold_hu
    # 2D closing in every slice (a (1, r, r) element never joins slices).
    # At least 1.5 voxels, so that on coarse scans the neural foramina still close.
    r = max(1, int(round(max(cfg.closing_radius_mm, 1.5 * min(sx, sy)) / min(sx, sy))))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (yy ** 2 + xx ** 2) <= r * r
    bone = ndimage.binary_closing(bone, structure=disk[None], border_value=0)
    not_bone = ~bone
    # In-plane connectivity only: each slice's holes are labelled on their own.
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    holes, n = _label(not_bone, in_plane)
    if n == 0:
        return np.zeros_like(bone)
    border = np.zeros(n + 1, bool)
    for edge in (holes[:, 0, :], holes[:, -1, :], holes[:, :, 0], holes[:, :, -1]):
        border[np.unique(edge)] = True
    voxels = np.bincount(holes.ravel(), minlength=n + 1)
    area = voxels * sx * sy
    keep = ~border & (area >= cfg.min_area_mm2) & (area <= cfg.max_area_mm2)
    keep[0] = False
    # The mean HU of canal-sized holes only (a few voxels; the same sums as over all of them).
    sized = keep[holes]
    mean_hu = np.bincount(holes[sized], weights=hu[sized], minlength=n + 1) / np.maximum(voxels, 1)
    keep &= (mean_hu >= CANAL_MIN_HU) & (mean_hu <= CANAL_MAX_HU)
    # Only holes in the trunk: the marrow cavities of the arms are canal-sized holes too.
    candidates = keep[holes]
    where = np.nonzero(candidates)  # few voxels: look the trunk up there only
    regions, is_trunk = _trunk_regions(hu)
    candidates[where] = is_trunk[regions[where]]
    # 3D denoising: drop tiny specks, then chain the pieces along the body axis.
    pieces, m = _label(candidates, ndimage.generate_binary_structure(3, 1))
    if m == 0:
        return candidates
    track = _longest_track(pieces, m, (sx, sy, sz), cfg.min_length_mm)
    if track is None:
        return np.zeros_like(candidates)
    in_track = np.zeros(m + 1, bool)
    in_track[track] = True
    return in_track[pieces]


def _trunk_regions(hu: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per slice, the largest region of soft tissue and bone, the trunk (not the arms), as
    (region labels, is-trunk per label): a voxel v is in the trunk when is_trunk[labels[v]]."""
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 2)
    body, n = _label(hu > TRUNK_MIN_HU, in_plane)
    if n == 0:
        return body, np.zeros(1, bool)
    sizes = np.bincount(body.ravel(), minlength=n + 1)
    # With in-plane connectivity the labels are numbered slice by slice (raster order), so
    # slice k holds the contiguous range first[k]..last[k]: no per-slice search is needed.
    last = np.maximum.accumulate(body.reshape(body.shape[0], -1).max(axis=1))
    first = np.concatenate([[0], last[:-1]]) + 1
    largest = np.zeros(n + 1, bool)
    for lo, hi in zip(first, last):
        if hi >= lo:
            largest[lo + int(np.argmax(sizes[lo:hi + 1]))] = True
    return body, largest


def _longest_track(pieces: np.ndarray, m: int, spacing_xyz, min_length_mm: float) -> "np.ndarray | None":
    """The labels of the longest chain of pieces that follows one canal along z.

    On thick slices, or where the canal is open between the laminae (disc levels), the
    canal is a row of short pieces, one per vertebra; a chain links pieces that follow
    each other in z and stay in line in the axial plane.
    """
    sx, sy, sz = spacing_xyz
    slices = ndimage.find_objects(pieces)
    # Centroids from the (few) candidate voxels only; ndimage.center_of_mass scans the volume.
    _, j, i = np.nonzero(pieces)
    lab = pieces[pieces > 0]
    count = np.maximum(np.bincount(lab, minlength=m + 1), 1)
    centres = np.stack([
        np.zeros(m + 1), np.bincount(lab, weights=j, minlength=m + 1) / count,
        np.bincount(lab, weights=i, minlength=m + 1) / count,
    ], axis=1)[1:]
    order = np.argsort([s[0].start for s in slices])
    tracks: List[dict] = []
    for idx in order:
        k0, k1 = slices[idx][0].start, slices[idx][0].stop
        cy, cx = centres[idx, 1] * sy, centres[idx, 2] * sx
        best = None
        for t in tracks:
            gap_mm = (k0 - t["k1"]) * sz
            if gap_mm > MAX_GAP_MM:
                continue
            drift = np.hypot(cx - t["cx"], cy - t["cy"])
            if drift <= SAME_CANAL_MM + 0.2 * max(gap_mm, 0.0) and (best is None or drift < best[0]):
                best = (drift, t)
        if best is None:
            tracks.append({"labels": [idx + 1], "k0": k0, "k1": k1, "cx": cx, "cy": cy})
        else:
            t = best[1]
            t["labels"].append(idx + 1)
            t["k1"], t["cx"], t["cy"] = max(t["k1"], k1), cx, cy
    extent_mm = [(t["k1"] - t["k0"]) * sz for t in tracks]
    best_track = int(np.argmax(extent_mm))
    if extent_mm[best_track] < min_length_mm:
        return None
    return np.asarray(tracks[best_track]["labels"])


def detect_canal(
    ct: sitk.Image, cfg: CanalConfig = CanalConfig(), progress: ProgressCallback = silent
) -> CanalResult:
    """Find the spinal canal; raise InputError when there is none (no spine in view)."""
    progress("canal", 0.0, "detecting the spinal canal")
    work = _working_image(ct, cfg.working_spacing_mm)
    hu = sitk.GetArrayViewFromImage(work)
    mask = canal_mask(np.asarray(hu), work.GetSpacing(), cfg)
    progress("canal", 0.7, "canal centres")
    per_slice = mask.reshape(mask.shape[0], -1).any(axis=1)
    ks = np.flatnonzero(per_slice)
    if ks.size == 0:
        raise InputError(
            "No spinal canal was found in this scan, so no spine is in view. OsteoBMD needs a CT "
            "of the trunk that shows the lumbar spine (L1 to L4); check that the right series was loaded."
        )
    centers = []
    for k in ks:
        j, i = np.nonzero(mask[k])
        centers.append(work.TransformContinuousIndexToPhysicalPoint((float(i.mean()), float(j.mean()), float(k))))
    centers = np.asarray(centers)
    spine_center = centers.mean(axis=0)
    # The slab in the CT's own sagittal slices around the spine centre.
    ci, _, _ = ct.TransformPhysicalPointToContinuousIndex(tuple(spine_center))
    sx = ct.GetSpacing()[0]
    n = max(1, int(round(cfg.slab_width_mm / sx)))
    first = int(round(ci - (n - 1) / 2.0))
    first = min(max(first, 0), max(0, ct.GetSize()[0] - n))
    slab = list(range(first, min(ct.GetSize()[0], first + n)))
    # Slice indices back on the CT's grid (the working copy keeps the CT's slices).
    progress("canal", 1.0, f"spine centre found; {len(slab)} sagittal slices")
    return CanalResult(
        centers_lps_mm=centers,
        slice_indices=ks,
        spine_center_lps_mm=spine_center,
        slab_indices=slab,
    )
