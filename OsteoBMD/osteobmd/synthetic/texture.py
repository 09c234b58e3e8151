"""Random textures: trabecular bone (3D) and smooth soft-tissue fields (2D banks).

- `trabecular_texture`: low-passed 3D noise with a positive skew (sparse bright struts on
  darker marrow), coarser and sparser at low BMD; its amplitude falls with the slice
  thickness and pixel size the way partial-volume averaging does.
- `FieldBank`: a few periodic 2D Gaussian random fields; `at(z)` blends two of them with
  cos/sin weights that turn slowly with z, which gives a field that is smooth along z with
  unit variance everywhere, for the cost of two multiply-adds per pixel.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

F32 = np.float32


def gaussian_bank(rng, n: int, ny: int, nx: int, spacing: float, corr_mm: float) -> np.ndarray:
    """n periodic unit-variance fields with a Gaussian correlation of `corr_mm`."""
    fy = np.fft.fftfreq(ny, d=spacing)[:, None]
    fx = np.fft.rfftfreq(nx, d=spacing)[None, :]
    f2 = fx * fx + fy * fy
    amp = np.exp(-(math.pi ** 2) * f2 * corr_mm ** 2).astype(F32)
    out = np.empty((n, ny, nx), F32)
    for k in range(n):
        w = rng.standard_normal((ny, nx), dtype=F32)
        g = np.fft.irfft2(np.fft.rfft2(w) * amp, s=(ny, nx)).astype(F32)
        g /= g.std() + 1e-8
        out[k] = g
    return out


class FieldBank:
    """Smooth 3D-looking random field from a few periodic 2D fields.

    at(z) blends two bank fields with cos/sin weights turning with z (unit variance), and
    lets each drift in-plane with z, so blobs become oblique, meandering tubes instead of
    vertical bars in sagittal/coronal views."""

    def __init__(self, rng, ny, nx, spacing, corr_mm, z_period_mm, n=5, drift=0.0):
        g = gaussian_bank(rng, n, ny, nx, spacing, corr_mm)
        self.ny, self.nx = ny, nx
        self.bank = np.concatenate([np.concatenate([g, g], axis=1)] * 2, axis=2) if drift else g
        self.period = z_period_mm
        self.phase = float(rng.random() * n)
        ang = rng.uniform(0, 2 * math.pi, n)
        self.vel = np.stack([np.cos(ang), np.sin(ang)], 1) * drift / spacing  # pixels per mm of z
        self.drift = drift

    def _view(self, k, z, j0, j1, i0, i1):
        n = len(self.bank)
        b = self.bank[k % n]
        if not self.drift:
            return b[j0:j1, i0:i1]
        oy = int(round(z * self.vel[k % n, 1])) % self.ny
        ox = int(round(z * self.vel[k % n, 0])) % self.nx
        j1 = self.ny if j1 is None else j1
        i1 = self.nx if i1 is None else i1
        return b[oy + j0:oy + j1, ox + i0:ox + i1]

    def at(self, z: float, j0=0, j1=None, i0=0, i1=None) -> np.ndarray:
        t = z / self.period + self.phase
        k = int(math.floor(t))
        f = t - k
        a, b = math.cos(f * math.pi / 2), math.sin(f * math.pi / 2)
        return self._view(k, z, j0, j1, i0, i1) * F32(a) + self._view(k + 1, z, j0, j1, i0, i1) * F32(b)


def _trilinear_at(coarse, factors, flat, shape):
    """Sample a coarse grid (node k <-> fine index k*f) at fine flat indices, trilinearly."""
    k, j, i = np.unravel_index(flat, shape)
    out = np.zeros(len(flat), F32)
    idx = []
    for c, f in zip((k, j, i), factors):
        x = c.astype(F32) / F32(f)
        x0 = np.floor(x).astype(np.intp)
        idx.append((x0, x - x0))
    (k0, tk), (j0, tj), (i0, ti) = idx
    for dk in (0, 1):
        wk = tk if dk else 1 - tk
        for dj in (0, 1):
            wj = tj if dj else 1 - tj
            for di in (0, 1):
                wi = ti if di else 1 - ti
                out += wk * wj * wi * coarse[k0 + dk, j0 + dj, i0 + di]
    return out


def trabecular_texture(rng, shape, spacing, p, slice_mm, flat=None) -> np.ndarray:
    """Zero-mean trabecular texture (HU) on a canvas of `shape` with (dz, dy, dx) spacing.

    Three scales: fine struts (~0.6 mm, skewed: sparse bright struts at low BMD), a
    ~1.4 mm granularity and ~3.5 mm marrow heterogeneity (red/yellow marrow, vessels),
    which is what keeps a real vertebral body mottled even at 3 mm (SD ~25-30 HU).
    Returns the values at the flat indices `flat` (or the whole canvas)."""
    dz, dy, dx = spacing
    bmd = float(p["bmd_mean"])
    u = p.get("tex_u", [0.5, 0.5, 0.5, 0.5])
    low = float(np.clip((150.0 - bmd) / 120.0, 0.0, 1.0))
    lam = 0.45 + 0.3 * low + 0.15 * u[0]  # fine correlation (mm): coarser at low BMD
    gamma = 0.12 + 0.35 * low
    amp_f = (14.0 + 0.09 * bmd) * (0.8 + 0.4 * u[1])
    amp_m = 11.0 + 0.04 * bmd
    amp_c = (15.0 + 9.0 * low) * (0.8 + 0.4 * u[2])
    # osteoporotic bone loses horizontal trabeculae first: vertical striation at low BMD
    lam_z = lam * (1.0 + 1.2 * low)
    sz = max(lam_z, 0.42 * dz)
    sxy = max(lam, 0.3 * dx)
    white = rng.standard_normal(shape, dtype=F32)
    g = ndi.gaussian_filter(white, (sz / dz, sxy / dy, sxy / dx), truncate=2.5)
    del white
    sub = g[:: max(1, shape[0] // 8), ::3, ::3]
    g *= F32(1.0 / (float(sub.std()) + 1e-6))
    att = math.sqrt(lam_z / sz) * math.sqrt(lam / sxy)
    # medium scale: cascade from the fine field (sigma_total ~1.4 mm)
    lm = 1.4
    sm = math.sqrt(max(lm * lm - lam * lam, 0.1))
    gm = ndi.gaussian_filter(g, (max(sm, 0.42 * dz) / dz * 0.9, sm / dy, sm / dx), truncate=2.0)
    gm *= F32(1.0 / (float(gm[:: max(1, shape[0] // 8), ::3, ::3].std()) + 1e-6))
    if flat is None:
        flat = np.arange(int(np.prod(shape)))
    gf = g.ravel()[flat]
    gmf = gm.ravel()[flat]
    del g, gm
    t = gf * gf
    t -= 1.0
    t *= F32(gamma)
    t += gf
    t *= F32(amp_f * att)
    t += F32(amp_m) * gmf
    # coarse scale on a ~1.6 mm grid, sampled trilinearly
    fz = max(1, int(round(1.6 / dz)))
    fy = max(1, int(round(1.6 / dy)))
    fx = max(1, int(round(1.6 / dx)))
    cshape = (shape[0] // fz + 2, shape[1] // fy + 2, shape[2] // fx + 2)
    cw = rng.standard_normal(cshape, dtype=F32)
    lc = 3.5
    cg = ndi.gaussian_filter(cw, (lc / (fz * dz), lc / (fy * dy), lc / (fx * dx)), mode="wrap", truncate=2.5)
    cg *= F32(1.0 / (float(cg.std()) + 1e-6))
    t += F32(amp_c) * _trilinear_at(cg, (fz, fy, fx), flat, shape)
    return t
