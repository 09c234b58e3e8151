"""METHOD 3.1-3.5: vertebra centres and the cortex-free trabecular patches.

The paper cuts a 32 x 32 px patch at ~0.7 mm/px. Here the three axial slices are sampled
on a grid of `PatchConfig.spacing_mm` around each vertebra's centre, so the patch is the
same ~22 mm of bone on every scanner; the body is found by thresholding bone, closing and
filling (the cortical ring encloses the trabecular bone, whatever its density), keeping
the component at the centre, and eroding the cortex away. Every voxel used is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.morphology import convex_hull_image

from . import io as ctio
from .calibration import Calibration
from .config import LABEL_OF, PatchConfig, SegmentationConfig
from .results import PatchInfo
from .sagittal import window01

# Half the side of the axial search window around a vertebra's centre.
SEARCH_HALF_MM = 40.0
# A patch is trusted when at least this share of it lies inside the trabecular bone.
MIN_COVERAGE = 0.95
# The vertebral body's half-width is ~20-25 mm; bone further out belongs to other structures.
BODY_RADIUS_MM = 28.0
# Metal is looked for this far around the patch (streaks spread from screws and cement).
METAL_MARGIN_MM = 10.0


@dataclass
class VertebraGeometry:
    center_lps_mm: np.ndarray
    # Area on the mid-sagittal slice and superior-inferior height of the labelled body.
    sagittal_area_mm2: float
    height_mm: float
    n_voxels: int


@dataclass
class Patch:
    hu: np.ndarray  # (3, size, size) float32 HU: slices below, centre, above
    x01: np.ndarray  # the network input: fixed-window scaling, quantised to 8 bits as the paper
    info: PatchInfo
    coverage: float
    reasons: List[str] = field(default_factory=list)


def vertebra_geometry(labels: sitk.Image) -> Dict[str, VertebraGeometry]:
    """Centre (largest connected component's centroid, LPS mm), area and height per label."""
    full = sitk.GetArrayViewFromImage(labels)
    sx, sy, sz = labels.GetSpacing()
    out: Dict[str, VertebraGeometry] = {}
    # Work in the labels' bounding box: a 512 x 512 x 400 volume is mostly background.
    nonzero = [np.flatnonzero(full.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
    if any(idx.size == 0 for idx in nonzero):
        return out
    box = tuple(slice(idx[0], idx[-1] + 1) for idx in nonzero)
    offset = np.array([idx[0] for idx in nonzero])
    lab = np.asarray(full[box])
    for name, value in LABEL_OF.items():
        mask = lab == value
        if not mask.any():
            continue
        components, n = ndimage.label(mask)
        if n > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            mask = components == int(np.argmax(sizes))
        k, j, i = (a + o for a, o in zip(np.nonzero(mask), offset))
        center = np.asarray(labels.TransformContinuousIndexToPhysicalPoint(
            (float(i.mean()), float(j.mean()), float(k.mean()))
        ))
        # The sagittal slice with most of the body stands for its mid-sagittal area.
        per_slice = np.bincount(i)
        area = float(per_slice.max()) * sy * sz
        height = float(k.max() - k.min() + 1) * sz
        out[name] = VertebraGeometry(center, area, height, int(mask.sum()))
    return out


def _sample_axial(ct: sitk.Image, center: np.ndarray, spacing: float, half_mm: float, offsets_mm,
                  interpolator=sitk.sitkLinear, default: float = -1024.0) -> np.ndarray:
    """Axial slices (LPS axes) of side 2*half_mm around `center`, at z offsets; (n, y, x)."""
    n = int(round(2 * half_mm / spacing)) + 1
    out = []
    for dz in offsets_mm:
        origin = (center[0] - half_mm, center[1] - half_mm, center[2] + dz)
        ref = sitk.Image([n, n, 1], sitk.sitkFloat32)
        ref.SetSpacing((spacing, spacing, 1.0))
        ref.SetOrigin(origin)
        resampled = sitk.Resample(ct, ref, sitk.Transform(), interpolator, default, sitk.sitkFloat32)
        out.append(sitk.GetArrayFromImage(resampled)[0])
    return np.stack(out)


def _body_interior(slice_hu: np.ndarray, cfg: PatchConfig, spacing: float,
                   label_rows: Optional[np.ndarray]) -> np.ndarray:
    """The trabecular interior of the vertebral body at the window's centre.

    The cortical shell is often open at the back (basivertebral veins) and porous, so
    the body is the convex hull of the bone near the centre, not a filled ring.
    """
    bone = slice_hu > cfg.strip_threshold_hu
    r = max(1, int(round(2.0 / spacing)))
    disk = np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r
    bone = ndimage.binary_closing(bone, disk)
    # The canal and posterior arch lie behind the body: the segmented body's
    # anterior-posterior extent (from the label map) keeps them out.
    if label_rows is not None and label_rows.any():
        rows = np.flatnonzero(label_rows)
        band = np.zeros_like(bone)
        band[rows.min():rows.max() + 1, :] = True
        bone &= band
    # All bone within a body's radius of the centre (the ring and any dense islands in it).
    yy, xx = np.mgrid[0:bone.shape[0], 0:bone.shape[1]]
    c = np.array(slice_hu.shape) // 2
    body = bone & (np.hypot(yy - c[0], xx - c[1]) * spacing <= BODY_RADIUS_MM)
    if not body.any():
        return np.zeros_like(bone)
    hull = convex_hull_image(body)
    margin = max(1, int(round(cfg.cortex_margin_mm / spacing)))
    interior = ndimage.binary_erosion(hull, iterations=margin, border_value=0)
    # Cortex left inside (thick end plates, osteophytes) is not trabecular bone.
    return interior & (slice_hu < 700.0)


def extract_patch(
    ct: sitk.Image,
    center_lps_mm,
    cfg: PatchConfig = PatchConfig(),
    labels: Optional[sitk.Image] = None,
    label_value: Optional[int] = None,
    window: SegmentationConfig = SegmentationConfig(),
    calibration: Optional[Calibration] = None,
) -> Patch:
    """Cut the 3 x size x size trabecular patch of one vertebra (METHOD 3.2-3.5).

    `hu` keeps the scanner's HU; the network input `x01` is made from the calibrated HU.
    """
    center = np.asarray(center_lps_mm, float)
    s = cfg.spacing_mm
    offsets = [-cfg.slice_step_mm, 0.0, cfg.slice_step_mm]
    half = SEARCH_HALF_MM
    window_hu = _sample_axial(ct, center, s, half, offsets)
    label_rows = None
    if labels is not None and label_value is not None:
        lab = _sample_axial(labels, center, s, half, [0.0], sitk.sitkNearestNeighbor, 0.0)[0]
        label_rows = (lab == label_value).any(axis=1)
    interior = _body_interior(window_hu[1], cfg, s, label_rows)
    size = cfg.size_px
    # Share of each size x size square (by its top-left corner) inside the interior.
    coverage = ndimage.uniform_filter(interior.astype(np.float32), size, mode="constant")
    # uniform_filter centres the square; shift so index = square's centre pixel.
    n = interior.shape[0]
    yy, xx = np.mgrid[0:n, 0:n]
    c = n // 2
    dist = np.hypot(yy - c, xx - c)
    half_px = size // 2
    inside = (yy >= half_px) & (yy < n - half_px) & (xx >= half_px) & (xx < n - half_px)
    best_cov = coverage[inside].max() if inside.any() else 0.0
    good = inside & (coverage >= min(best_cov, 0.999) - 1e-6)
    cy, cx = np.unravel_index(np.argmin(np.where(good, dist, np.inf)), dist.shape)
    y0, x0 = cy - half_px, cx - half_px
    hu = window_hu[:, y0:y0 + size, x0:x0 + size].astype(np.float32)
    cov = float(interior[y0:y0 + size, x0:x0 + size].mean())

    reasons: List[str] = []
    if cov < MIN_COVERAGE:
        reasons.append(
            f"patch not inside trabecular bone ({cov * 100:.0f}% inside the body's interior)"
        )
    m = int(round(METAL_MARGIN_MM / s))
    around = window_hu[:, max(0, y0 - m):y0 + size + m, max(0, x0 - m):x0 + size + m]
    if (around > cfg.metal_hu).any():
        reasons.append(f"metal or cement near the patch (above {cfg.metal_hu:.0f} HU)")

    # Patch centre (between the two middle pixels) in LPS mm.
    pcx = center[0] - half + (x0 + (size - 1) / 2.0) * s
    pcy = center[1] - half + (y0 + (size - 1) / 2.0) * s
    pc = [float(pcx), float(pcy), float(center[2])]
    side = size * s
    h = side / 2.0
    corners = [[pcx - h, pcy - h, pc[2]], [pcx + h, pcy - h, pc[2]], [pcx + h, pcy + h, pc[2]], [pcx - h, pcy + h, pc[2]]]
    info = PatchInfo(
        center_lps_mm=pc,
        size_mm=float(side),
        size_px=int(size),
        spacing_mm=float(s),
        slice_offsets_mm=[float(o) for o in offsets],
        center_ijk=list(ctio.input_grid(ct).continuous_index(pc)),  # on the CT file's own grid
        corners_lps_mm=[[float(v) for v in p] for p in corners],
        mean_hu=float(hu.mean()),
    )
    x01 = network_input(calibration.apply(hu) if calibration is not None else hu, window)
    return Patch(hu=hu, x01=x01, info=info, coverage=cov, reasons=reasons)


def network_input(hu: np.ndarray, window: SegmentationConfig) -> np.ndarray:
    """The regression network's input: fixed-window scaling, quantised to 8 bits as the paper."""
    return (np.round(window01(hu, window) * 255.0) / 255.0).astype(np.float32)


def vertebra_centers(labels: sitk.Image, ct: Optional[sitk.Image] = None) -> Dict[str, np.ndarray]:
    """Centre (LPS mm) of each labelled vertebra; `ct` is accepted for symmetry and unused."""
    return {name: g.center_lps_mm for name, g in vertebra_geometry(labels).items()}
