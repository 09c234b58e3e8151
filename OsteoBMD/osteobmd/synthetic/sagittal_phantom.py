"""A fast 2D mid-sagittal trunk phantom for training the vertebra finder.

Why 2D and on the fly: the finder sees one sagittal slice at a time, and what transfers
to real CT is variety (shapes, tissues, scanners, fields of view), not a few hundred
slow 3D cases. One image takes tens of milliseconds, so training never sees the same
image twice.

Geometry lives in millimetres: the spine is a curve p(s) = (z, y) parametrised by arc
length s (s = 0 at the top of S1, s grows superiorly); every spinal part is drawn in the
curve's own coordinates (s along the spine, v across it, v > 0 posterior), so bodies,
discs and the canal bend with the lordosis. Soft tissue is drawn per row z around the
spine. The image is rendered on a 1 mm grid, then "scanned": HU scale/offset error,
slice-thickness blur, resampling to the slice spacing, noise and streaks, and resampling
to the network's pixel spacing, as the pipeline does with a real CT.

Labels (the finder's contract): 0 background, 1 vertebral body (any level, each body
separated from its neighbours by background), 2 sacrum (fused S1 down). Discs,
posterior elements, coccyx, osteophytes, sternum, ribs and vessels are background.
Image rows grow superiorly and columns posteriorly, as `sagittal.sagittal_slice` gives
them for an LPS volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

BACKGROUND, BODY, SACRUM = 0, 1, 2
CLASSES = {"background": BACKGROUND, "vertebral_body": BODY, "sacrum": SACRUM}
FINE_MM = 1.0  # the rendering grid
COARSE = 4  # curvilinear coordinates are computed on a grid this much coarser, then interpolated
_DS = 1.0  # arc-length step of the spine curve (mm)


@dataclass
class PhantomImage:
    image01: np.ndarray  # float32 (rows z up, cols y posterior), windowed to [0, 1], network grid
    labels: np.ndarray  # uint8 0/1/2 on the same grid
    hu: np.ndarray  # float32 HU on the same grid (for previews and tests)
    instances: np.ndarray  # int32 on the same grid: 1.. one id per vertebral body, -1 sacrum, 0 background
    spacing_mm: float
    slice_mm: float  # the simulated scanner's slice spacing
    n_bodies: int  # bodies with a label in view


@dataclass
class _Body:
    s_lo: float
    s_hi: float
    depth: float
    sacrum: bool = False


# --------------------------------------------------------------------------- helpers
def _smooth_field(rng, shape, corr_px: float) -> np.ndarray:
    """Zero-mean unit-variance Gaussian random field with the given correlation length."""
    small = tuple(max(2, int(np.ceil(n / max(corr_px, 1.0))) + 2) for n in shape)
    f = rng.standard_normal(small).astype(np.float32)
    f = ndimage.zoom(f, [n / m for n, m in zip(shape, small)], order=1, mode="nearest")[: shape[0], : shape[1]]
    f -= f.mean()
    return f / (f.std() + 1e-6)


def _smooth_1d(rng, n: int, corr: float, amp: float) -> np.ndarray:
    return _smooth_field(rng, (n, 1), corr)[:, 0] * amp


def _superellipse(u, v, hu_, hv, p):
    """Inside test of |u/hu|^p + |v/hv|^p <= 1 (hu_, hv may be arrays)."""
    return (np.abs(u / hu_) ** p + np.abs(v / hv) ** p) <= 1.0


# --------------------------------------------------------------------------- the spine
def _spine_curve(rng) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arc length s, points (z, y) and tangent angle theta (0 = straight up, > 0 leaning posterior)."""
    s = np.arange(-180.0, 560.0, _DS)
    alpha = np.radians(rng.uniform(28, 52))  # sacral slope
    lumbar_len = rng.uniform(150, 200)
    top_lumbar = np.radians(rng.uniform(-5, 22))
    kyphosis = np.radians(rng.uniform(10, 45))  # per 250 mm of thoracic spine
    sac_len = 110.0
    sac_turn = np.radians(rng.uniform(35, 75))
    theta = np.empty_like(s)
    lo = s < 0
    theta[lo] = -alpha + sac_turn * np.clip(-s[lo] / sac_len, 0, 1.6) ** 1.4
    mid = (s >= 0) & (s < lumbar_len)
    x = s[mid] / lumbar_len
    theta[mid] = -alpha + (top_lumbar + alpha) * (1 - (1 - x) ** rng.uniform(1.5, 2.5))
    hi = s >= lumbar_len
    theta[hi] = top_lumbar - kyphosis * (s[hi] - lumbar_len) / 250.0
    theta += np.radians(rng.uniform(0, 3)) * np.sin(s / rng.uniform(60, 150) + rng.uniform(0, 6.3))
    theta = np.clip(theta, -np.radians(75), np.radians(80))
    z = np.cumsum(np.cos(theta)) * _DS
    y = np.cumsum(np.sin(theta)) * _DS
    i0 = int(np.argmin(np.abs(s)))
    return s, np.stack([z - z[i0], y - y[i0]], axis=1), theta


def _levels(rng) -> Tuple[List[_Body], List[Tuple[float, float, float]], float]:
    """Bodies bottom-up (the sacrum first), discs (s_lo, s_hi, degeneration 0..1), global scale."""
    g = rng.uniform(0.82, 1.15)
    n_lumbar = int(rng.choice([4, 5, 6], p=[0.04, 0.9, 0.06]))
    sac_len = rng.uniform(85, 120) * g
    bodies = [_Body(-sac_len, 0.0, rng.uniform(30, 42) * g, sacrum=True)]
    discs = []
    s = 0.0
    # lumbar (L5 first), then thoracic upwards
    for k in range(n_lumbar + 12):
        lumbar = k < n_lumbar
        t = k - n_lumbar  # 0 = T12
        if lumbar:
            disc_h = rng.uniform(8, 12) if k else rng.uniform(6, 11)
            height = (27.0 - 0.4 * k) * rng.uniform(0.94, 1.06)
            depth = rng.uniform(31, 37)
        else:
            disc_h = max(3.0, 7.0 - 0.5 * t) * rng.uniform(0.8, 1.25)
            height = max(13.0, 24.0 - 1.2 * t) * rng.uniform(0.94, 1.06)
            depth = max(20.0, 30.0 - 1.3 * t) * rng.uniform(0.92, 1.08)
        degen = 0.0
        if rng.random() < (0.35 if lumbar else 0.2):
            degen = rng.uniform(0.3, 1.0)
            disc_h *= 1.0 - 0.75 * degen
        disc_h = max(disc_h * g, 1.6)
        discs.append((s, s + disc_h, degen))
        s += disc_h
        bodies.append(_Body(s, s + height * g, depth * g))
        s += height * g
    return bodies, discs, g


class _Canvas:
    """The 1 mm rendering grid: HU, instance ids (1.. bodies, -1 sacrum) and curvilinear coords."""

    def __init__(self, z0, y0, nz, ny, curve_s, curve_p, curve_theta):
        self.z0, self.y0 = z0, y0
        self.hu = np.full((nz, ny), -1000.0, np.float32)
        self.inst = np.zeros((nz, ny), np.int16)
        self.Z = (z0 + np.arange(nz, dtype=np.float32) * FINE_MM)[:, None]
        self.Y = (y0 + np.arange(ny, dtype=np.float32) * FINE_MM)[None, :]
        # curvilinear coordinates (s, v) on a coarse grid, interpolated
        cz = z0 + np.arange(0, nz + COARSE, COARSE) * FINE_MM
        cy = y0 + np.arange(0, ny + COARSE, COARSE) * FINE_MM
        CZ, CY = np.meshgrid(cz, cy, indexing="ij")
        tree = cKDTree(curve_p)
        _, idx = tree.query(np.stack([CZ.ravel(), CY.ravel()], 1))
        dz = CZ.ravel() - curve_p[idx, 0]
        dy = CY.ravel() - curve_p[idx, 1]
        th = curve_theta[idx]
        s = curve_s[idx] + dz * np.cos(th) + dy * np.sin(th)
        v = -dz * np.sin(th) + dy * np.cos(th)
        zoom = (len(cz) * COARSE / len(cz), len(cy) * COARSE / len(cy))
        self.S = ndimage.zoom(s.reshape(CZ.shape).astype(np.float32), zoom, order=1)[:nz, :ny]
        self.V = ndimage.zoom(v.reshape(CZ.shape).astype(np.float32), zoom, order=1)[:nz, :ny]
        self.curve_s, self.curve_p = curve_s, curve_p

    def box(self, s_lo, s_hi, v_lo, v_hi):
        """Index slices of the part of the grid that can hold s in [s_lo, s_hi], v in [v_lo, v_hi]."""
        sel = (self.curve_s >= s_lo) & (self.curve_s <= s_hi)
        if not sel.any():
            return None
        pts = self.curve_p[sel]
        r = max(abs(v_lo), abs(v_hi)) + 4.0
        i0 = int(np.floor((pts[:, 0].min() - r - self.z0) / FINE_MM))
        i1 = int(np.ceil((pts[:, 0].max() + r - self.z0) / FINE_MM)) + 1
        j0 = int(np.floor((pts[:, 1].min() - r - self.y0) / FINE_MM))
        j1 = int(np.ceil((pts[:, 1].max() + r - self.y0) / FINE_MM)) + 1
        nz, ny = self.hu.shape
        i0, i1, j0, j1 = max(i0, 0), min(i1, nz), max(j0, 0), min(j1, ny)
        if i0 >= i1 or j0 >= j1:
            return None
        return (slice(i0, i1), slice(j0, j1))


def _paint(cv: _Canvas, box, mask, value) -> None:
    sub = cv.hu[box]
    if np.ndim(value):
        sub[mask] = value[mask]
    else:
        sub[mask] = value


def _bone(rng, cv: _Canvas, box, outer, inner, trab_hu, cortex_hu, tex) -> None:
    """Cortical shell (outer minus inner) around trabecular bone with texture."""
    _paint(cv, box, outer & ~inner, cortex_hu)
    _paint(cv, box, inner, trab_hu + tex[box])


# --------------------------------------------------------------------------- rendering
def _render(rng, cv: _Canvas, bodies: List[_Body], discs, g: float, p: dict) -> None:
    S, V = cv.S, cv.V
    tex = _smooth_field(rng, cv.hu.shape, rng.uniform(1.5, 4.0)) * p["tex_amp"]
    trab0, cortex0 = p["trab_hu"], p["cortex_hu"]
    canal_w = rng.uniform(12, 20) * g
    off_mid = p["off_midline"]

    # depth of the spine along s (for the canal and the posterior elements)
    s_knots = np.array([0.5 * (b.s_lo + b.s_hi) for b in bodies])
    d_knots = np.array([b.depth for b in bodies])

    def depth_at(s):
        return np.interp(s, s_knots, d_knots)

    # canal and posterior elements first (bodies and discs paint over their front)
    s_top = bodies[-1].s_hi + 30
    s_bot = bodies[0].s_lo
    box = cv.box(s_bot, s_top, -80, 140)
    if box is not None:
        Sb, Vb = S[box], V[box]
        dref = depth_at(Sb) / 2
        sac = Sb < 0
        cw = np.where(sac, canal_w * np.clip(0.6 + Sb / 250.0, 0.25, 0.6), canal_w)
        canal = (Vb > dref) & (Vb < dref + cw) & (Sb > s_bot + 15)
        _paint(cv, box, canal, p["csf_hu"])
        if rng.random() < 0.6:  # epidural fat along the posterior canal wall
            _paint(cv, box, canal & (Vb > dref + cw - rng.uniform(1, 5)), p["fat_hu"])
        # paraspinal muscles behind the canal
        musc = (Vb > dref + cw) & (Vb < dref + cw + p["back_muscle"]) & (cv.hu[box] > -300)
        _paint(cv, box, musc, p["muscle_hu"] + 0.3 * tex[box])
        # posterior wall of the sacral canal (median crest)
        crest = sac & (Vb >= dref + cw) & (Vb < dref + cw + rng.uniform(4, 10)) & (Sb > s_bot + 10)
        _paint(cv, box, crest, cortex0 * 0.8)
    for k, b in enumerate(bodies[1:], start=1):
        h = b.s_hi - b.s_lo
        thoracic = b.s_lo > 190 * g
        incl = np.radians(rng.uniform(35, 60) if thoracic else rng.uniform(-5, 20))
        length = rng.uniform(18, 38) * g
        sp_h = (rng.uniform(6, 10) if thoracic else rng.uniform(12, 20)) * g
        v0 = b.depth / 2 + canal_w
        box = cv.box(b.s_lo - 60, b.s_hi + 10, 0, v0 + length + 5)
        if box is None:
            continue
        Sb, Vb = S[box], V[box]
        w = Vb - v0
        top = b.s_hi - 0.15 * h - np.maximum(w, 0) * np.tan(incl)
        lam_h = np.where(w < 8, 0.7 * h, sp_h)
        trunk = cv.hu[box] > -300
        inside = (w > -2) & (w < length) & (Sb < top) & (Sb > top - lam_h) & trunk
        inner = (w > 0) & (w < length - 2) & (Sb < top - 2) & (Sb > top - lam_h + 2) & trunk
        if off_mid > 0.5:  # pedicles and facets appear off the midline
            ped = (Vb > b.depth / 2 - 2) & (Vb < v0 + 2) & (Sb > b.s_lo + 0.35 * h) & (Sb < b.s_hi - 0.1 * h)
            inside |= ped
            inner |= ped & (Sb > b.s_lo + 0.35 * h + 2) & (Sb < b.s_hi - 0.1 * h - 2)
        _bone(rng, cv, box, inside, inner, trab0 * rng.uniform(0.6, 0.9), cortex0 * rng.uniform(0.6, 1.0), tex)

    # discs
    for (d_lo, d_hi, degen), lower, upper in zip(discs, bodies[:-1], bodies[1:]):
        depth = 0.5 * (lower.depth + upper.depth)
        bulge = rng.uniform(0, 3)
        box = cv.box(d_lo - 6, d_hi + 6, -depth / 2 - bulge - 2, depth / 2 + 2)
        if box is None:
            continue
        Sb, Vb = S[box], V[box]
        disc = (Sb > d_lo - 3) & (Sb < d_hi + 3) & (Vb > -depth / 2 - bulge) & (Vb < depth / 2 + 0.5)
        _paint(cv, box, disc, p["disc_hu"] + rng.uniform(-15, 15) + 4 * tex[box])
        if degen > 0.5 and rng.random() < 0.5:  # vacuum phenomenon
            mid = 0.5 * (d_lo + d_hi)
            gas = ((Sb - mid) / max(0.4 * (d_hi - d_lo), 0.6)) ** 2 + ((Vb - rng.uniform(-8, 8)) / rng.uniform(4, 12)) ** 2 < 1
            _paint(cv, box, gas, rng.uniform(-950, -400))
        if rng.random() < p["osteophyte_rate"]:  # anterior osteophytes, sometimes a bridge
            bridge = rng.random() < 0.35
            half = (d_hi - d_lo) / 2 + (rng.uniform(3, 7) if bridge else -rng.uniform(0.3, 0.9) * (d_hi - d_lo) / 2)
            for centre in ((0.5 * (d_lo + d_hi),) if bridge else (d_lo + 1, d_hi - 1)):
                ost = ((Sb - centre) / max(half if bridge else rng.uniform(2, 5), 1)) ** 2 + (
                    (Vb + depth / 2 + 1) / rng.uniform(2, 5)) ** 2 < 1
                _paint(cv, box, ost, cortex0 * rng.uniform(0.6, 1.0))

    # bodies and the sacrum
    for k, b in enumerate(bodies):
        _render_body(rng, cv, k, b, discs, bodies, p, tex, g)

    # coccyx: small separate segments below the sacrum (background)
    s = bodies[0].s_lo - rng.uniform(1, 3)
    for c in range(int(rng.integers(2, 5))):
        h = rng.uniform(6, 10) * g
        dep = max(8.0, bodies[0].depth * (0.38 - 0.06 * c))
        box = cv.box(s - h - 2, s + 2, -dep, dep)
        if box is not None:
            Sb, Vb = S[box], V[box]
            seg = _superellipse(Sb - (s - h / 2), Vb, h / 2, dep / 2, 3)
            _bone(rng, cv, box, seg, ndimage.binary_erosion(seg), trab0 * 0.8, cortex0 * 0.8, tex)
        s -= h + rng.uniform(1, 3)


def _render_body(rng, cv: _Canvas, k: int, b: _Body, discs, bodies, p, tex, g) -> None:
    S, V = cv.S, cv.V
    h = b.s_hi - b.s_lo
    c = 0.5 * (b.s_lo + b.s_hi)
    D = b.depth
    box = cv.box(b.s_lo - 5, b.s_hi + 5, -D / 2 - 3, D / 2 + 3)
    if box is None:
        return
    u = S[box] - c
    v = V[box]
    r = np.clip(v / (D / 2), -1.5, 1.5)
    trab = p["trab_hu"] + (p["level_spread"] * rng.standard_normal())
    cortex = p["cortex_hu"] * rng.uniform(0.85, 1.1)
    if b.sacrum and p["sacrum"] == "segments":
        _render_segmented_sacrum(rng, cv, box, u, v, h, D, trab, cortex, p, tex)
        return
    if b.sacrum:  # "smooth": one tapering bone (the first finder run's phantoms)
        # tapering fused segments; S1 at the top (u = h/2)
        x = (h / 2 - u) / h  # 0 at the top, 1 at the tip
        half_d = D / 2 * (1 - 0.62 * np.clip(x, 0, 1) ** 1.2)
        ant = -half_d + 2.0 * np.sin(np.pi * np.clip(x, 0, 1))  # concave anterior surface
        top = h / 2 - rng.uniform(0.5, 2.0) * (1 - r ** 2)
        outer = (u <= top) & (u >= -h / 2) & (v >= ant) & (v <= half_d)
        inner = (u <= top - 1.5) & (u >= -h / 2 + 1.5) & (v >= ant + 1.5) & (v <= half_d - 1.5)
        _bone(rng, cv, box, outer, inner, trab * rng.uniform(0.7, 1.05), cortex, tex)
        # remnants of the fused discs: thin lines, lighter or denser
        pos, step = h / 2, 0.0
        for seg in range(4):
            step = h * (0.3 - 0.04 * seg)
            pos -= step
            line = inner & (np.abs(u - pos) < rng.uniform(0.5, 1.5)) & (np.abs(r) < rng.uniform(0.5, 0.95))
            if rng.random() < 0.7:
                _paint(cv, box, line, trab + rng.uniform(-150, 250))
        cv.inst[box][outer] = -1
        return
    wedge = 0.0
    ec = rng.uniform(0.3, 1.8)
    if k == 1:  # L5: taller anteriorly
        wedge = rng.uniform(0.05, 0.2)
    fracture = rng.random() < p["fracture_rate"]
    if fracture:
        kind = rng.random()
        h *= rng.uniform(0.5, 0.85)
        if kind < 0.5:
            wedge = -rng.uniform(0.2, 0.6)
        else:
            ec = rng.uniform(2, max(2.5, 0.3 * h))
    hv = h / 2 * (1 - wedge * r / 2) - ec * (1 - np.clip(r, -1, 1) ** 2)
    waist = rng.uniform(0.5, 3.0)
    xu = np.clip(u / (h / 2), -1, 1)
    ant = -D / 2 + waist * (1 - xu ** 2)
    post = D / 2 - rng.uniform(0, 1.5) * (1 - xu ** 2)
    pwr = rng.uniform(5, 12)
    vn = (v - 0.5 * (ant + post)) / (0.5 * (post - ant))
    outer = (np.abs(u / np.maximum(hv, 1)) ** pwr + np.abs(vn) ** pwr) <= 1.0
    t_c = p["cortex_mm"]
    inner = (np.abs(u / np.maximum(hv - t_c, 0.5)) ** pwr + np.abs(vn * (D / 2) / max(D / 2 - t_c, 1)) ** pwr) <= 1.0
    _bone(rng, cv, box, outer, inner, trab, cortex, tex)
    label = outer.copy()
    # sclerosis beside degenerated discs, Schmorl nodes
    below, above = discs[k - 1], (discs[k] if k < len(discs) else None)
    for disc, sign in ((below, -1), (above, 1)):
        if disc is None:
            continue
        edge = sign * hv
        if disc[2] > 0.4 and rng.random() < 0.6:
            band = inner & (np.abs(u - edge) < rng.uniform(3, 7))
            _paint(cv, box, band, trab + rng.uniform(80, 300))
        if rng.random() < p["schmorl_rate"]:
            rad = rng.uniform(2, 4.5)
            node = ((u - edge) ** 2 + ((v - rng.uniform(-0.5, 0.5) * D / 2) * 1.2) ** 2) < rad ** 2
            node &= outer
            rim = ndimage.binary_dilation(node, iterations=1) & outer & ~node
            _paint(cv, box, rim, cortex * 0.8)
            _paint(cv, box, node, p["disc_hu"])
            label &= ~node
    if fracture and rng.random() < 0.6:
        _paint(cv, box, inner & (np.abs(u) < rng.uniform(2, 5)), trab + rng.uniform(100, 250))
    if rng.random() < 0.4:  # basivertebral vein notch
        notch = (np.abs(u) < rng.uniform(1.5, 3)) & (v > D / 2 - rng.uniform(4, 8)) & outer
        _paint(cv, box, notch, p["disc_hu"])
    sub = cv.inst[box]
    sub[label] = k


def _render_segmented_sacrum(rng, cv: _Canvas, box, u, v, h, D, trab, cortex, p, tex) -> None:
    """S1..S5 as fused bodies: S1 looks like a lumbar body (that is what the finder must not
    call a body), the segments taper, and between them lie remnants of the discs: a thin
    sclerotic line, or a short disc-like gap in the middle of the depth. All of it is sacrum."""
    fractions = np.array([0.29, 0.24, 0.2, 0.15, 0.12]) * rng.uniform(0.9, 1.1, 5)
    fractions /= fractions.sum()
    label = np.zeros(u.shape, bool)
    top = h / 2
    prev_bottom = None
    for i, frac in enumerate(fractions):
        gap = 0.0 if i == 0 else rng.uniform(0.0, 3.0)
        hs = frac * h - gap
        centre = top - gap - hs / 2
        half_d = D / 2 * (1.0 - 0.12 * i) * rng.uniform(0.92, 1.05)
        shift = -rng.uniform(0, 2.5) * i  # the anterior surface is concave
        uu, vv = u - centre, v - shift
        waist = rng.uniform(0.3, 2.0)
        ant = -half_d + waist * (1 - np.clip(uu / (hs / 2), -1, 1) ** 2)
        vn = (vv - 0.5 * (ant + half_d)) / (0.5 * (half_d - ant))
        pwr = rng.uniform(5, 10)
        top_plate = hs / 2 - (rng.uniform(0.5, 2.0) * (1 - np.clip(vv / half_d, -1, 1) ** 2) if i == 0 else 0)
        outer = (np.abs(uu / np.maximum(np.where(uu > 0, top_plate, hs / 2), 0.5)) ** pwr + np.abs(vn) ** pwr) <= 1
        t_c = p["cortex_mm"] * (1.3 if i == 0 else 1.0)
        inner = (np.abs(uu / max(hs / 2 - t_c, 0.5)) ** pwr + np.abs(vn * half_d / max(half_d - t_c, 1)) ** pwr) <= 1
        _bone(rng, cv, box, outer, inner, trab * rng.uniform(0.75, 1.05), cortex * (1.0 if i == 0 else 0.85), tex)
        label |= outer
        if prev_bottom is not None:
            band = (u <= prev_bottom + 0.5) & (u >= top - gap - 0.5) & (np.abs(vv) < half_d * 0.95)
            if gap > 1.0 and rng.random() < 0.6:  # a rudimentary disc in the middle of the depth
                _paint(cv, box, band & (np.abs(vv) < half_d * rng.uniform(0.3, 0.8)), p["disc_hu"])
                _paint(cv, box, band & (np.abs(vv) >= half_d * 0.8), cortex * 0.8)
            else:  # fused: a sclerotic line
                _paint(cv, box, band, trab + rng.uniform(100, 350))
            label |= band
        prev_bottom = top - gap - hs
        top = prev_bottom
    cv.inst[box][label] = -1


def _render_soft(rng, cv: _Canvas, bodies: List[_Body], curve_p, g: float, p: dict) -> Tuple[np.ndarray, np.ndarray]:
    """Trunk, organs, vessels; returns the anterior and posterior skin y per row."""
    nz, ny = cv.hu.shape
    z = cv.Z[:, 0]
    order = np.argsort(curve_p[:, 0])
    y_sp = np.interp(z, curve_p[order, 0], curve_p[order, 1])
    z_s1 = 0.0
    post_thick = p["post_thick"] + _smooth_1d(rng, nz, 80, 8) + 35 * np.clip((z_s1 - 40 - z) / 80, 0, 1)
    ant_depth = p["ant_depth"] + _smooth_1d(rng, nz, 90, 15)
    y_front = y_sp - ant_depth
    y_back = y_sp + post_thick
    Y = cv.Y
    trunk = (Y > y_front[:, None]) & (Y < y_back[:, None])
    tex = _smooth_field(rng, cv.hu.shape, rng.uniform(6, 20))
    cv.hu[trunk] = (p["soft_hu"] + 10 * tex)[trunk]
    # visceral fat mottling
    fat_field = _smooth_field(rng, cv.hu.shape, rng.uniform(8, 25))
    visceral = trunk & (Y < (y_sp - 20)[:, None]) & (fat_field > p["fat_threshold"])
    cv.hu[visceral] = p["fat_hu"] + 8 * tex[visceral]
    # subcutaneous fat, muscle wall, skin
    for y_edge, sign, fat_mm in ((y_front, 1, p["subq_front"]), (y_back, -1, p["subq_back"])):
        dist = (Y - y_edge[:, None]) * sign
        cv.hu[trunk & (dist < fat_mm + 10) & (dist >= fat_mm)] = p["muscle_hu"]
        cv.hu[trunk & (dist < fat_mm)] = p["fat_hu"]
        cv.hu[trunk & (dist < 2)] = p["muscle_hu"] + 10
    z_dia = p["z_diaphragm"]
    # thorax: lungs, heart, sternum
    thorax = trunk & (cv.Z > z_dia + 20 * (Y - y_sp[:, None]) / -150.0) & (Y < (y_sp - 15)[:, None])
    lung = thorax & (fat_field < p["lung_fraction"])
    cv.hu[lung] = rng.uniform(-920, -750) + 30 * tex[lung]
    hz = z_dia + rng.uniform(30, 70)
    hy = (y_front[np.clip(int((hz - cv.z0) / FINE_MM), 0, nz - 1)] + y_sp[np.clip(int((hz - cv.z0) / FINE_MM), 0, nz - 1)]) / 2
    heart = ((cv.Z - hz) / rng.uniform(45, 70)) ** 2 + ((Y - hy) / rng.uniform(35, 55)) ** 2 < 1
    heart &= thorax
    cv.hu[heart] = p["blood_hu"] + 5 * tex[heart]
    if p["contrast"]:
        wall = heart & ~ndimage.binary_erosion(heart, iterations=int(rng.integers(3, 10)))
        cv.hu[wall] = rng.uniform(50, 110)
    # sternum: bone segments in the anterior chest wall
    z_st0 = z_dia + rng.uniform(-20, 30)
    seg_z = z_st0
    st_off = p["subq_front"] + 10 + rng.uniform(0, 6)
    for seg in range(int(rng.integers(2, 6))):
        length = rng.uniform(25, 60)
        zc = seg_z + length / 2
        row = np.clip(int((zc - cv.z0) / FINE_MM), 0, nz - 1)
        yc = y_front[row] + st_off
        st = ((cv.Z - zc) / (length / 2)) ** 2 + ((Y - yc) / rng.uniform(5, 8)) ** 2 < 1
        if st.any():
            inner = ndimage.binary_erosion(st, iterations=2)
            cv.hu[st] = p["cortex_hu"] * 0.8
            cv.hu[inner] = p["trab_hu"] * rng.uniform(0.6, 1.0) + 20 * tex[inner]
        seg_z += length + rng.uniform(2, 6)
    # abdomen: liver below the diaphragm, bowel loops, bladder
    abdomen = trunk & ~thorax & (Y < (y_sp - 18)[:, None])
    liver = abdomen & (cv.Z > z_dia - rng.uniform(60, 150)) & (fat_field > -1.2)
    liver &= Y < (y_sp - rng.uniform(15, 40))[:, None]
    if rng.random() < 0.7:
        cv.hu[liver] = p["liver_hu"] + 6 * tex[liver]
    n_loops = int(rng.integers(4, 16))
    for _ in range(n_loops):
        zc = rng.uniform(p["z_bottom"], z_dia - 20)
        row = np.clip(int((zc - cv.z0) / FINE_MM), 0, nz - 1)
        yc = rng.uniform(y_front[row] + 10, y_sp[row] - 25)
        a, b = rng.uniform(8, 25), rng.uniform(8, 25)
        loop = (((cv.Z - zc) / a) ** 2 + ((Y - yc) / b) ** 2 < 1) & abdomen
        if not loop.any():
            continue
        content = rng.choice(["gas", "fluid", "contrast", "feces"], p=[0.35, 0.25, 0.15, 0.25])
        value = {"gas": -1000.0, "fluid": rng.uniform(0, 25), "contrast": rng.uniform(150, 600),
                 "feces": rng.uniform(-250, 30)}[content]
        wall = loop & ~ndimage.binary_erosion(loop, iterations=2)
        cv.hu[loop] = value + (60 * tex[loop] if content == "feces" else 0)
        cv.hu[wall] = rng.uniform(30, 90)
    if rng.random() < 0.7:  # bladder in front of the lower sacrum
        zc = p["z_bottom"] + rng.uniform(-30, 30)
        row = np.clip(int((zc - cv.z0) / FINE_MM), 0, nz - 1)
        yc = y_sp[row] - rng.uniform(70, 120)
        bl = (((cv.Z - zc) / rng.uniform(25, 50)) ** 2 + ((Y - yc) / rng.uniform(25, 45)) ** 2 < 1) & trunk
        cv.hu[bl] = rng.uniform(0, 20) if rng.random() < 0.85 else rng.uniform(300, 900)
    if rng.random() < 0.5:  # pubic symphysis
        zc = p["z_bottom"] + rng.uniform(-60, -10)
        row = np.clip(int((zc - cv.z0) / FINE_MM), 0, nz - 1)
        yc = y_front[row] + p["subq_front"] + rng.uniform(10, 20)
        pb = (((cv.Z - zc) / rng.uniform(15, 25)) ** 2 + ((Y - yc) / rng.uniform(6, 10)) ** 2 < 1) & trunk
        cv.hu[pb] = p["cortex_hu"] * 0.7
        inner = ndimage.binary_erosion(pb, iterations=2)
        cv.hu[inner] = p["trab_hu"] * 0.8
    return y_front, y_back


def _render_vessels(rng, cv: _Canvas, bodies: List[_Body], g: float, p: dict) -> None:
    """Aorta (with contrast or not, calcified plaques) in front of the spine, above L4."""
    if rng.random() > 0.8:
        return
    s_lo = 0.5 * (bodies[2].s_lo + bodies[2].s_hi) if len(bodies) > 2 else 50.0
    s_hi = bodies[-1].s_hi
    gap = rng.uniform(0, 8)
    R = rng.uniform(7, 14)
    depth = np.interp(cv.S, [0.5 * (b.s_lo + b.s_hi) for b in bodies], [b.depth for b in bodies]) / 2
    box = cv.box(s_lo, s_hi, -80, 0)
    if box is None:
        return
    Sb, Vb, db = cv.S[box], cv.V[box], depth[box]
    lumen = (Sb > s_lo) & (Vb < -db - gap) & (Vb > -db - gap - 2 * R)
    _paint(cv, box, lumen, p["blood_hu"])
    if rng.random() < p["plaque_rate"]:
        sub = cv.hu[box]
        for _ in range(int(rng.integers(1, 8))):
            sc = rng.uniform(s_lo, min(s_hi, s_lo + 200))
            side = rng.choice([-db - gap, -db - gap - 2 * R])
            pl = (np.abs(Sb - sc) < rng.uniform(1, 5)) & (np.abs(Vb - side) < rng.uniform(0.7, 1.8))
            sub[pl] = rng.uniform(300, 1100)


def _sample_params(rng) -> dict:
    contrast = rng.random() < 0.5
    osteo = rng.random()
    trab = float(np.interp(osteo, [0, 0.3, 1], [40, 120, 360]))
    return {
        "contrast": contrast,
        "trab_hu": trab,
        "level_spread": rng.uniform(0, 25),
        "cortex_hu": rng.uniform(350, 1100) * (0.7 if trab < 100 else 1.0),
        "cortex_mm": rng.uniform(0.8, 2.2),
        "tex_amp": rng.uniform(5, 45),
        "disc_hu": rng.uniform(55, 115),
        "csf_hu": rng.uniform(-5, 35),
        "fat_hu": rng.uniform(-130, -60),
        "muscle_hu": rng.uniform(30, 65),
        "soft_hu": rng.uniform(25, 60),
        "liver_hu": rng.uniform(85, 150) if contrast else rng.uniform(45, 70),
        "blood_hu": rng.uniform(140, 420) if contrast else rng.uniform(30, 55),
        "fat_threshold": rng.uniform(-0.5, 1.5),
        "lung_fraction": rng.uniform(0.3, 2.5),
        "back_muscle": rng.uniform(25, 70),
        "post_thick": rng.uniform(55, 110),
        "ant_depth": rng.uniform(90, 230),
        "subq_front": rng.uniform(4, 50),
        "subq_back": rng.uniform(4, 40),
        "fracture_rate": 0.15 if trab < 110 else 0.03,
        "schmorl_rate": rng.uniform(0, 0.25),
        "osteophyte_rate": rng.uniform(0, 0.5),
        "plaque_rate": rng.uniform(0, 0.9),
        "off_midline": rng.random() * (rng.random() < 0.5),
    }


# --------------------------------------------------------------------------- field of view and scanner
def _field_of_view(rng, bodies, curve_s, curve_p, y_extent) -> Tuple[float, float, float, float]:
    """(z_lo, z_hi, y_lo, y_hi) in mm of the simulated scan."""
    zc = [np.interp(0.5 * (b.s_lo + b.s_hi), curve_s, curve_p[:, 0]) for b in bodies]
    z_tip = np.interp(bodies[0].s_lo - 30, curve_s, curve_p[:, 0])
    mode = rng.random()
    if mode < 0.55:  # trunk: from below the sacrum (or cut) up to the lower thorax
        z_lo = rng.uniform(z_tip - 80, zc[2]) if rng.random() < 0.3 else rng.uniform(z_tip - 80, zc[0])
        z_hi = rng.uniform(zc[6], zc[min(len(zc) - 1, 12)])
    elif mode < 0.8:  # top cut / bottom cut / both
        a = int(rng.integers(0, len(zc) - 4))
        z_lo = zc[a] + rng.uniform(-40, 10)
        z_hi = zc[min(len(zc) - 1, a + int(rng.integers(3, 9)))] + rng.uniform(-10, 40)
    else:  # a few bodies only
        a = int(rng.integers(0, len(zc) - 4))
        z_lo = zc[a] + rng.uniform(-25, 5)
        z_hi = zc[a + int(rng.integers(2, 5))] + rng.uniform(0, 25)
    y_front, y_back = y_extent
    if rng.random() < 0.25:  # tight spine crop, no air
        y_lo = rng.uniform(-140, -50)
        y_hi = rng.uniform(50, 130)
    else:
        y_lo = y_front - (rng.uniform(-30, 0) if rng.random() < 0.2 else rng.uniform(0, 120))
        y_hi = y_back + rng.uniform(5, 80)
    return z_lo, max(z_hi, z_lo + 40), y_lo, max(y_hi, y_lo + 60)


def _scan(rng, hu_fine: np.ndarray, spacing_mm: float) -> Tuple[np.ndarray, float, tuple]:
    """HU error, slice blur and spacing, noise and streaks, resampling to the network grid."""
    a, b = rng.uniform(0.9, 1.1), rng.uniform(-35, 35)
    hu = hu_fine * a + b
    mode = rng.random()
    slice_mm = rng.uniform(0.5, 1.5) if mode < 0.35 else rng.uniform(1.5, 3.2) if mode < 0.75 else rng.uniform(3.2, 5.0)
    thickness = slice_mm * rng.uniform(1.0, 1.5)
    sig_z = thickness / 2.355 / FINE_MM
    sig_y = rng.uniform(0.3, 1.3) / FINE_MM
    hu = ndimage.gaussian_filter(hu, (sig_z, sig_y), mode="nearest")
    nz, ny = hu.shape
    step = slice_mm / FINE_MM
    phase = rng.uniform(0, min(step, nz - 1))
    rows = np.arange(phase, nz - 1, step)
    i0 = np.floor(rows).astype(int)
    f = (rows - i0)[:, None]
    scan = hu[i0] * (1 - f) + hu[np.minimum(i0 + 1, nz - 1)] * f
    sigma = float(np.exp(rng.uniform(np.log(3), np.log(70))))
    noise = rng.standard_normal(scan.shape).astype(np.float32)
    corr = rng.uniform(0, 1.5)
    if corr > 0.2:
        noise = ndimage.gaussian_filter1d(noise, corr, axis=1)
        noise /= noise.std() + 1e-6
    scan = scan + sigma * noise
    if rng.random() < 0.3:  # low-dose streaks: axial-slice artefacts appear as row patterns
        k = int(rng.integers(1, max(2, len(rows) // 4)))
        pick = rng.integers(0, len(rows), k)
        pattern = ndimage.gaussian_filter1d(rng.standard_normal((k, ny)), rng.uniform(2, 15), axis=1)
        pattern /= np.abs(pattern).max(axis=1, keepdims=True) + 1e-6
        scan[pick] += rng.uniform(20, 150) * pattern
    # to the network grid, linearly as the pipeline does
    out_nz = max(1, int(np.floor((nz - 1 - phase) * FINE_MM / spacing_mm)) + 1)
    out_ny = max(1, int(np.floor((ny - 1) * FINE_MM / spacing_mm)) + 1)
    zr = (np.arange(out_nz) * spacing_mm / FINE_MM) / step  # rows of `scan`, first at phase
    yr = np.arange(out_ny) * spacing_mm / FINE_MM
    ZR, YR = np.meshgrid(zr, yr, indexing="ij")
    out = ndimage.map_coordinates(scan.astype(np.float32), [ZR, YR], order=1, mode="nearest", prefilter=False)
    return out.astype(np.float32), slice_mm, (phase, out_nz, out_ny)


def _labels_on_grid(inst: np.ndarray, spacing_mm: float, phase: float, out_nz: int, out_ny: int):
    """Nearest-neighbour labels on the network grid; touching bodies are split by background."""
    zi = np.clip(np.round(phase + np.arange(out_nz) * spacing_mm / FINE_MM).astype(int), 0, inst.shape[0] - 1)
    yi = np.clip(np.round(np.arange(out_ny) * spacing_mm / FINE_MM).astype(int), 0, inst.shape[1] - 1)
    ids = inst[np.ix_(zi, yi)].astype(np.int32)
    # a body pixel whose neighbour below is another body becomes background
    below = np.zeros_like(ids)
    below[1:] = ids[:-1]
    touching = (ids > 0) & (below != 0) & (below != ids)
    ids[touching] = 0
    labels = np.where(ids > 0, BODY, np.where(ids < 0, SACRUM, BACKGROUND)).astype(np.uint8)
    return labels, ids


def window01(hu: np.ndarray, level: float = 350.0, width: float = 1000.0) -> np.ndarray:
    return np.clip((hu - (level - width / 2.0)) / width, 0.0, 1.0).astype(np.float32)


SACRUM_STYLES = ("segments", "smooth")


def make_sagittal_phantom(
    seed, spacing_mm: float = 2.0, window: Tuple[float, float] = (350.0, 1000.0), sacrum: str = "segments",
) -> PhantomImage:
    """One random mid-sagittal trunk image with its finder labels. `seed`: int or Generator.

    sacrum: "segments" (S1..S5 as fused bodies, S1 body-like) or "smooth" (one tapering
    bone, what the first finder run started on; kept so that run can be reproduced).
    """
    if sacrum not in SACRUM_STYLES:
        raise ValueError(f"sacrum must be one of {SACRUM_STYLES}, got {sacrum!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    curve_s, curve_p, theta = _spine_curve(rng)
    bodies, discs, g = _levels(rng)
    p = _sample_params(rng)
    p["sacrum"] = sacrum
    # rough trunk extent for the field of view (refined when the soft tissue is drawn)
    y_extent = (-p["ant_depth"] - 20, p["post_thick"] + 20)
    z_lo, z_hi, y_lo, y_hi = _field_of_view(rng, bodies, curve_s, curve_p, y_extent)
    nz = int(np.ceil((z_hi - z_lo) / FINE_MM)) + 1
    ny = int(np.ceil((y_hi - y_lo) / FINE_MM)) + 1
    cv = _Canvas(z_lo, y_lo, nz, ny, curve_s, curve_p, theta)
    s_t12 = bodies[-12].s_lo if len(bodies) > 12 else bodies[-1].s_lo
    p["z_diaphragm"] = float(np.interp(s_t12 + rng.uniform(-40, 40), curve_s, curve_p[:, 0]))
    p["z_bottom"] = float(np.interp(bodies[0].s_lo, curve_s, curve_p[:, 0]))
    _render_soft(rng, cv, bodies, curve_p, g, p)
    _render_vessels(rng, cv, bodies, g, p)
    _render(rng, cv, bodies, discs, g, p)
    if rng.random() < 0.6:  # the table under the back
        j = int((y_extent[1] + rng.uniform(0, 10) - y_lo) / FINE_MM)
        if 0 <= j < ny:
            th = int(rng.integers(4, 40))
            cv.hu[:, j:j + th] = rng.uniform(-700, -200)
            cv.hu[:, j:j + 2] = rng.uniform(-100, 300)
    hu, slice_mm, (phase, out_nz, out_ny) = _scan(rng, cv.hu, spacing_mm)
    labels, ids = _labels_on_grid(cv.inst, spacing_mm, phase, out_nz, out_ny)
    n_bodies = int(len(np.unique(ids[ids > 0])))
    return PhantomImage(window01(hu, *window), labels, hu, ids, spacing_mm, slice_mm, n_bodies)
