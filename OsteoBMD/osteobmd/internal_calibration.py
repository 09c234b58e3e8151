"""The "internal" calibration: phantomless, from the patient's own air and fat.

Phantomless QCT replaces the external phantom by tissues whose attenuation is known and
stable across patients, traditionally subcutaneous / paraspinal fat and paraspinal muscle
(Gudmundsdottir et al. 1993, "Vertebral bone density in Icelandic women using quantitative
computed tomography without an external reference phantom", Osteoporos Int 3:84-89;
Mueller et al. 2011, "Phantomless QCT BMD system as accurate alternative to an external
reference phantom", Eur J Radiol 79:375-381), and in later internal-calibration work also
air, blood and bone (e.g. Michalski et al. 2020, Med Phys 47:2153-2162). Here the two
references are
    air  (outside the body, inside the reconstruction field of view)  ->  -1000 HU
    fat  (robust mode of the -190..-30 HU band inside the body)       ->  -100 HU
(-1000 HU is air by the definition of the Hounsfield scale; -100 HU is the usual
value of adipose tissue at 120 kVp, literature range about -90..-120 HU). Skeletal
muscle (0..100 HU band; paraspinal when the spine centre is known) is measured as a
check only: its HU varies with fatty infiltration, so it is a poor anchor.

What the internal calibration can and cannot do: it removes a global offset/scale error
of a scanner's HU (a miscalibrated air/water scale, a reconstruction offset). It cannot
remove the energy (kVp, filtration) dependence of bone attenuation, which moves bone HU
much more than fat or air HU; for that a phantom scanned with the patient protocol
("linear:") is needed. When the tissues cannot be measured reliably (no air in the field
of view, too little fat, implausible values) it refuses: kind "none" with the reason.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .calibration import AIR_REFERENCE_HU, FAT_REFERENCE_HU, Calibration
from .errors import InputError
from .io import to_lps

# Measurement bands (measured, i.e. uncalibrated, HU).
BODY_THRESHOLD_HU = -500.0           # body / air boundary
AIR_SEARCH_HU = (-1500.0, -500.0)    # below -1500 is never real air (padding, errors)
FAT_BAND_HU = (-190.0, -30.0)        # the fat band; the mode must fall in it
FAT_SEARCH_HU = (-250.0, -10.0)      # searched a little wider so a shifted scale is still found
MUSCLE_BAND_HU = (0.0, 100.0)
MUSCLE_SEARCH_HU = (-30.0, 130.0)
# Plausibility: a scanner's HU scale is never off by more than this.
AIR_PLAUSIBLE_HU = (-1150.0, -850.0)
SLOPE_PLAUSIBLE = (0.8, 1.25)
# Padding outside the reconstruction circle is a constant; real (noisy) air is not, and
# values between these are taken as (possibly noiseless synthetic) air, not padding.
PADDING_NOT_BETWEEN = (-1010.0, BODY_THRESHOLD_HU)

# Sampling (speed: < 1 s on a 512x512x400 CT).
MAX_SLICES = 24
TARGET_SPACING_MM = 2.0
SPINE_WINDOW_MM = 90.0
MIN_AIR_VOXELS = 400
MIN_FAT_VOXELS = 400
MIN_MUSCLE_VOXELS = 200


def robust_mode(values: np.ndarray, lo: float, hi: float, smooth_hu: float = 4.0,
                min_count: int = 1) -> Optional[Tuple[float, Optional[float], int, bool]]:
    """Mode of the values in [lo, hi]: peak of a 1-HU histogram smoothed by a Gaussian,
    refined by a Gaussian (log-parabola) fit over the bins above 60 % of the peak.
    Returns (mode, sd, n, interior) or None when fewer than min_count values; `interior`
    is False when the peak lies at the band's edge (no real peak inside the band); `sd`
    is the peak's width with the smoothing removed."""
    v = values[(values >= lo) & (values <= hi)]
    n = int(v.size)
    if n < max(1, min_count):
        return None
    edges = np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.5, 1.0)
    centers = (edges[:-1] + edges[1:]) / 2
    h = np.histogram(v, edges)[0].astype(float)
    hs = ndimage.gaussian_filter1d(h, smooth_hu, mode="constant")
    i = int(np.argmax(hs))
    top = hs[i]
    left, right = i, i
    while left > 0 and hs[left - 1] >= 0.6 * top:
        left -= 1
    while right < hs.size - 1 and hs[right + 1] >= 0.6 * top:
        right += 1
    mode, sd = float(centers[i]), None
    if right - left >= 2:
        a, b, _ = np.polyfit(centers[left:right + 1], np.log(hs[left:right + 1]), 2)
        if a < 0:
            vertex = -b / (2 * a)
            if centers[left] <= vertex <= centers[right]:
                mode = float(vertex)
            var = -1.0 / (2 * a) - smooth_hu ** 2
            sd = float(math.sqrt(var)) if var > 0 else 0.0
    margin = 2 * smooth_hu
    interior = (lo + margin) <= mode <= (hi - margin)
    return mode, sd, n, interior


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _padding_value(slices: np.ndarray) -> Optional[float]:
    """The constant that fills the outside of the reconstruction circle, if any: the
    exact value most of the slices' corners share (noisy air never repeats exactly)."""
    corners = np.concatenate([slices[:, 0, 0], slices[:, 0, -1], slices[:, -1, 0], slices[:, -1, -1]])
    values, counts = np.unique(corners, return_counts=True)
    j = int(np.argmax(counts))
    value = float(values[j])
    if counts[j] < 0.5 * corners.size:
        return None
    if PADDING_NOT_BETWEEN[0] < value <= PADDING_NOT_BETWEEN[1]:
        return None
    return value


def _padding_mask(sl: np.ndarray, value: Optional[float]) -> np.ndarray:
    """Pixels of the constant padding region connected to the slice border (a large
    region; scattered pixels that happen to hold the value, e.g. clamped air, are kept)."""
    if value is None:
        return np.zeros(sl.shape, dtype=bool)
    # Padding is a solid region; clamped noisy air is speckle, which the opening removes
    # (even when it is dense enough to percolate to the border).
    equal = ndimage.binary_opening(sl == value, iterations=2)
    labels, n = ndimage.label(equal)
    if n == 0:
        return equal
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = border[border > 0]
    mask = np.isin(labels, border)
    if mask.sum() < 0.02 * sl.size:
        return np.zeros(sl.shape, dtype=bool)
    return mask


def _iterations(mm: float, pixel_mm: float) -> int:
    return max(1, int(round(mm / pixel_mm)))


def _clamped_air(air: np.ndarray, band: Tuple[float, float], details: dict):
    """Scanners that store HU as unsigned + offset clamp air at their lowest value (often
    -1024): the histogram then has a spike at that exact value, and the mode of the rest
    is pulled up. With clamping, the median of all air values (clamped ones included) is
    used instead: censoring the low tail leaves the median of a symmetric noise peak
    unchanged as long as less than half is clamped.
    Returns None (no clamping: use the mode), a (value, sd, n) estimate, or a refusal
    reason string. An all-constant air (noiseless synthetic images) is not clamping."""
    in_band = air[(air >= band[0]) & (air <= band[1])]
    if in_band.size < MIN_AIR_VOXELS:
        return None
    lowest = float(in_band.min())
    share = float(np.mean(in_band == lowest))
    if not 0.005 < share < 0.95:
        return None
    details["air_clamped_at"] = lowest
    details["air_clamped_share"] = round(share, 4)
    if share >= 0.4:
        return (f"{100 * share:.0f} % of the air outside the body is clamped at {lowest:.0f} HU, "
                "so its true level cannot be measured")
    median, q84 = np.percentile(in_band, [50, 84.13])
    return float(median), float(q84 - median), int(in_band.size)


def _refuse(reason: str, measured: Optional[dict] = None, details: Optional[dict] = None) -> Calibration:
    return Calibration(
        kind="none", requested="internal", measured=measured or {},
        reference={"air": AIR_REFERENCE_HU, "fat": FAT_REFERENCE_HU},
        note=f"internal calibration refused: {reason}; BMD uses the scanner's HU unchanged",
        details=details or {},
    )


def estimate_internal_calibration(ct: sitk.Image, spine_center_lps_mm: Optional[Sequence[float]] = None,
                                  max_slices: int = MAX_SLICES,
                                  target_spacing_mm: float = TARGET_SPACING_MM) -> Calibration:
    """Phantomless calibration from air outside the body and the patient's fat.

    Fits HU' = slope * HU + intercept with measured air -> -1000 HU and measured fat ->
    -100 HU. Works on up to `max_slices` axial slices, subsampled in plane to about
    `target_spacing_mm` (near the spine centre's level when given). Refuses (kind "none",
    reason in `note`) when air or fat cannot be measured reliably.
    """
    if ct.GetDimension() != 3:
        raise InputError("The internal calibration needs a 3D CT.")
    ct = to_lps(ct)  # io.read_ct already gives LPS
    array = sitk.GetArrayViewFromImage(ct)  # (k, j, i), no copy
    nz, ny, nx = array.shape
    sx, sy, sz = ct.GetSpacing()

    # Slices: around the spine centre's level, else the central 90 % (cone-beam edges out).
    k_lo, k_hi = int(0.05 * nz), max(int(0.05 * nz) + 1, int(math.ceil(0.95 * nz)))
    center_idx = None
    if spine_center_lps_mm is not None:
        center_idx = ct.TransformPhysicalPointToContinuousIndex([float(c) for c in spine_center_lps_mm])
        half = int(round(SPINE_WINDOW_MM / sz))
        kc = int(round(center_idx[2]))
        k_lo, k_hi = max(0, kc - half), min(nz, kc + half + 1)
        if k_hi <= k_lo:
            k_lo, k_hi = 0, nz
    count = min(max_slices, k_hi - k_lo)
    ks = np.unique(np.linspace(k_lo, k_hi - 1, count).round().astype(int))
    step = max(1, int(round(target_spacing_mm / min(sx, sy))))
    pixel_mm = step * min(sx, sy)
    slices = np.asarray(array[ks, ::step, ::step], dtype=np.float32)

    pad_value = _padding_value(slices)
    air_values: List[np.ndarray] = []
    fat_values: List[np.ndarray] = []
    muscle_values: List[np.ndarray] = []
    body_fraction = []
    for sl in slices:
        pad = _padding_mask(sl, pad_value)
        fov = ~pad
        if pad.any():  # stay clear of the reconstruction circle's edge
            fov = ndimage.binary_erosion(fov, iterations=_iterations(5.0, pixel_mm), border_value=1)
        body = _largest_component((sl > BODY_THRESHOLD_HU) & ~pad)
        body = ndimage.binary_fill_holes(body)
        if not body.any():
            continue
        body_fraction.append(body.sum() / max(1, fov.sum()))
        outside = fov & ~ndimage.binary_dilation(body, iterations=_iterations(10.0, pixel_mm))
        air_values.append(sl[outside])
        inner = ndimage.binary_erosion(body, iterations=_iterations(3.0, pixel_mm))
        fat_values.append(sl[inner])
        if center_idx is not None:
            # Paraspinal muscles: 15-80 mm behind the canal centre, within 60 mm left/right.
            ci, cj = center_idx[0] / step, center_idx[1] / step
            j0 = int(max(0, cj + 15.0 / pixel_mm))
            j1 = int(min(sl.shape[0], cj + 80.0 / pixel_mm))
            i0 = int(max(0, ci - 60.0 / pixel_mm))
            i1 = int(min(sl.shape[1], ci + 60.0 / pixel_mm))
            box = np.zeros_like(inner)
            box[j0:j1, i0:i1] = True
            muscle_values.append(sl[inner & box])
        else:
            muscle_values.append(sl[inner])

    details: Dict[str, object] = {
        "slices_used": int(len(ks)), "in_plane_step": int(step), "padding_value": pad_value,
    }
    if not air_values:
        return _refuse("no body found in the sampled slices", details=details)
    air = np.concatenate(air_values)
    fat = np.concatenate(fat_values)
    muscle = np.concatenate(muscle_values) if muscle_values else np.zeros(0, np.float32)

    clamped = _clamped_air(air, AIR_SEARCH_HU, details)
    if isinstance(clamped, str):
        return _refuse(clamped, details=details)
    if clamped is not None:
        air_fit = (*clamped, True)
    else:
        air_fit = robust_mode(air, *AIR_SEARCH_HU, smooth_hu=4.0, min_count=MIN_AIR_VOXELS)
    if air_fit is None:
        return _refuse("no air outside the body inside the field of view (the reconstruction seems cropped "
                       "to the body)", details=details)
    air_hu, air_sd, air_n, air_interior = air_fit
    measured: Dict[str, Optional[float]] = {"air": round(air_hu, 2)}
    details.update({"air_sd": air_sd, "air_n": air_n})
    if not air_interior or not (AIR_PLAUSIBLE_HU[0] <= air_hu <= AIR_PLAUSIBLE_HU[1]):
        return _refuse(f"the air outside the body reads {air_hu:.0f} HU, not near -1000 HU "
                       "(no clean air in the field of view)", measured, details)

    fat_fit = robust_mode(fat, *FAT_SEARCH_HU, smooth_hu=3.0, min_count=MIN_FAT_VOXELS)
    if fat_fit is None:
        return _refuse("too little fat (-190..-30 HU) in the body to measure", measured, details)
    fat_hu, fat_sd, fat_n, fat_interior = fat_fit
    measured["fat"] = round(fat_hu, 2)
    details.update({"fat_sd": fat_sd, "fat_n": fat_n})
    if not fat_interior or not (FAT_BAND_HU[0] <= fat_hu <= FAT_BAND_HU[1]):
        return _refuse(f"no clear fat peak in the -190..-30 HU band (found {fat_hu:.0f} HU)", measured, details)

    slope = (FAT_REFERENCE_HU - AIR_REFERENCE_HU) / (fat_hu - air_hu)
    intercept = AIR_REFERENCE_HU - slope * air_hu
    if not (SLOPE_PLAUSIBLE[0] <= slope <= SLOPE_PLAUSIBLE[1]):
        return _refuse(f"the fitted slope {slope:.3f} is implausible (air {air_hu:.0f}, fat {fat_hu:.0f} HU)",
                       measured, details)

    note = (f"internal calibration (air {air_hu:.1f} -> {AIR_REFERENCE_HU:.0f} HU, fat {fat_hu:.1f} -> "
            f"{FAT_REFERENCE_HU:.0f} HU): HU' = {slope:.4f} * HU {intercept:+.2f}")
    muscle_fit = robust_mode(muscle, *MUSCLE_SEARCH_HU, smooth_hu=3.0, min_count=MIN_MUSCLE_VOXELS)
    if muscle_fit is not None and muscle_fit[3] and MUSCLE_BAND_HU[0] <= muscle_fit[0] <= MUSCLE_BAND_HU[1]:
        measured["muscle"] = round(muscle_fit[0], 2)
        calibrated_muscle = slope * muscle_fit[0] + intercept
        details.update({"muscle_sd": muscle_fit[1], "muscle_n": muscle_fit[2],
                        "muscle_region": "paraspinal" if center_idx is not None else "whole body band",
                        "muscle_calibrated": round(float(calibrated_muscle), 2)})
        note += f"; check: muscle {muscle_fit[0]:.0f} -> {calibrated_muscle:.0f} HU"
        if not (MUSCLE_BAND_HU[0] <= calibrated_muscle <= MUSCLE_BAND_HU[1]):
            note += " (outside 0..100 HU: check the scan)"
    else:
        measured["muscle"] = None
    if body_fraction and float(np.median(body_fraction)) > 0.85:
        note += "; little air around the body, the air estimate rests on a thin margin"
    return Calibration(
        kind="internal", slope=float(slope), intercept=float(intercept), measured=measured,
        reference={"air": AIR_REFERENCE_HU, "fat": FAT_REFERENCE_HU}, note=note, requested="internal",
        details=details,
    )
