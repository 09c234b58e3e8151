"""Geometric primitives: signed distances (mm, negative inside) and soft-edged painting.

Two families:
- `ZTube`: a soft-tissue structure whose axial cross-section is an ellipse that changes
  with z (aorta, psoas, kidneys, liver ...). It is painted into 2D axial key slices, inside
  its bounding box only.
- 3D local-frame SDFs for bone (`body_sdf`, `ecapsule_sdf`, `rounded_box_sdf`) evaluated on
  bounding-box sub-grids of the spine canvas.

Everything is float32 and vectorised; nothing loops over voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

F32 = np.float32


# ----------------------------------------------------------------------------- 2D helpers
def soft_alpha(d: np.ndarray, edge: float) -> np.ndarray:
    """Occupancy in [0,1] of a signed distance map, with a linear ramp `edge` mm wide."""
    a = 0.5 - d * (1.0 / edge)
    np.clip(a, 0.0, 1.0, out=a)
    return a


def blend(dst: np.ndarray, alpha: np.ndarray, value) -> None:
    """dst <- dst + alpha * (value - dst), in place."""
    dst += alpha * (value - dst)


def axis_range(coords: np.ndarray, lo: float, hi: float) -> tuple[int, int]:
    """Index range [i0, i1) of the (increasing, uniform) `coords` inside [lo, hi]."""
    c0 = float(coords[0])
    step = float(coords[1] - coords[0]) if len(coords) > 1 else 1.0
    i0 = int(np.floor((lo - c0) / step))
    i1 = int(np.ceil((hi - c0) / step)) + 1
    return max(i0, 0), min(i1, len(coords))


def ellipse_sdf_sep(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse; u (nx,), v (ny,) -> (ny, nx)."""
    a = max(a, 1e-3)
    b = max(b, 1e-3)
    fu = (u / a) ** 2
    fv = (v / b) ** 2
    gu = (u / (a * a)) ** 2
    gv = (v / (b * b)) ** 2
    F = fv[:, None] + fu[None, :]
    G = gv[:, None] + gu[None, :]
    np.sqrt(G, out=G)
    G *= 2.0
    G += 1e-6
    F -= 1.0
    F /= G
    # deep inside, the linearisation underestimates depth; keep it monotone and bounded
    return F


def ellipse_sdf_rot(U: np.ndarray, V: np.ndarray, a: float, b: float, ang: float) -> np.ndarray:
    """Rotated ellipse; U, V are broadcastable 2D offsets (ny,1) and (1,nx)."""
    c, s = np.cos(ang), np.sin(ang)
    p = U * c + V * s
    q = -U * s + V * c
    a = max(a, 1e-3)
    b = max(b, 1e-3)
    F = (p / a) ** 2 + (q / b) ** 2
    G = np.sqrt((p / (a * a)) ** 2 + (q / (b * b)) ** 2) * 2.0 + 1e-6
    return (F - 1.0) / G


@dataclass
class ZTube:
    """Ellipse cross-section (cx, cy, ax, ay, angle) interpolated along z control points.

    hu: a number, or a callable (X, Y, z) -> array giving the HU inside (texture).
    clip: optional name of a region alpha the painter multiplies by (e.g. 'cavity').
    rim: (thickness_mm, hu) painted first as a slightly larger ellipse (fascia, wall).
    """

    name: str
    z: Sequence[float]
    cx: Sequence[float]
    cy: Sequence[float]
    ax: Sequence[float]
    ay: Sequence[float]
    hu: object = 40.0
    ang: Optional[Sequence[float]] = None
    clip: Optional[str] = None
    rim: Optional[tuple] = None
    noise: float = 0.0  # amplitude of the shared soft-tissue modulation field (HU)

    def __post_init__(self):
        order = np.argsort(self.z)
        self.z = np.asarray(self.z, float)[order]
        self.cx = np.asarray(self.cx, float)[order]
        self.cy = np.asarray(self.cy, float)[order]
        self.ax = np.asarray(self.ax, float)[order]
        self.ay = np.asarray(self.ay, float)[order]
        if self.ang is not None:
            self.ang = np.asarray(self.ang, float)[order]

    def at(self, z: float):
        if z < self.z[0] or z > self.z[-1]:
            return None
        ax = float(np.interp(z, self.z, self.ax))
        ay = float(np.interp(z, self.z, self.ay))
        if ax <= 0.3 or ay <= 0.3:
            return None
        ang = float(np.interp(z, self.z, self.ang)) if self.ang is not None else 0.0
        return float(np.interp(z, self.z, self.cx)), float(np.interp(z, self.z, self.cy)), ax, ay, ang


def paint_ellipse(img: np.ndarray, X: np.ndarray, Y: np.ndarray, cx, cy, ax, ay, ang, hu, edge,
                  clip_alpha: Optional[np.ndarray] = None, grow: float = 0.0,
                  hu_fn: Optional[Callable] = None, warp: Optional[np.ndarray] = None, warp_mm: float = 0.0):
    """Paint an ellipse (grown by `grow` mm) into img (ny, nx) with soft edges.

    warp: a smooth unit random field (ny, nx); the boundary is displaced by warp_mm * warp,
    so organs get irregular, organic outlines. Returns the box and (alpha, distance)."""
    r = max(ax, ay) + grow + edge + 2.0 * warp_mm
    i0, i1 = axis_range(X, cx - r, cx + r)
    j0, j1 = axis_range(Y, cy - r, cy + r)
    if i1 <= i0 or j1 <= j0:
        return None, None
    u = (X[i0:i1] - cx).astype(F32)
    v = (Y[j0:j1] - cy).astype(F32)
    if abs(ang) < 1e-3:
        d = ellipse_sdf_sep(u, v, ax + grow, ay + grow)
    else:
        d = ellipse_sdf_rot(u[None, :], v[:, None], ax + grow, ay + grow, ang)
    if warp is not None and warp_mm > 0:
        d = d + F32(warp_mm) * warp[j0:j1, i0:i1]
    a = soft_alpha(d, edge)
    if clip_alpha is not None:
        a *= clip_alpha[j0:j1, i0:i1]
    sub = img[j0:j1, i0:i1]
    if hu_fn is not None:
        val = hu_fn(j0, j1, i0, i1, d)
    else:
        val = hu
    blend(sub, a, val)
    return (j0, j1, i0, i1), (a, d)


# ----------------------------------------------------------------------------- 3D SDFs
def local_coords(px, py, pz, center, R):
    """Local (u, v, w) of the broadcastable world offsets; R columns are e_u, e_v, e_w."""
    dx = px - F32(center[0])
    dy = py - F32(center[1])
    dz = pz - F32(center[2])
    u = dx * F32(R[0, 0]) + dy * F32(R[1, 0]) + dz * F32(R[2, 0])
    v = dx * F32(R[0, 1]) + dy * F32(R[1, 1]) + dz * F32(R[2, 1])
    w = dx * F32(R[0, 2]) + dy * F32(R[1, 2]) + dz * F32(R[2, 2])
    return u, v, w


def ecapsule_sdf(u, v, w, A, B, radii):
    """Segment A->B (local coords) swept by an axis-aligned ellipsoid with radii (ru, rv, rw).

    Radial approximation of the distance: exact for a sphere, good near the surface."""
    ru, rv, rw = (F32(r) for r in radii)
    a = np.asarray(A, F32) / np.array([ru, rv, rw], F32)
    b = np.asarray(B, F32) / np.array([ru, rv, rw], F32)
    ab = b - a
    L2 = float(ab @ ab) + 1e-9
    su, sv, sw = u / ru - a[0], v / rv - a[1], w / rw - a[2]
    t = (su * ab[0] + sv * ab[1] + sw * ab[2]) / F32(L2)
    np.clip(t, 0.0, 1.0, out=t)
    qu = su - t * ab[0]
    qv = sv - t * ab[1]
    qw = sw - t * ab[2]
    sd = np.sqrt(qu * qu + qv * qv + qw * qw) + F32(1e-6)
    real = np.sqrt((qu * ru) ** 2 + (qv * rv) ** 2 + (qw * rw) ** 2)
    return real * (1.0 - 1.0 / sd)


def rounded_box_sdf(u, v, w, center, half, r=1.0):
    """Axis-aligned box (local coords) with rounded edges of radius r."""
    qu = np.abs(u - F32(center[0])) - F32(half[0] - r)
    qv = np.abs(v - F32(center[1])) - F32(half[1] - r)
    qw = np.abs(w - F32(center[2])) - F32(half[2] - r)
    outside = np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2 + np.maximum(qw, 0) ** 2)
    inside = np.minimum(np.maximum(np.maximum(qu, qv), qw), 0)
    return outside + inside - F32(r)


def ellipsoid_sdf(u, v, w, radii):
    a, b, c = (F32(max(r, 1e-3)) for r in radii)
    F = (u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2
    G = 2.0 * np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2 + (w / (c * c)) ** 2) + F32(1e-6)
    return (F - 1.0) / G
