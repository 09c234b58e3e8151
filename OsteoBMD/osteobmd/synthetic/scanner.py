"""The scanner: grid and field of view, global HU error, correlated noise, metal streaks.

HU model: HU_measured = a * HU_true + b for every tissue (vendor A: a=1, b=0; B reads low,
C reads high; small per-case jitter). An internal calibration from air and fat/muscle
undoes it, because air, fat, muscle and blood are all in the image.

Noise: periodic 2D fields with a CT-like noise power spectrum NPS(f) ~ f exp(-f^2/f0^2)
(filtered back-projection: no DC, a mid-frequency peak that moves up with sharper
kernels). Each slice takes a randomly shifted / flipped view of one of a few bank fields
(no copy), optionally correlated with the previous slice for thin overlapping slices, and
scaled by a smooth map (noisier in the middle of the body than at its edge).
"""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32


def nps_bank(rng, n, ny, nx, spacing, f_peak) -> np.ndarray:
    """n periodic unit-variance noise fields, doubled in both axes for shift-by-view."""
    f0 = math.sqrt(2.0) * f_peak
    fy = np.fft.fftfreq(ny, d=spacing)[:, None]
    fx = np.fft.rfftfreq(nx, d=spacing)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    amp = np.sqrt(f * np.exp(-(f / f0) ** 2)).astype(F32)
    out = np.empty((n, 2 * ny, 2 * nx), F32)
    for k in range(n):
        w = rng.standard_normal((ny, nx), dtype=F32)
        g = np.fft.irfft2(np.fft.rfft2(w) * amp, s=(ny, nx)).astype(F32)
        g /= g.std() + 1e-8
        out[k] = np.tile(g, (2, 2))
    return out


def add_noise(V: np.ndarray, rng, sigma: float, spacing: float, f_peak: float, slice_mm: float,
              modulation: np.ndarray | None = None, nbank: int = 6) -> None:
    if sigma <= 0:
        return
    nz, ny, nx = V.shape
    bank = nps_bank(rng, nbank, ny, nx, spacing, f_peak)
    rho = 0.3 if slice_mm <= 1.0 else 0.0
    q = math.sqrt(1.0 - rho * rho)
    idx = rng.integers(0, nbank, nz)
    oy = rng.integers(0, ny, nz)
    ox = rng.integers(0, nx, nz)
    fl = rng.integers(0, 4, nz)
    prev = None
    scale = F32(sigma)
    for k in range(nz):
        view = bank[idx[k], oy[k]:oy[k] + ny, ox[k]:ox[k] + nx]
        if fl[k] & 1:
            view = view[::-1]
        if fl[k] & 2:
            view = view[:, ::-1]
        if rho > 0:
            cur = view * F32(q)
            if prev is not None:
                cur += prev * F32(rho)
            prev = cur
        else:
            cur = view
        if modulation is not None:
            V[k] += (scale * cur) * modulation
        else:
            V[k] += scale * cur


def noise_modulation(X, Y, body_at_mid) -> np.ndarray:
    """Noise amplitude map: ~1.1 in the middle of the body, ~0.9 at its edge, 0.8 in air."""
    b = body_at_mid
    u = ((np.asarray(X) - b["cx"]) / b["ax"]).astype(F32)
    vy = np.asarray(Y) - b["cy"]
    v = np.where(vy < 0, vy / b["ay_ant"], vy / b["ay_post"]).astype(F32)
    r2 = u[None, :] ** 2 + v[:, None] ** 2
    m = np.where(r2 < 1.0, 0.9 + 0.22 * (1.0 - r2), 0.8).astype(F32)
    return m


def _streak_pattern(mslab, Xf, Yf, dx, rng, nang=10):
    """2D streak pattern (unit amplitude) and its box for the metal in `mslab` (k, y, x)."""
    m2 = mslab.sum(axis=0)
    if m2.max() <= 0:
        return None
    jj, ii = np.nonzero(m2 > 0.3 * m2.max())
    if len(ii) == 0:
        return None
    xs, ys = Xf[ii], Yf[jj]
    xm = float(np.median(xs))
    srcs = []
    for sel in (xs < xm - 3, xs > xm + 3):
        if sel.sum() > 3:
            srcs.append((float(xs[sel].mean()), float(ys[sel].mean())))
    if not srcs:
        srcs = [(float(xs.mean()), float(ys.mean()))]
    cx = float(np.mean([s[0] for s in srcs]))
    cy = float(np.mean([s[1] for s in srcs]))
    ny, nx = m2.shape
    R = 160.0
    i0 = max(int((cx - R - Xf[0]) / dx), 0); i1 = min(int((cx + R - Xf[0]) / dx), nx)
    j0 = max(int((cy - R - Yf[0]) / dx), 0); j1 = min(int((cy + R - Yf[0]) / dx), ny)
    if i1 <= i0 or j1 <= j0:
        return None
    gx = Xf[i0:i1][None, :]
    gy = Yf[j0:j1][:, None]
    pat = np.zeros((j1 - j0, i1 - i0), F32)
    for (sx, sy) in srcs:
        rx, ry = gx - sx, gy - sy
        r = np.sqrt(rx * rx + ry * ry) + 1.0
        fall = 1.0 / (1.0 + r / 40.0)
        for _ in range(nang):
            th = rng.uniform(0, math.pi)
            c, s = math.cos(th), math.sin(th)
            perp = rx * s - ry * c
            w = rng.uniform(0.6, 2.0)
            sign = 1.0 if rng.random() < 0.5 else -1.0
            pat += F32(sign * rng.uniform(0.4, 1.0)) * np.exp(-(perp / w) ** 2) * fall
    if len(srcs) == 2:  # photon starvation between two metal objects: a dark band
        (ax_, ay_), (bx_, by_) = srcs
        L = math.hypot(bx_ - ax_, by_ - ay_) + 1e-6
        c, s = (bx_ - ax_) / L, (by_ - ay_) / L
        perp = (gx - ax_) * s - (gy - ay_) * c
        along = (gx - (ax_ + bx_) / 2) * c + (gy - (ay_ + by_) / 2) * s
        pat -= F32(1.6) * np.exp(-(perp / 4.0) ** 2) * (1.0 / (1.0 + (np.abs(along) / 80.0) ** 2))
    full = np.zeros((ny, nx), F32)
    full[j0:j1, i0:i1] = pat
    return full


def metal_streaks(V: np.ndarray, metal: np.ndarray, X, Y, rng, chunk: int = 6) -> None:
    """Bright/dark streaks radiating from metal, and a dark band between metal objects.

    A streak pattern is computed every `chunk` slices from the metal there, and slices in
    between blend the two nearest patterns, scaled by the amount of metal in the slice."""
    nz, ny, nx = V.shape
    dx = float(X[1] - X[0])
    amount = metal.reshape(nz, -1).sum(axis=1) * dx * dx  # mm^2 of metal per slice
    ks = np.nonzero(amount > 2.0)[0]
    if len(ks) == 0:
        return
    Xf = np.asarray(X, F32)
    Yf = np.asarray(Y, F32)
    centres = list(range(int(ks.min()), int(ks.max()) + 1, chunk))
    if centres[-1] != ks.max():
        centres.append(int(ks.max()))
    pats = []
    for c in centres:
        lo, hi = max(c - chunk // 2, 0), min(c + chunk // 2 + 1, nz)
        pats.append(_streak_pattern(metal[lo:hi], Xf, Yf, dx, rng))
    for k in range(int(ks.min()), int(ks.max()) + 1):
        a = float(np.clip(amount[k], 0, 400.0))
        if a <= 2.0:
            continue
        q = np.searchsorted(centres, k)
        q0 = max(q - 1, 0) if (q >= len(centres) or centres[q] != k) else q
        q1 = min(q0 + 1, len(centres) - 1)
        t = 0.0 if q1 == q0 else (k - centres[q0]) / max(centres[q1] - centres[q0], 1)
        p0, p1 = pats[q0], pats[q1]
        if p0 is None and p1 is None:
            continue
        if p0 is None:
            p0, t = p1, 0.0
        if p1 is None:
            p1 = p0
        amp = F32(18.0 * math.sqrt(a))
        V[k] += amp * ((1.0 - F32(t)) * p0 + F32(t) * p1)


def apply_hu_scale(V: np.ndarray, a: float, b: float) -> None:
    V *= F32(a)
    V += F32(b)
