"""Training augmentations.

Segmentation, aimed at a known failure: a network trained on whole synthetic sagittal
images named the levels by their position in the image (with the top or bottom of the
spine out of view it called L2 "L1"). So most training images show a limited
superior-inferior field of view: a window that holds only 2-4 of the labelled vertebrae,
often with neither T12 above nor L5/sacrum below, everything outside it blanked as
beyond the scan's end (0 = the zero padding the network sees at a scan's edge). The
window is then placed at a random height of a fixed-size training tile with a random
scale (+-15 %) and rotation (+-10 deg), and each image gets its own intensity changes
(gamma, contrast, brightness, noise, blur) within the visible region.

Regression: BMD is an absolute density, so patch intensities are never rescaled; only
flips, 90 degree turns, the order of the slices above/below, and a little noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage


@dataclass
class SegAugmentConfig:
    tile: Tuple[int, int] = (192, 192)
    # Share of samples with a limited superior-inferior field of view.
    p_limited_view: float = 0.75
    # How many labelled vertebrae the limited view keeps (weights for 2, 3, 4).
    view_vertebrae_weights: Tuple[float, float, float] = (0.15, 0.45, 0.40)
    # Margin above/below the kept vertebrae, in vertebra pitches (<0 cuts into them).
    view_margin: Tuple[float, float] = (-0.25, 0.6)
    scale: float = 0.15
    rotation_deg: float = 10.0
    # Random shift of the labelled region's centre in the tile, as a share of the tile.
    shift: float = 0.2
    p_gamma: float = 0.5
    gamma: Tuple[float, float] = (0.7, 1.5)
    p_contrast: float = 0.5
    contrast: Tuple[float, float] = (0.85, 1.15)
    brightness: float = 0.04
    p_noise: float = 0.4
    noise_sigma: Tuple[float, float] = (0.005, 0.04)
    p_blur: float = 0.25
    blur_sigma: Tuple[float, float] = (0.4, 1.1)


def label_row_extents(labels: np.ndarray) -> dict:
    """label -> (first row, last row) on a 2D label image (rows = inferior -> superior)."""
    out = {}
    rows = np.nonzero(labels)[0]
    if rows.size == 0:
        return out
    values = labels[labels > 0]
    for v in np.unique(values):
        r = np.nonzero((labels == v).any(axis=1))[0]
        out[int(v)] = (int(r.min()), int(r.max()))
    return out


def limited_view_rows(labels: np.ndarray, rng: np.random.Generator, cfg: SegAugmentConfig) -> Optional[Tuple[int, int]]:
    """Rows [lo, hi) of a superior-inferior window holding 2-4 of the labelled vertebrae."""
    ext = label_row_extents(labels)
    # In anatomical order (anchor classes 5-7 are not numbered by position).
    present = sorted(ext, key=lambda v: ext[v][0])
    if len(present) < 2:
        return None
    counts = np.array([2, 3, 4])
    weights = np.array(cfg.view_vertebrae_weights, float)
    weights = np.where(counts <= len(present), weights, 0.0)
    if weights.sum() <= 0:
        return None
    k = int(rng.choice(counts, p=weights / weights.sum()))
    first = int(rng.integers(0, len(present) - k + 1))
    kept = present[first:first + k]
    lo = min(ext[v][0] for v in kept)
    hi = max(ext[v][1] for v in kept) + 1
    pitch = (hi - lo) / k
    lo -= int(round(rng.uniform(*cfg.view_margin) * pitch))
    hi += int(round(rng.uniform(*cfg.view_margin) * pitch))
    lo, hi = max(0, lo), min(labels.shape[0], hi)
    return (lo, hi) if hi - lo >= 8 else None


def _affine(out_shape, in_centre, out_centre, scale: float, angle_rad: float):
    """Matrix and offset mapping output (tile) coordinates to input coordinates."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    m = np.array([[c, -s], [s, c]]) / scale
    offset = np.asarray(in_centre, float) - m @ np.asarray(out_centre, float)
    return m, offset


def intensity(x: np.ndarray, visible: np.ndarray, rng: np.random.Generator, cfg: SegAugmentConfig) -> np.ndarray:
    """Per-image intensity changes inside the visible region; outside stays 0."""
    x = x.astype(np.float32, copy=True)
    tissue = x > 0  # below the window (air, fat) stays 0 as the window clips it
    if rng.random() < cfg.p_gamma:
        x = np.power(np.clip(x, 0, 1), rng.uniform(*cfg.gamma)).astype(np.float32)
    if rng.random() < cfg.p_contrast:
        x = x * rng.uniform(*cfg.contrast)
        x = np.where(tissue, x + rng.uniform(-cfg.brightness, cfg.brightness), x)
    if rng.random() < cfg.p_blur:
        x = ndimage.gaussian_filter(x, rng.uniform(*cfg.blur_sigma))
    if rng.random() < cfg.p_noise:
        noise = rng.normal(0.0, rng.uniform(*cfg.noise_sigma), size=x.shape).astype(np.float32)
        x = np.where(tissue, x + noise, x)
    x = np.clip(x, 0.0, 1.0)
    x[~visible] = 0.0
    return x.astype(np.float32)


def augment_segmentation(
    image: np.ndarray, labels: np.ndarray, content: Tuple[int, int, int, int], rng: np.random.Generator,
    cfg: SegAugmentConfig, limited_view: Optional[bool] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """One augmented (image, labels) tile of size cfg.tile from a network-grid slice."""
    image = np.asarray(image, np.float32)
    labels = np.asarray(labels, np.uint8)
    r0, r1, c0, c1 = content
    visible = np.zeros(image.shape, bool)
    visible[r0:r1, c0:c1] = True
    if limited_view is None:
        limited_view = rng.random() < cfg.p_limited_view
    if limited_view:
        rows = limited_view_rows(labels, rng, cfg)
        if rows is not None:
            visible[:rows[0]] = False
            visible[rows[1]:] = False
    image = np.where(visible, image, 0.0).astype(np.float32)
    labels = np.where(visible, labels, 0).astype(np.uint8)

    fg = np.argwhere(labels > 0)
    centre = fg.mean(axis=0) if len(fg) else np.array([(r0 + r1) / 2.0, (c0 + c1) / 2.0])
    tile = np.asarray(cfg.tile)
    out_centre = (tile - 1) / 2.0 + rng.uniform(-cfg.shift, cfg.shift, size=2) * tile
    scale = float(np.exp(rng.uniform(np.log(1 - cfg.scale), np.log(1 + cfg.scale))))
    angle = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    m, offset = _affine(tile, centre, out_centre, scale, angle)
    shape = tuple(int(v) for v in tile)
    x = ndimage.affine_transform(image, m, offset, output_shape=shape, order=1, mode="constant", cval=0.0)
    y = ndimage.affine_transform(labels, m, offset, output_shape=shape, order=0, mode="constant", cval=0)
    vis = ndimage.affine_transform(visible.astype(np.uint8), m, offset, output_shape=shape, order=0,
                                   mode="constant", cval=0).astype(bool)
    return intensity(x, vis, rng, cfg), y.astype(np.uint8)


# --------------------------------------------------------------------------- regression
@dataclass
class RegAugmentConfig:
    """Geometry and light noise only: BMD is absolute, so no intensity rescaling."""

    # Each of the two flips, the 90-degree turn and the slice-order swap is applied with this
    # probability: a trabecular patch has no preferred orientation, handedness or slice order.
    p_geometry: float = 0.5
    p_noise: float = 0.3
    noise_sigma: float = 0.008  # ~8 HU in the 1000 HU window


def augment_patches(x: np.ndarray, rng: np.random.Generator, cfg: RegAugmentConfig) -> np.ndarray:
    """Augment a batch of (N, 3, s, s) patches scaled to [0, 1] (no intensity rescaling)."""
    x = np.array(x, np.float32, copy=True)
    for n in range(len(x)):
        p = x[n]
        if rng.random() < cfg.p_geometry:
            p = p[:, :, ::-1]
        if rng.random() < cfg.p_geometry:
            p = p[:, ::-1, :]
        if rng.random() < cfg.p_geometry:
            p = np.rot90(p, k=int(rng.integers(1, 4)), axes=(1, 2))
        if rng.random() < cfg.p_geometry:
            p = p[::-1]
        if rng.random() < cfg.p_noise:
            p = np.clip(p + rng.normal(0.0, cfg.noise_sigma, size=p.shape), 0.0, 1.0)
        x[n] = p
    return x
