"""Render the spine (vertebrae, discs, canal, sacrum, ribs, implants) into the CT volume.

The spine lives in a 3D *canvas*: the bounding box of the vertebral column on the output
in-plane grid, with each CT slice split into `nsub` thin sub-slices (partial-volume
averaging of thick slices). Every primitive is evaluated only inside its own bounding box:
- bone primitives update a signed distance D (min = union) and its owner (which vertebra,
  body or posterior elements), and the vertebral bodies write their level code;
- soft primitives (canal fat, dural sac, cord, discs) are alpha-composited in an overlay;
- implants keep their own distance map.
The canvas is then turned into HU (cortex shell + textured trabecular bone whose mean
follows the vertebra's BMD), composited over the soft tissue, averaged to the CT slices,
blurred by the scanner's PSF and written back.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
from scipy import ndimage as ndi

from .anatomy import Anatomy, Vertebra
from .constants import HU
from .primitives import F32, ecapsule_sdf, ellipsoid_sdf, local_coords, rounded_box_sdf
from .texture import trabecular_texture


class Canvas:
    def __init__(self, X, Y, zsub, box, nsub):
        i0, i1, j0, j1 = box
        self.box = box
        self.x = np.asarray(X[i0:i1], F32)
        self.y = np.asarray(Y[j0:j1], F32)
        self.z = np.asarray(zsub, F32)
        self.nsub = nsub
        shape = (len(self.z), len(self.y), len(self.x))
        self.shape = shape
        self.D = np.full(shape, 60.0, F32)
        self.O = np.zeros(shape, np.uint8)
        self.E = np.zeros(shape, F32)
        self.LV = np.zeros(shape, np.uint8)
        self.Sc = np.zeros(shape, F32)  # premultiplied soft overlay
        self.Sa = np.zeros(shape, F32)
        self.Md = None
        self.Mh = None
        self.dx = float(abs(self.x[1] - self.x[0])) if len(self.x) > 1 else 1.0
        self.dz = float(abs(self.z[1] - self.z[0])) if len(self.z) > 1 else 1.0

    def region(self, lo, hi):
        """Slices and broadcastable coordinates of the world box [lo, hi]."""
        def rng(c, a, b):
            c0 = float(c[0])
            st = float(c[1] - c[0]) if len(c) > 1 else 1.0
            k0 = max(int(math.floor((a - c0) / st)), 0)
            k1 = min(int(math.ceil((b - c0) / st)) + 1, len(c))
            return k0, k1
        i0, i1 = rng(self.x, lo[0], hi[0])
        j0, j1 = rng(self.y, lo[1], hi[1])
        k0, k1 = rng(self.z, lo[2], hi[2])
        if i1 <= i0 or j1 <= j0 or k1 <= k0:
            return None
        sl = (slice(k0, k1), slice(j0, j1), slice(i0, i1))
        px = self.x[i0:i1][None, None, :]
        py = self.y[j0:j1][None, :, None]
        pz = self.z[k0:k1][:, None, None]
        return sl, px, py, pz

    def bone(self, sl, d, owner, E=None, level=0):
        Dv = self.D[sl]
        m = d < Dv
        Dv[m] = d[m]
        self.O[sl][m] = owner
        if E is not None:
            self.E[sl][m] = E[m]
        if level:
            inside = d < 0
            self.LV[sl][inside] = level

    def soft(self, sl, d, hu, edge):
        a = 0.5 - d / edge
        np.clip(a, 0.0, 1.0, out=a)
        Sc = self.Sc[sl]
        Sa = self.Sa[sl]
        Sc *= 1.0 - a
        Sc += a * hu
        Sa *= 1.0 - a
        Sa += a

    def metal(self, sl, d, hu):
        if self.Md is None:
            self.Md = np.full(self.shape, 60.0, F32)
            self.Mh = np.zeros(self.shape, F32)
        Mv = self.Md[sl]
        m = d < Mv
        Mv[m] = d[m]
        self.Mh[sl][m] = hu


def _world_box(v: Vertebra, pts_local, margin):
    pts = np.array([v.world(p) for p in pts_local])
    return pts.min(0) - margin, pts.max(0) + margin


# ----------------------------------------------------------------------------- vertebral body
def body_surfaces(v: Vertebra, u, v_, rho2):
    """Top and bottom endplate heights (local w) at (u, v): wedge, concavity, fracture."""
    hh = v.H / 2.0
    vmid = (v.post - v.b) / 2.0
    dH = v.wedge * (vmid - v_) / v.D
    e_top = 1.3 if (v.kind != "S" or v.segment == 1) else 0.0
    e_bot = 1.3 if v.kind != "S" else 0.0
    c1 = 1.0 - np.minimum(rho2, 1.0)
    top = hh + 0.5 * dH - e_top * c1
    bot = -hh - 0.5 * dH + e_bot * c1
    if v.fracture_ratio < 1.0:
        f = np.clip((v.post - v_) / v.D, 0.0, 1.0)
        top = top - (1.0 - v.fracture_ratio) * v.H * f - 2.0 * (1.0 - np.minimum(rho2, 1.0)) * 1.5
    return top, bot


def body_sdf(v: Vertebra, u, vv, w):
    hh = v.H / 2.0
    wn = np.clip(w / hh, -1.0, 1.0)
    waist = 1.0 - v.waist * (1.0 - wn * wn)
    aw = v.a * waist
    bw = v.b * waist
    iu = u / aw
    iv = vv / bw
    F = iu * iu + iv * iv
    G = 2.0 * np.sqrt((iu / aw) ** 2 + (iv / bw) ** 2) + F32(1e-6)
    dxy = (F - 1.0) / G
    if v.osteophyte > 0.2:
        lip = np.exp(-((np.abs(w) - hh) / 2.2) ** 2) * np.clip(0.6 - vv / v.b, 0.0, 1.0)
        dxy = dxy - F32(v.osteophyte) * lip
    conc = 1.8 if v.kind != "S" else 0.5
    dpost = vv - F32(v.post) + F32(conc) * (1.0 - np.minimum((u / v.a) ** 2, 1.0))
    top, bot = body_surfaces(v, u, vv, F)
    dz = np.maximum(w - top, bot - w)
    d = np.maximum(np.maximum(dxy, dpost), dz)
    return d, F, top


def render_vertebra(cv: Canvas, v: Vertebra, owner_body: int, owner_post: int, fracture_band: float):
    m = max(v.a, v.b) + v.osteophyte + 3.0
    lo, hi = _world_box(v, [(-m, -v.b - 3 - v.osteophyte, -v.H / 2 - 3), (m, v.post + 3, v.H / 2 + 3),
                            (-m, -v.b - 3, v.H / 2 + 3), (m, v.post + 3, -v.H / 2 - 3)], 1.0)
    reg = cv.region(lo, hi)
    if reg is not None:
        sl, px, py, pz = reg
        u, vv, w = local_coords(px, py, pz, v.center, v.R)
        d, F, top = body_sdf(v, u, vv, w)
        hh = v.H / 2.0
        wn = np.clip(np.abs(w) / hh, 0.0, 1.0)
        r2 = np.minimum(F, 1.0)
        # denser under the endplates and at the periphery; basivertebral vein at the back
        E = F32(18.0) * wn ** 6 + F32(10.0) * r2 * r2
        E -= F32(70.0) * np.exp(-(u / 2.6) ** 2 - ((vv - v.post + 0.3 * v.b) / (0.32 * v.b)) ** 2 - (w / 3.5) ** 2)
        if v.fracture_ratio < 1.0:
            E += F32(fracture_band) * np.exp(-((top - w) / 3.5) ** 2)
        cv.bone(sl, d, owner_body, E, level=v.code)
    if v.kind == "S":
        return
    # posterior elements, as elliptic capsules in the vertebra frame
    cw, cd, pw, ph = v.canal_w, v.canal_d, v.ped_w, v.ped_h
    P = v.post
    wp = v.H / 2.0 - ph / 2.0 - 2.0  # pedicles: upper two thirds of the body
    thor = v.kind == "T"
    caps: List[Tuple] = []
    pedx = cw / 2.0 + pw / 2.0
    for s in (-1.0, 1.0):
        caps.append(((s * (pedx - 1.0), P - 4.0, wp), (s * (pedx + 1.5), P + cd * 0.85, wp - 1.0), (pw / 2, pw / 2 + 1, ph / 2)))
        # lamina: from the pedicle back to the midline, a sloping plate
        caps.append(((s * (pedx + 1.0), P + cd * 0.8, wp - 4.0), (0.0, P + cd + 4.0, wp - 7.0), (3.6, 3.6, 10.0 if not thor else 8.0)))
        # transverse process
        if v.big_tp:
            caps.append(((s * pedx, P + 2.0, wp - 4.0), (s * (pedx + 38.0), P + 8.0, -v.H / 2 - 8.0), (7.0, 9.0, 9.0)))
        elif thor:
            caps.append(((s * pedx, P + cd * 0.6, wp), (s * (pedx + v.tp_len), P + cd + 6.0, wp + 1.0), (4.0, 4.5, 5.0)))
        else:
            caps.append(((s * pedx, P + 5.0, wp + 1.0), (s * (pedx + v.tp_len), P + 4.0, wp + 0.5), (4.0 if v.name != "L5" else 6.0, 3.0, 5.5)))
        # superior and inferior articular processes (facets)
        caps.append(((s * (pedx + 1.0), P + cd * 0.75, wp + 1.0), (s * (pedx + 2.5), P + cd * 0.95, v.H / 2.0 + 7.0), (4.5, 5.0, 5.0)))
        caps.append(((s * (cw / 2.0 + 1.0), P + cd + 3.0, wp - 9.0), (s * (cw / 2.0 + 2.0), P + cd + 2.0, -v.H / 2.0 - 5.0), (4.0, 4.5, 5.0)))
    # spinous process
    if thor:
        drop = {"T9": 30.0, "T10": 26.0, "T11": 16.0, "T12": 10.0}.get(v.name, 12.0)
        caps.append(((0.0, P + cd + 3.0, wp - 7.0), (0.0, P + cd + 3.0 + v.sp_len, wp - 7.0 - drop), (2.8, 3.5, 6.0)))
    else:
        caps.append(((0.0, P + cd + 3.0, wp - 7.0), (0.0, P + cd + 3.0 + v.sp_len, wp - 11.0), (4.0, 4.0, 7.5)))
        tip = (0.0, P + cd + 1.0 + v.sp_len, wp - 11.0)
        caps.append((tip, (0.0, tip[1] + 1.0, tip[2] - 1.0), (5.0, 4.5, 7.0)))
    for A, B, r in caps:
        rm = max(r) + 1.5
        lo, hi = _world_box(v, [A, B], rm)
        reg = cv.region(lo, hi)
        if reg is None:
            continue
        sl, px, py, pz = reg
        u, vv, w = local_coords(px, py, pz, v.center, v.R)
        d = ecapsule_sdf(u, vv, w, A, B, r)
        cv.bone(sl, d, owner_post)


def render_sacrum_extras(cv: Canvas, v: Vertebra, owner_ala: int, owner_post: int):
    """Alae, roof of the sacral canal, S1 superior articular processes."""
    cw, cd = v.canal_w, v.canal_d
    P = v.post
    hh = v.H / 2.0
    for s in (-1.0, 1.0):
        inner = cw / 2.0 + 1.5
        cu = s * (inner + v.ala) / 2.0
        half = ((v.ala - inner) / 2.0, (P + cd + 6.0 + 0.45 * v.b) / 2.0, hh)
        cvv = (P + cd + 6.0 - 0.45 * v.b) / 2.0
        lo, hi = _world_box(v, [(cu - half[0], cvv - half[1], -hh), (cu + half[0], cvv + half[1], hh)], 2.0)
        reg = cv.region(lo, hi)
        if reg is not None:
            sl, px, py, pz = reg
            u, vv, w = local_coords(px, py, pz, v.center, v.R)
            d = rounded_box_sdf(u, vv, w, (cu, cvv, 0.0), half, r=4.0)
            # anterior surface of the ala recedes laterally (wing shape, not a box)
            d = np.maximum(d, F32(-0.45 * v.b) - vv + F32(0.55) * (np.abs(u) - F32(inner)))
            if v.segment == 1:
                # the ala's upper surface slopes down laterally below the S1 endplate
                d = np.maximum(d, w - F32(hh - 3.0) + F32(0.12) * np.abs(u - F32(s * inner)))
            cv.bone(sl, d, owner_ala)
    # roof of the canal (fused laminae) and median crest
    A = (-cw / 2.0 - 1.0, P + cd + 2.5, 0.0)
    B = (cw / 2.0 + 1.0, P + cd + 2.5, 0.0)
    for (a, b, r) in [(A, B, (3.0, 3.0, hh)), ((0.0, P + cd + 3.0, 0.0), (0.0, P + cd + 9.0, -2.0), (2.5, 3.0, hh * 0.7))]:
        lo, hi = _world_box(v, [a, b], max(r) + 1.5)
        reg = cv.region(lo, hi)
        if reg is None:
            continue
        sl, px, py, pz = reg
        u, vv, w = local_coords(px, py, pz, v.center, v.R)
        cv.bone(sl, ecapsule_sdf(u, vv, w, a, b, r), owner_post)
    if v.segment == 1:
        for s in (-1.0, 1.0):
            a = (s * (cw / 2.0 + 6.0), P + 6.0, hh - 6.0)
            b = (s * (cw / 2.0 + 8.0), P + 11.0, hh + 9.0)
            lo, hi = _world_box(v, [a, b], 6.0)
            reg = cv.region(lo, hi)
            if reg is None:
                continue
            sl, px, py, pz = reg
            u, vv, w = local_coords(px, py, pz, v.center, v.R)
            cv.bone(sl, ecapsule_sdf(u, vv, w, a, b, (4.0, 5.0, 5.0)), owner_post)


def _avg_frame(R1, R2):
    w = R1[:, 2] + R2[:, 2]
    w /= np.linalg.norm(w)
    vv = R1[:, 1] + R2[:, 1]
    vv -= (vv @ w) * w
    vv /= np.linalg.norm(vv)
    return np.stack([np.cross(vv, w), vv, w], axis=1)


def render_disc(cv: Canvas, lo_v: Vertebra, up_v: Vertebra, age: float, vacuum: bool, edge: float):
    c1 = lo_v.world((0, 0, lo_v.H / 2.0))
    c2 = up_v.world((0, 0, -up_v.H / 2.0))
    c = (c1 + c2) / 2.0
    R = _avg_frame(lo_v.R, up_v.R)
    if lo_v.kind == "S":
        a, b, post = up_v.a, up_v.b, up_v.post
    else:
        a, b, post = (lo_v.a + up_v.a) / 2, (lo_v.b + up_v.b) / 2, (lo_v.post + up_v.post) / 2
    bulge = 1.0 + 1.5 * max(0.0, (age - 40.0) / 50.0)
    gap = float(np.linalg.norm(c2 - c1))
    hz = gap / 2.0 + 14.0
    m = max(a, b) + bulge + 2.0
    pts = [c + R @ np.array(q) for q in [(-m, -b - bulge - 2, -hz), (m, post + bulge + 2, hz),
                                          (-m, post + 3, hz), (m, -b - 3, -hz)]]
    pts = np.array(pts)
    reg = cv.region(pts.min(0) - 1, pts.max(0) + 1)
    if reg is None:
        return
    sl, px, py, pz = reg
    u, vv, w = local_coords(px, py, pz, c, R)
    A = a + bulge
    Bb = b + bulge
    F = (u / A) ** 2 + (vv / Bb) ** 2
    G = 2.0 * np.sqrt((u / A ** 2) ** 2 + (vv / Bb ** 2) ** 2) + F32(1e-6)
    d = (F - 1.0) / G
    d = np.maximum(d, vv - F32(post + bulge * 0.6))
    # bounded by the two endplates (in their own frames), overlapping them by ~2 mm
    ul, vl, wl = local_coords(px, py, pz, lo_v.center, lo_v.R)
    rl = (ul / lo_v.a) ** 2 + (vl / lo_v.b) ** 2
    top_l, _ = body_surfaces(lo_v, ul, vl, rl)
    uu, vu, wu = local_coords(px, py, pz, up_v.center, up_v.R)
    ru = (uu / up_v.a) ** 2 + (vu / up_v.b) ** 2
    _, bot_u = body_surfaces(up_v, uu, vu, ru)
    d = np.maximum(d, (top_l - 2.0) - wl)
    d = np.maximum(d, wu - (bot_u + 2.0))
    degen = max(0.0, (age - 40.0) / 50.0)
    hu = F32(HU["disc"] - 12.0 + 20.0 * degen) + F32(22.0) * np.minimum(F, 1.0)
    if vacuum:
        gas = ellipsoid_sdf(u, vv + 0.2 * b, w, (0.35 * a, 0.25 * b, max(gap * 0.3, 1.0)))
        hu = np.where(gas < 0, F32(-700.0), hu)
    cv.soft(sl, d, hu, edge)


def render_canal(cv: Canvas, v: Vertebra, next_gap: float, edge: float, sac_end: bool, cord: bool):
    """Epidural fat, dural sac (CSF) and, above L2, the cord, along the vertebra's segment."""
    cw, cd = v.canal_w, v.canal_d
    vc = v.post + cd / 2.0 + 1.0
    hz = v.H / 2.0 + next_gap + 3.0
    lo, hi = _world_box(v, [(-cw / 2 - 2, vc - cd / 2 - 3, -hz), (cw / 2 + 2, vc + cd / 2 + 3, hz),
                            (-cw / 2 - 2, vc + cd / 2 + 3, -hz), (cw / 2 + 2, vc - cd / 2 - 3, hz)], 1.0)
    reg = cv.region(lo, hi)
    if reg is None:
        return
    sl, px, py, pz = reg
    u, vv, w = local_coords(px, py, pz, v.center, v.R)
    for (ra, rb, off, hu, cond) in [
        (cw / 2.0 + 1.0, cd / 2.0 + 1.5, 0.0, HU["epidural_fat"], True),
        (cw / 2.0 - 2.8, cd / 2.0 - 2.2, -0.6, HU["csf"], not sac_end),
        (4.5, 3.8, -0.5, 32.0, cord),
    ]:
        if not cond:
            continue
        iu = u / ra
        iv = (vv - F32(vc + off)) / rb
        F = iu * iu + iv * iv
        G = 2.0 * np.sqrt((iu / ra) ** 2 + (iv / rb) ** 2) + F32(1e-6)
        d = np.maximum((F - 1.0) / G, np.abs(w) - F32(hz))
        cv.soft(sl, d, F32(hu), edge)


def render_metal(cv: Canvas, items, rng):
    for it in items:
        if it["type"] == "world_capsule":
            A, B = np.asarray(it["A"]), np.asarray(it["B"])
            r = it["r"]
            lo, hi = np.minimum(A, B) - r - 2, np.maximum(A, B) + r + 2
            reg = cv.region(lo, hi)
            if reg is None:
                continue
            sl, px, py, pz = reg
            c = (A + B) / 2
            u, vv, w = px - F32(c[0]), py - F32(c[1]), pz - F32(c[2])
            d = ecapsule_sdf(u, vv, w, A - c, B - c, (r, r, r))
            cv.metal(sl, d, it["hu"])
        elif it["type"] == "capsule":
            v = it["v"]
            lo, hi = _world_box(v, [it["A"], it["B"]], it["r"] + 2)
            reg = cv.region(lo, hi)
            if reg is None:
                continue
            sl, px, py, pz = reg
            u, vv, w = local_coords(px, py, pz, v.center, v.R)
            d = ecapsule_sdf(u, vv, w, it["A"], it["B"], (it["r"],) * 3)
            cv.metal(sl, d, it["hu"])
        elif it["type"] == "blob":
            v = it["v"]
            c = np.asarray(it["c"])
            r = np.asarray(it["r"])
            lo, hi = _world_box(v, [c - r * 1.4, c + r * 1.4], 2.0)
            reg = cv.region(lo, hi)
            if reg is None:
                continue
            sl, px, py, pz = reg
            u, vv, w = local_coords(px, py, pz, v.center, v.R)
            d = ellipsoid_sdf(u - F32(c[0]), vv - F32(c[1]), w - F32(c[2]), r)
            g = np.random.default_rng(it["seed"]).standard_normal(d.shape).astype(F32)
            g = ndi.gaussian_filter(g, 2.0)
            g *= F32(3.0 / (g.std() + 1e-6))
            cv.metal(sl, d + g, it["hu"])


# ----------------------------------------------------------------------------- main entry
def vertebra_aabb(v: Vertebra):
    """World bounding box of everything a vertebra (or sacral segment) draws."""
    if v.kind == "S":
        R = v.ala + 8.0
        vlo, vhi = -v.b - 8.0, v.post + v.canal_d + 16.0
        wlo, whi = -v.H / 2 - 12.0, v.H / 2 + 18.0
    else:
        R = v.canal_w / 2 + v.ped_w + max(v.tp_len, 10.0) + 12.0 + (40.0 if v.big_tp else 0.0)
        R = max(R, v.a + v.osteophyte + 6.0)
        vlo, vhi = -v.b - v.osteophyte - 8.0, v.post + v.canal_d + v.sp_len + 14.0
        wlo, whi = -v.H / 2 - 34.0, v.H / 2 + 16.0
    pts = np.array([v.world((u, vv, w)) for u in (-R, R) for vv in (vlo, vhi) for w in (wlo, whi)])
    return pts.min(0), pts.max(0)


def _index_range(c, a, b):
    st = float(c[1] - c[0])
    k0 = max(int(math.floor((a - c[0]) / st)), 0)
    k1 = min(int(math.ceil((b - c[0]) / st)) + 1, len(c))
    return k0, k1


def _owner_table(anat: Anatomy, p: dict, rng_tex):
    slope = p["bone_slope"]
    off = p["marrow_offset"] + (8.0 if p["contrast"] == "portal" else 5.0 if p["contrast"] == "arterial" else 0.0)
    owners = [dict(trab=0.0, cort=0.0, ct=1.0, amp=0.0)]
    vert_owner = {}
    for v in anat.vertebrae:
        bmd = v.bmd
        fb = min(bmd / 150.0, 1.3)
        # true cortical shells are thin (0.3-0.8 mm); the PSF spreads them to a 1-2 mm rim
        owners.append(dict(trab=slope * bmd + off, cort=1050.0 + 250.0 * fb, ct=0.35 + 0.3 * fb, amp=1.0))
        # posterior elements: mostly compact bone (real arch ~250-300 HU at 3 mm)
        owners.append(dict(trab=slope * bmd * 1.1 + off + 50.0, cort=850.0 + 200.0 * fb, ct=0.8 + 0.3 * fb,
                           amp=0.7))
        vert_owner[v.name] = (len(owners) - 2, len(owners) - 1, 90.0 + 60.0 * rng_tex.random())
    sb = anat.sacrum[0].bmd
    fs = min(sb / 150.0, 1.3)
    owners.append(dict(trab=slope * sb + off, cort=1050.0 + 200 * fs, ct=0.4 + 0.3 * fs, amp=1.0))  # bodies
    owners.append(dict(trab=slope * sb * 0.75 + off - 10.0, cort=1000.0, ct=0.5 + 0.3 * fs, amp=1.1))  # alae
    owners.append(dict(trab=slope * sb + off + 50.0, cort=1100.0, ct=1.0 + 0.3 * fs, amp=0.7))  # arch
    n = len(owners)
    vert_owner["S"] = (n - 3, n - 2, n - 1)
    tab = {k: np.array([o[k] for o in owners], F32) for k in ("trab", "cort", "ct", "amp")}
    return tab, vert_owner


def render_spine(V: np.ndarray, X, Y, Z, anat: Anatomy, p: dict, slice_mm: float, psf_mm: float,
                 rng_tex, chunk_mm: float = 40.0):
    """Composite the spine into V (nz, ny, nx) in place.

    Returns (levels uint8 in V's grid, metal occupancy or None, level codes present).

    The column is processed in z-chunks of ~chunk_mm, each in its own in-plane box, so a
    lordotic or scoliotic spine does not inflate the work to its overall bounding box."""
    nz, ny, nx = V.shape
    # thick slices: average sub-slices <= 1 mm apart (partial volume); up to 1.3 mm, one sample
    nsub = 1 if slice_mm <= 1.3 else int(math.ceil(slice_mm / 1.0 - 1e-6))
    levels = np.zeros(V.shape, np.uint8)
    present = set()
    metal_full = None
    tab, vown = _owner_table(anat, p, rng_tex)
    allv = anat.vertebrae + anat.sacrum
    boxes = [vertebra_aabb(v) for v in allv]
    gaps = {d.upper.name: d.height for d in anat.discs}
    age = p["age"]
    step = max(1, int(round(chunk_mm / slice_mm)))
    dxy = float(X[1] - X[0])
    # anti-aliasing ramp: wide enough for the coarser of the in-plane / sub-slice sampling,
    # so thin shells (endplates) do not alias into dashes on thick slices
    edge = 0.5 * max(dxy, slice_mm / nsub) + 0.3
    offs = (np.arange(nsub) + 0.5) / nsub - 0.5
    for k0 in range(0, nz, step):
        k1 = min(k0 + step, nz)
        za, zb = Z[k0] - slice_mm, Z[k1 - 1] + slice_mm
        sel = [i for i, (lo, hi) in enumerate(boxes) if hi[2] >= za and lo[2] <= zb]
        if not sel:
            continue
        lo = np.min([boxes[i][0] for i in sel], axis=0)
        hi = np.max([boxes[i][1] for i in sel], axis=0)
        i0, i1 = _index_range(X, lo[0], hi[0])
        j0, j1 = _index_range(Y, lo[1], hi[1])
        if i1 <= i0 or j1 <= j0:
            continue
        zsub = (Z[k0:k1, None] + offs[None, :] * slice_mm).ravel()
        cv = Canvas(X, Y, zsub, (i0, i1, j0, j1), nsub)
        names = {allv[i].name for i in sel}
        # --- soft overlay: canal and discs
        for v in anat.vertebrae:
            if v.name in names:
                render_canal(cv, v, gaps.get(v.name, 8.0), edge, False, cord=v.name in ("T9", "T10", "T11", "T12"))
        for v in anat.sacrum[:3]:
            render_canal(cv, v, 2.0, edge, sac_end=v.segment >= 2, cord=False)
        for dsc in anat.discs:
            if dsc.upper.name in names or dsc.lower.name in names:
                render_disc(cv, dsc.lower, dsc.upper, age, dsc.vacuum, edge)
        # --- bone
        for v in anat.vertebrae:
            if v.name in names:
                ob, op, fb = vown[v.name]
                render_vertebra(cv, v, ob, op, fb)
        if "S" in names:
            ob, oa, op = vown["S"]
            for v in anat.sacrum:
                render_vertebra(cv, v, ob, op, 0.0)
                render_sacrum_extras(cv, v, oa, op)
        if anat.metal:
            render_metal(cv, anat.metal, rng_tex)
        out, lvl, mm = _canvas_to_hu(cv, V[k0:k1, j0:j1, i0:i1], tab, p, slice_mm, psf_mm, edge, rng_tex)
        V[k0:k1, j0:j1, i0:i1] = out
        levels[k0:k1, j0:j1, i0:i1] = lvl
        present.update(np.nonzero(np.bincount(lvl.ravel(), minlength=256))[0].tolist())
        if mm is not None:
            if metal_full is None:
                metal_full = np.zeros(V.shape, F32)
            metal_full[k0:k1, j0:j1, i0:i1] = mm
    present.discard(0)
    return levels, metal_full, sorted(present)


def _canvas_to_hu(cv: Canvas, sub, tab, p, slice_mm, psf_mm, edge, rng_tex):
    nsub = cv.nsub
    nz = sub.shape[0]
    base = np.repeat(sub, nsub, axis=0) if nsub > 1 else sub.copy()
    base *= 1.0 - cv.Sa
    base += cv.Sc
    # bone: only where the distance map says there is some
    flat = np.flatnonzero(cv.D.ravel() < edge)
    if len(flat):
        O = cv.O.ravel()[flat]
        D = cv.D.ravel()[flat]
        tex = trabecular_texture(rng_tex, cv.shape, (cv.dz, cv.dx, cv.dx), p, slice_mm, flat)
        hu = tab["trab"][O] + cv.E.ravel()[flat] + tab["amp"][O] * tex
        np.maximum(hu, F32(p["marrow_offset"] - 45.0), out=hu)  # trabecular bone never shows holes
        shell = (D + tab["ct"][O]) / F32(edge) + F32(0.5)
        np.clip(shell, 0.0, 1.0, out=shell)
        hu += shell * (tab["cort"][O] - hu)
        alpha = F32(0.5) - D / F32(edge)
        np.clip(alpha, 0.0, 1.0, out=alpha)
        bf = base.ravel()
        cur = bf[flat]
        bf[flat] = cur + alpha * (hu - cur)
    metal_mask = None
    if cv.Md is not None:
        am = F32(0.5) - cv.Md / F32(edge)
        np.clip(am, 0.0, 1.0, out=am)
        base += am * (cv.Mh - base)
        metal_mask = am
    if nsub > 1:
        out = base.reshape(nz, nsub, *base.shape[1:]).mean(axis=1)
        lv = cv.LV.reshape(nz, nsub, *base.shape[1:])
        occ = (lv > 0).sum(axis=1) * 2 >= nsub
        lvl = np.where(occ, lv.max(axis=1), 0).astype(np.uint8)
        if metal_mask is not None:
            metal_mask = metal_mask.reshape(nz, nsub, *base.shape[1:]).mean(axis=1)
    else:
        out = base
        lvl = cv.LV
    sig = psf_mm / cv.dx
    if sig > 0.05:
        out = ndi.gaussian_filter(out, (0.0, sig, sig), truncate=3.0)
    return out, lvl, metal_mask


def render_ribs(V: np.ndarray, X, Y, Z, anat: Anatomy, p: dict, slice_mm: float, edge: float):
    """Ribs as chains of capsules, each rib in its own bounding box (sparse composite)."""
    dx = float(X[1] - X[0])
    dz = float(Z[1] - Z[0]) if len(Z) > 1 else slice_mm
    bmd = np.mean([v.bmd for v in anat.vertebrae if v.kind == "T"])
    trab = p["bone_slope"] * bmd * 1.1 + p["marrow_offset"] + 30.0
    cort = 1050.0
    for rib in anat.ribs:
        P = rib.points
        r = rib.radius
        lo = P.min(0) - r.max() - 2
        hi = P.max(0) + r.max() + 2
        i0 = max(int(math.floor((lo[0] - X[0]) / dx)), 0); i1 = min(int(math.ceil((hi[0] - X[0]) / dx)) + 1, len(X))
        j0 = max(int(math.floor((lo[1] - Y[0]) / dx)), 0); j1 = min(int(math.ceil((hi[1] - Y[0]) / dx)) + 1, len(Y))
        k0 = max(int(math.floor((lo[2] - Z[0]) / dz)), 0); k1 = min(int(math.ceil((hi[2] - Z[0]) / dz)) + 1, len(Z))
        if i1 <= i0 or j1 <= j0 or k1 <= k0:
            continue
        D = np.full((k1 - k0, j1 - j0, i1 - i0), 50.0, F32)
        C = np.zeros(D.shape, np.uint8)  # 1 = cartilage
        xs = np.asarray(X[i0:i1], F32)
        ys = np.asarray(Y[j0:j1], F32)
        zs = np.asarray(Z[k0:k1], F32)
        for s in range(len(P) - 1):
            A, B = P[s], P[s + 1]
            rr = (r[s] + r[s + 1]) / 2
            a0 = np.minimum(A, B) - rr - 1.5
            a1 = np.maximum(A, B) + rr + 1.5
            ii0 = max(int((a0[0] - xs[0]) / dx), 0); ii1 = min(int((a1[0] - xs[0]) / dx) + 2, len(xs))
            jj0 = max(int((a0[1] - ys[0]) / dx), 0); jj1 = min(int((a1[1] - ys[0]) / dx) + 2, len(ys))
            kk0 = max(int((a0[2] - zs[0]) / dz), 0); kk1 = min(int((a1[2] - zs[0]) / dz) + 2, len(zs))
            if ii1 <= ii0 or jj1 <= jj0 or kk1 <= kk0:
                continue
            c = (A + B) / 2
            px = xs[ii0:ii1][None, None, :] - F32(c[0])
            py = ys[jj0:jj1][None, :, None] - F32(c[1])
            pz = zs[kk0:kk1][:, None, None] - F32(c[2])
            # ribs are flattened: taller than thick (approximate with a vertical stretch)
            d = ecapsule_sdf(px, py, pz, A - c, B - c, (rr * 0.85, rr * 0.85, rr * 1.25))
            sub = D[kk0:kk1, jj0:jj1, ii0:ii1]
            m = d < sub
            sub[m] = d[m]
            if s >= rib.cartilage_from:
                C[kk0:kk1, jj0:jj1, ii0:ii1][m] = 1
        idx = np.nonzero(D < edge)
        if len(idx[0]) == 0:
            continue
        d = D[idx]
        a = np.clip(0.5 - d / edge, 0.0, 1.0)
        shell = np.clip((d + 0.8) / edge + 0.5, 0.0, 1.0)
        hu = trab + shell * (cort - trab)
        hu = np.where(C[idx] == 1, F32(HU["cartilage"] + 40.0 * shell), hu)
        Vs = V[k0:k1, j0:j1, i0:i1]
        cur = Vs[idx]
        Vs[idx] = cur + a * (hu - cur)
