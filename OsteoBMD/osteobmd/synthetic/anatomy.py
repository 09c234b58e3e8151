"""The synthetic patient in millimetres (patient frame, LPS axes): spine, body, organs.

Patient frame: x right->left, y anterior->posterior, z inferior->superior, origin at the
centre of the S1 superior endplate. The spine is a curve s -> p(s) (arc length s, s = 0 at
S1, s > 0 upwards) whose tangent leans anteriorly by the angle phi(s): phi = sacral slope at
S1, decreasing by the lordosis up to L1 (most of the bending low in the lumbar spine), a
mild kyphosis above, and the sacral curve below. A lateral sine bump gives a scoliosis
(Cobb angle), with axial rotation following it.

Vertebrae are rigid bodies placed along the curve with their local frame (e_u left,
e_v posterior, e_w superior = tangent); the discs fill the wedge-shaped gaps between them,
so lordosis shows as anterior-taller discs, as in real spines.

Nothing is rendered here: this module only builds the geometry (see spine.py, softtissue.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from .constants import (BMD_LEVEL_FACTOR, DISC_BELOW, HU, LEVEL_CODES, SACRUM_SHAPE,
                        VERTEBRA_SHAPE)
from .primitives import ZTube

DEG = math.pi / 180.0


@dataclass
class Vertebra:
    name: str
    code: int
    kind: str  # "T", "L", "S" (sacral segment)
    s: float
    center: np.ndarray
    R: np.ndarray  # columns e_u (left), e_v (posterior), e_w (superior)
    H: float
    W: float
    D: float
    canal_w: float
    canal_d: float
    ped_w: float
    ped_h: float
    tp_len: float
    sp_len: float
    bmd: float
    kappa: float = 0.72
    wedge: float = 0.0
    fracture_ratio: float = 1.0
    osteophyte: float = 0.0
    waist: float = 0.05
    ala: float = 0.0
    segment: int = 0  # sacral segment number (1..5)
    big_tp: bool = False  # transitional L5 with alar transverse processes

    @property
    def a(self) -> float:
        return self.W / 2.0

    @property
    def b(self) -> float:
        return self.D / (1.0 + self.kappa)

    @property
    def post(self) -> float:
        return self.kappa * self.b

    def world(self, local) -> np.ndarray:
        return self.center + self.R @ np.asarray(local, float)

    @property
    def canal_center(self) -> np.ndarray:
        return self.world((0.0, self.post + self.canal_d / 2.0 + 1.0, 0.0))


@dataclass
class Disc:
    lower: Vertebra
    upper: Vertebra
    height: float
    vacuum: bool = False


@dataclass
class Rib:
    points: np.ndarray  # (n, 3) world
    radius: np.ndarray  # (n,)
    cartilage_from: int  # index from which the rib is costal cartilage


@dataclass
class Anatomy:
    vertebrae: List[Vertebra]  # top -> bottom, T9 .. L5 (L6)
    sacrum: List[Vertebra]  # S1 .. S5
    discs: List[Disc]
    ribs: List[Rib]
    tubes: List[ZTube]
    body: "BodyShape"
    spine_fn: "SpineFunctions"
    ilium: dict
    bowel: dict
    lung: dict
    table: dict
    metal: List[dict]
    plaques: List[dict]
    level_z: Dict[str, float]
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- spine
def _frames(dx, dy, dz, psi):
    t = np.array([dx, dy, dz], float)
    t /= np.linalg.norm(t)
    ev = np.array([0.0, 1.0, 0.0]) - t[1] * t
    ev /= np.linalg.norm(ev)
    eu = np.cross(ev, t)
    c, s = math.cos(psi), math.sin(psi)
    eu2 = c * eu + s * ev
    ev2 = -s * eu + c * ev
    return np.stack([eu2, ev2, t], axis=1)


class SpineCurve:
    def __init__(self, p, s_top: float, s_bottom: float, lumbar_top: float, su):
        ds = 0.5
        self.s = np.arange(s_bottom - 20.0, s_top + 40.0, ds)
        s = self.s
        ss = p["sacral_slope_deg"] * DEG
        ll = p["lordosis_deg"] * DEG
        kyph = (0.10 + 0.12 * su[0]) * DEG  # rad per mm above L1
        sac = (0.32 + 0.25 * su[1]) * DEG  # rad per mm in the sacrum
        lt = max(lumbar_top, 50.0)
        c = 1.6
        # integral of w(s) = 1 + c (1 - s/lt) from 0 to s, normalised to 1 at lt
        tot = lt * (1.0 + c / 2.0)
        sl = np.clip(s, 0.0, lt)
        W = (sl * (1.0 + c) - c * sl * sl / (2.0 * lt)) / tot
        phi = ss - ll * W
        phi = np.where(s > lt, ss - ll + kyph * (s - lt), phi)
        phi = np.where(s < 0.0, ss + sac * s, phi)
        self.phi = phi
        dy = -np.sin(phi)
        dz = np.cos(phi)
        i0 = int(np.argmin(np.abs(s)))
        y = np.cumsum(dy) * ds
        z = np.cumsum(dz) * ds
        y -= y[i0]
        z -= z[i0]
        # scoliosis: lateral sine bump over the lumbar / thoraco-lumbar spine
        cobb = p["scoliosis_deg"] * DEG
        L = 150.0 + 60.0 * su[2]
        sa = 5.0 + 60.0 * su[3]
        A = L * math.tan(abs(cobb) / 2.0) / math.pi * np.sign(cobb)
        tt = np.clip((s - sa) / L, 0.0, 1.0)
        x = A * np.sin(math.pi * tt)
        dx = np.where((s > sa) & (s < sa + L), A * math.pi / L * np.cos(math.pi * tt), 0.0)
        self.x, self.y, self.z, self.dx, self.dy, self.dz = x, y, z, dx, dy, dz
        rot_apex = p["rotation_deg"] * DEG + 0.25 * cobb
        self.psi = rot_apex * np.sin(math.pi * tt) + p["rotation_deg"] * DEG * 0.3
        self.cobb_A = A

    def point(self, s: float) -> np.ndarray:
        return np.array([np.interp(s, self.s, self.x), np.interp(s, self.s, self.y),
                         np.interp(s, self.s, self.z)])

    def frame(self, s: float) -> np.ndarray:
        f = lambda a: float(np.interp(s, self.s, a))
        return _frames(f(self.dx), f(self.dy), f(self.dz), f(self.psi))


def build_spine(p, rng) -> tuple:
    su = rng.random(40)
    size = p["size"]
    hsize = size * (0.97 + 0.06 * su[4])
    age = p["age"]
    trans = p["transitional"]
    names = ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    if trans == "six_lumbar":
        names.append("L6")
    # BMD per level
    bmd = {}
    jit = p["level_jitter"]
    lum_idx = {n: i for i, n in enumerate(["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "L6", "S"])}
    for n in names + ["S"]:
        i = lum_idx[n]
        f = BMD_LEVEL_FACTOR[n] * (1.0 + jit[i] + p["level_trend"] * (i - 5))
        bmd[n] = float(np.clip(p["bmd_mean"] * f, 22.0, 270.0))
    # the case mean is defined over L1-L3: rescale so it holds exactly
    m = np.mean([bmd[n] for n in ("L1", "L2", "L3")])
    for n in bmd:
        bmd[n] = float(np.clip(bmd[n] * p["bmd_mean"] / m, 22.0, 270.0))
    user = p.get("bmd") or {}
    for n, v in user.items():
        bmd[n] = float(v)

    # discs: degeneration with age, more at the bottom
    deg = np.clip((age - 35.0) / 55.0, 0.0, 1.0)
    disc_h = {}
    for k, n in enumerate(names):
        lowness = k / len(names)
        f = 1.0 - deg * (0.15 + 0.45 * su[5 + k]) * (0.5 + lowness)
        disc_h[n] = DISC_BELOW[n] * hsize * max(f, 0.3)
    if trans == "sacralized_L5":
        disc_h["L5"] = 3.0
    vac_levels = set()
    for k, n in enumerate(names[-2:]):
        if su[15 + k] < 0.25 * deg:
            vac_levels.add(n)

    # arc positions, from S1 upward
    s_cur = 0.0
    s_center = {}
    for n in reversed(names):
        H = VERTEBRA_SHAPE[n][0] * hsize
        s_center[n] = s_cur + disc_h[n] + H / 2.0
        s_cur = s_center[n] + H / 2.0
    s_top = s_cur
    lumbar_top = s_center["L1"] + VERTEBRA_SHAPE["L1"][0] * hsize / 2.0
    sac_heights = [h * hsize for h, *_ in SACRUM_SHAPE]
    s_bottom = -sum(sac_heights)
    curve = SpineCurve(p, s_top, s_bottom, lumbar_top, su[20:])

    osteo_amp = max(0.0, (age - 48.0) / 40.0) * 4.0
    verts: List[Vertebra] = []
    for k, n in enumerate(names):
        H, W, D, cw, cd, pw, ph, tp, sp = VERTEBRA_SHAPE[n]
        jit = 1.0 + 0.02 * (su[25 + k] - 0.5)
        v = Vertebra(
            name=n, code=LEVEL_CODES[n], kind=n[0], s=s_center[n], center=curve.point(s_center[n]),
            R=curve.frame(s_center[n]), H=H * hsize * jit, W=W * size * jit, D=D * size * jit,
            canal_w=cw * size, canal_d=cd * size, ped_w=pw * size, ped_h=ph * hsize, tp_len=tp * size,
            sp_len=sp * size, bmd=bmd[n], kappa=0.76 if n[0] == "T" else 0.70,
        )
        v.wedge = {"T11": -1.5, "T12": -2.0, "L1": -2.0, "L2": -0.5, "L3": 0.5, "L4": 1.5, "L5": 3.0,
                   "L6": 3.0}.get(n, -1.0) * hsize
        v.osteophyte = osteo_amp * su[34 - k % 6] if n[0] == "L" or n == "T12" else 0.0
        v.waist = 0.04 + 0.04 * su[(10 + k) % 40]
        if p["fracture"] == n:
            v.fracture_ratio = p["fracture_ratio"]
        if trans == "sacralized_L5" and n == "L5":
            v.big_tp = True
        verts.append(v)

    # sacrum segments
    sac: List[Vertebra] = []
    s_cur = 0.0
    for i, (h, w, d, ala) in enumerate(SACRUM_SHAPE):
        hh = h * hsize
        sc = s_cur - hh / 2.0
        v = Vertebra(
            name="S", code=LEVEL_CODES["S"], kind="S", s=sc, center=curve.point(sc), R=curve.frame(sc),
            H=hh + 3.0, W=w * size, D=d * size, canal_w=max(26.0 - 4.0 * i, 10.0) * size,
            canal_d=max(12.0 - 2.0 * i, 5.0) * size, ped_w=0.0, ped_h=0.0, tp_len=0.0, sp_len=0.0,
            bmd=bmd["S"], kappa=0.55, ala=ala * size * (0.95 + 0.1 * su[36]), segment=i + 1, waist=0.0,
        )
        sac.append(v)
        s_cur -= hh

    discs: List[Disc] = []
    chain = verts + [sac[0]]
    for up, lo in zip(chain[:-1], chain[1:]):
        discs.append(Disc(lower=lo, upper=up, height=disc_h[up.name], vacuum=up.name in vac_levels))
    return verts, sac, discs, curve, bmd


class SpineFunctions:
    """Spine landmarks as functions of z (for placing soft tissue)."""

    def __init__(self, verts: List[Vertebra], sac: List[Vertebra]):
        allv = verts + sac
        zs = np.array([v.center[2] for v in allv])
        order = np.argsort(zs)
        self.z = zs[order]
        cc = np.array([v.canal_center for v in allv])[order]
        self.canal_x = cc[:, 0]
        self.canal_y = cc[:, 1]
        self.cx = np.array([v.center[0] for v in allv])[order]
        self.cy = np.array([v.center[1] for v in allv])[order]
        self.front = np.array([v.center[1] - v.b for v in allv])[order]
        self.halfw = np.array([max(v.a, v.ala * 0.8) if v.kind == "S" else v.a for v in allv])[order]
        self.bodyhalfw = np.array([v.a for v in allv])[order]

    def canal(self, z):
        return np.interp(z, self.z, self.canal_x), np.interp(z, self.z, self.canal_y)

    def body_front(self, z):
        return np.interp(z, self.z, self.front)

    def body_center(self, z):
        return np.interp(z, self.z, self.cx), np.interp(z, self.z, self.cy)

    def half_width(self, z):
        return np.interp(z, self.z, self.bodyhalfw)


# ----------------------------------------------------------------------------- body outline
class BodyShape:
    """Abdominal outline (super-ellipse-like) and wall layer thicknesses as functions of z."""

    def __init__(self, p, lz: Dict[str, float], y_back: float, bu):
        ob = p["obesity"]
        size = p["size"]
        zs = [lz["S5"] - 60.0, lz["S3"], lz["S1"], lz["L4"], lz["L2"], lz["T12"], lz["T10"], lz["T9"] + 80.0]
        self.zs = np.array(zs)
        female = bu[0] < 0.5
        half = (118.0 + 70.0 * ob + 14.0 * (bu[1] - 0.5)) * size
        T = (150.0 + 125.0 * ob + 20.0 * (bu[2] - 0.5)) * size
        hip = 1.06 + (0.06 if female else 0.0) + 0.04 * bu[3]
        belly = 1.0 + 0.10 * ob * bu[4]
        chest_ap = 0.96 + 0.08 * bu[5]
        self.half = half * np.array([hip * 0.98, hip, hip * 0.99, 1.0 * belly, 1.0, 1.0, 1.02, 1.02])
        self.T = T * np.array([0.88, 0.9, 0.94, 1.0 * belly, 1.0, chest_ap, chest_ap, chest_ap])
        self.q_post = 0.43 + 0.04 * bu[6]
        self.beta_x = 0.15 + 0.25 * bu[7]
        self.beta_ant = 0.05 + 0.2 * bu[8]
        self.beta_post = 0.2 + 0.4 * bu[9]
        self.y_back = y_back
        self.x0 = 4.0 * (bu[10] - 0.5)
        self.t_ant = 5.0 + 48.0 * ob ** 1.2 + 6.0 * bu[11]
        self.t_lat = 4.0 + 38.0 * ob ** 1.2 + 5.0 * bu[12]
        self.t_post = 4.0 + 26.0 * ob ** 1.2 + 5.0 * bu[13]
        self.t_mus = 6.0 + 8.0 * bu[14] * (1.0 - 0.4 * ob)
        mus = 1.0 - 0.3 * max(0.0, (p["age"] - 50.0) / 40.0)
        self.t_obl = (8.0 + 9.0 * bu[14]) * mus  # lateral wall: the three oblique muscles
        self.t_rect = (6.0 + 6.0 * bu[13]) * mus  # rectus abdominis
        self.t_pl = 3.0  # posterolateral (latissimus)
        self.skin = 1.6 + 0.8 * bu[15]

    def at(self, z: float) -> dict:
        half = float(np.interp(z, self.zs, self.half))
        T = float(np.interp(z, self.zs, self.T))
        ap = self.q_post * T
        cy = self.y_back - ap
        return dict(cx=self.x0, cy=cy, ax=half, ay_ant=T - ap, ay_post=ap, T=T)


def outline_radius(beta_x, beta_y, c, s):
    """Radius (normalised) of the outline g(u)+g(v)=1, g(t)=(1-b)t^2+b t^4, along (c, s)."""
    A = beta_x * c ** 4 + beta_y * s ** 4
    B = (1 - beta_x) * c ** 2 + (1 - beta_y) * s ** 2
    r2 = np.where(A > 1e-9, (-B + np.sqrt(B * B + 4 * A)) / (2 * A + 1e-12), 1.0 / np.maximum(B, 1e-9))
    return np.sqrt(r2)


# ----------------------------------------------------------------------------- assembly
def build_anatomy(p, rngs) -> Anatomy:
    rng_spine, rng_body, rng_org, rng_metal = rngs
    verts, sac, discs, curve, bmd = build_spine(p, rng_spine)
    lz = {v.name: float(v.center[2]) for v in verts}
    for i, v in enumerate(sac):
        lz[f"S{i + 1}"] = float(v.center[2])
    spine = SpineFunctions(verts, sac)
    bu = p["body_u"]
    # posterior skin: the back rests flat on the table at the sacrum / lower thorax
    ob = p["obesity"]
    def spin_tip(v):
        return v.world((0.0, v.post + v.canal_d + 2.0 + 0.8 * v.sp_len, -0.3 * v.H))
    y_th = max(spin_tip(v)[1] for v in verts if v.name in ("T10", "T11"))
    y_sac = max(v.world((0.0, v.post + v.canal_d + 6.0, 0.0))[1] for v in sac[:3])
    y_back = max(y_th + 12.0 + 28.0 * ob, y_sac + 14.0 + 30.0 * ob) + 6.0 * bu[15]
    body = BodyShape(p, lz, y_back, bu)
    ro = rng_org.random(200)
    tubes = build_soft_tubes(p, verts, sac, spine, body, lz, ro)
    ribs = build_ribs(p, verts, body, ro[150:190])
    ilium = dict(
        width=(1.0 + 0.08 * (ro[191] - 0.5)) * p["size"] * (1.0 + 0.08 * p["obesity"]),
        bmd=bmd["S"] * 0.95,
    )
    # simpler and explicit: the crest lies between mid-L4 and the L4/L5 disc
    l4, l5 = next(v for v in verts if v.name == "L4"), next(v for v in verts if v.name == "L5")
    ilium["z_crest"] = float(l5.center[2] + (l4.center[2] - l5.center[2]) * (0.35 + 0.5 * ro[190]))
    # colon / small bowel field parameters
    bowel = dict(gas=0.05 + 0.25 * ro[192], fill=0.35 + 0.3 * ro[193], oral=p["oral_contrast"],
                 feces=0.3 + 0.5 * ro[194])
    lung = dict(z0=lz["L1"] + (0.2 + 0.7 * ro[195]) * (lz["T12"] - lz["L1"]), depth=30.0 + 30.0 * ro[196])
    table = dict(present=ro[197] < 0.85, gap=3.0 + 8.0 * ro[198], radius=450.0 + 500.0 * ro[199])
    plaques = build_plaques(p, lz, rng_org)
    metal = build_metal(p, verts, rng_metal)
    info = dict(bmd=bmd, y_back=y_back, cobb_A=curve.cobb_A)
    return Anatomy(verts, sac, discs, ribs, tubes, body, spine, ilium, bowel, lung, table, metal, plaques,
                   lz, info)


def build_plaques(p, lz, rng) -> List[dict]:
    """Calcified plaques of the aortic / iliac wall (more and bigger with age)."""
    age = p["age"]
    lam = max(0.0, (age - 45.0) / 8.0)
    n = int(rng.poisson(lam))
    out = []
    zmax, zmin = lz["T12"], lz["S2"]
    for _ in range(min(n, 14)):
        zc = zmin + (zmax - zmin) * rng.random() ** 0.6  # more distally
        out.append(dict(z=zc, len=3.0 + 10.0 * rng.random(), ang=rng.uniform(-math.pi, math.pi),
                        arc=0.3 + 0.9 * rng.random(), thick=0.8 + 1.4 * rng.random(),
                        hu=350.0 + 900.0 * rng.random(), side=int(rng.integers(0, 2))))
    return out


def build_metal(p, verts, rng) -> List[dict]:
    kind = p["metal"]
    u = rng.random(20)
    if not kind:
        return []
    lum = [v for v in verts if v.kind == "L"]
    out: List[dict] = []
    if kind == "screws":
        nlev = 2 + int(u[0] * 2.5)
        start = int(u[1] * (len(lum) - nlev + 1))
        heads = {-1: [], 1: []}
        for v in lum[start:start + nlev]:
            for side in (-1, 1):
                wp = v.H / 2.0 - v.ped_h / 2.0 - 1.0
                entry = (side * (v.canal_w / 2 + v.ped_w / 2 + 3.0), v.post + v.canal_d * 0.8 + 6.0, wp)
                tip = (side * (v.canal_w / 2 - 2.0 + 4.0 * u[2]), -0.55 * v.b, wp - 2.0)
                out.append(dict(type="capsule", v=v, A=entry, B=tip, r=3.2, hu=3000.0))
                head = (entry[0] + side * 1.5, entry[1] + 7.0, entry[2])
                out.append(dict(type="capsule", v=v, A=head, B=(head[0], head[1] + 4.0, head[2]), r=6.0, hu=3000.0))
                heads[side].append(v.world(head))
        for side in (-1, 1):
            pts = heads[side]
            for a, b in zip(pts[:-1], pts[1:]):
                d = b - a
                ext = 0.15 * d
                out.append(dict(type="world_capsule", A=a - ext, B=b + ext, r=2.8, hu=3000.0))
    else:  # vertebroplasty cement
        cands = [v for v in verts if v.name in ("T12", "L1", "L2", "L3")]
        nlev = 1 + int(u[3] * 2)
        for k in range(nlev):
            v = cands[int(u[4 + k] * len(cands)) % len(cands)]
            out.append(dict(type="blob", v=v, c=(2.0 * (u[6 + k] - 0.5) * 4, -0.2 * v.b, 0.0),
                            r=(0.45 * v.a, 0.45 * v.b, 0.32 * v.H), hu=1800.0 + 600 * u[8 + k],
                            seed=int(u[10 + k] * 1e6)))
    return out


def build_ribs(p, verts, body: BodyShape, u) -> List[Rib]:
    ribs: List[Rib] = []
    lens = {"T9": 300.0, "T10": 270.0, "T11": 190.0, "T12": 115.0}
    for k, v in enumerate([v for v in verts if v.name in lens]):
        L = lens[v.name] * p["size"] * (0.85 + 0.3 * u[k])
        if v.name == "T12" and u[4] < 0.2:
            L = 35.0 + 40.0 * u[5]  # hypoplastic 12th rib
        rad = {"T9": 5.0, "T10": 4.8, "T11": 4.3, "T12": 3.8}[v.name]
        slope = 0.30 + 0.12 * u[6 + k]
        for side in (-1.0, 1.0):
            head = v.world((side * (v.a - 2.0), v.post - 3.0, 0.35 * v.H))
            tub = v.world((side * (v.canal_w / 2 + v.ped_w + 13.0), v.post + v.canal_d * 0.8, 0.25 * v.H))
            pts = [head, tub]
            # follow the body wall, from the tubercle round to the front, descending
            z = tub[2]
            bd = body.at(z)
            inset_post = body.skin + body.t_post + body.t_mus * 0.5 + 4.0
            inset_lat = body.skin + body.t_lat + body.t_mus * 0.5 + 2.0
            dx0, dy0 = tub[0] - bd["cx"], tub[1] - bd["cy"]
            th = math.atan2(abs(dx0) / bd["ax"], dy0 / bd["ay_post"])
            th = max(th, 0.45)
            acc = float(np.linalg.norm(tub - head))
            prev = tub
            while acc < L and th < math.pi * 0.95:
                th += 0.06
                bd = body.at(prev[2])
                c, s = math.sin(th), math.cos(th)  # c: lateral share, s: posterior share
                ay = bd["ay_post"] if s > 0 else bd["ay_ant"]
                bx = body.beta_x
                by = body.beta_post if s > 0 else body.beta_ant
                r = float(outline_radius(bx, by, np.array(c), np.array(abs(s))))
                inset = inset_lat * c * c + (inset_post if s > 0 else body.skin + body.t_ant + body.t_mus * 0.5) * s * s
                px = bd["cx"] + side * (r * c * bd["ax"] - inset * c)
                py = bd["cy"] + r * s * ay - inset * s
                step = math.hypot(px - prev[0], py - prev[1])
                pz = prev[2] - slope * step
                cur = np.array([px, py, pz])
                pts.append(cur)
                acc += step
                prev = cur
            pts = np.array(pts)
            rr = np.full(len(pts), rad)
            rr[0] = rad * 1.1
            rr[-1] = rad * 0.8
            cart = len(pts)
            if v.name in ("T9", "T10"):
                cart = max(2, int(len(pts) * 0.8))
            ribs.append(Rib(points=pts, radius=rr, cartilage_from=cart))
    return ribs


def build_soft_tubes(p, verts, sac, sp: SpineFunctions, body: BodyShape, lz, u) -> List[ZTube]:
    """Organs, vessels and muscles as elliptic z-tubes, in painting order."""
    t: List[ZTube] = []
    contrast = p["contrast"]
    size = p["size"]
    age = p["age"]
    zt = lz["T9"] + 60.0
    zb = lz["S5"] - 80.0
    zgrid = np.linspace(zb, zt, 40)
    B = [body.at(z) for z in zgrid]
    ax = np.array([b["ax"] for b in B])
    T = np.array([b["T"] for b in B])
    cyb = np.array([b["cy"] for b in B])
    cx_c, cy_c = sp.canal(zgrid)
    front = sp.body_front(zgrid)
    hw = sp.half_width(zgrid)
    bcx, bcy = sp.body_center(zgrid)
    mus = 1.0 - 0.35 * max(0.0, (age - 50.0) / 40.0)  # muscle mass falls with age
    fat_inf = max(0.0, (age - 40.0) / 50.0)
    ob = p["obesity"]

    def blood_hu(kind):
        if contrast == "arterial":
            return {"artery": 280.0 + 120.0 * u[0], "vein": 70.0 + 40.0 * u[1]}[kind]
        if contrast == "portal":
            return {"artery": 150.0 + 50.0 * u[0], "vein": 130.0 + 40.0 * u[1]}[kind]
        return HU["blood"] + 8.0 * (u[2] - 0.5)

    def organ_hu(name):
        native = {"liver": HU["liver"] - (35.0 * u[3] if u[4] < 0.2 else 0.0) + 6 * (u[5] - 0.5),
                  "spleen": HU["spleen"], "kidney": HU["kidney"], "pancreas": HU["pancreas"] - 15 * fat_inf}[name]
        if contrast == "arterial":
            return native + {"liver": 20.0, "spleen": 60.0, "kidney": 150.0, "pancreas": 70.0}[name]
        if contrast == "portal":
            return native + {"liver": 55.0, "spleen": 65.0, "kidney": 120.0, "pancreas": 45.0}[name]
        return native

    def sel(lo, hi):
        m = (zgrid >= lo) & (zgrid <= hi)
        return m

    # --- back: paraspinal muscle mass behind the spine, then erector spinae with fascia
    m = sel(lz["S4"], zt)
    zz = zgrid[m]
    post_room = body.y_back - body.skin - body.t_post - cy_c[m]
    t.append(ZTube("back_muscle", zz, cx_c[m], cy_c[m] + post_room * 0.45, np.full(m.sum(), (80.0 + 15 * u[45]) * size),
                   np.maximum(post_room * 0.62, 10.0), hu=HU["muscle"], clip="inner", noise=1.0))
    tipy = np.interp(zz, [v.center[2] for v in reversed(verts)],
                     [v.world((0.0, v.post + v.canal_d + 3.0 + 0.85 * v.sp_len, -0.3 * v.H))[1] for v in reversed(verts)])
    skin_y = body.y_back - body.skin
    t.append(ZTube("midline_fat", zz, cx_c[m], (tipy + skin_y) / 2.0, np.full(m.sum(), 5.0 + 6.0 * ob),
                   np.maximum((skin_y - tipy) / 2.0, 1.0), hu=HU["fat"] + 15.0, clip="body"))
    sac_fade = np.clip((zz - lz["S3"]) / (lz["L5"] - lz["S3"]), 0.15, 1.0)
    for side in (-1, 1):
        esx = cx_c[m] + side * (19.0 + 9.0 * u[6]) * size * (0.6 + 0.4 * sac_fade)
        esy = cy_c[m] + post_room * (0.48 + 0.05 * u[7])
        esa = (17.0 + 9.0 * u[8]) * size * mus * sac_fade + 4.0
        esb = np.maximum(post_room * 0.42, 8.0)
        t.append(ZTube(f"erector_{side}", zz, esx, esy, esa, esb, hu=HU["muscle"] - 18 * fat_inf,
                       clip="inner", rim=(1.0, HU["fat"] + 70.0), noise=1.0))
    # --- psoas (from T12 down into the pelvis as ilio-psoas)
    m = sel(lz["S4"], lz["T12"])
    zz = zgrid[m]
    grow = np.clip((lz["T12"] - zz) / (lz["T12"] - lz["L5"]), 0.0, 1.0)
    pel = np.clip((lz["S1"] - zz) / (lz["S1"] - lz["S4"]), 0.0, 1.0)
    rps = (4.0 + (14.0 + 8.0 * u[9]) * grow ** 0.8) * size * mus
    for side in (-1, 1):
        px = bcx[m] + side * (hw[m] + rps * 0.75 + 20.0 * pel * size)
        py = bcy[m] + 4.0 - 35.0 * pel
        t.append(ZTube(f"psoas_{side}", zz, px, py, rps * 0.95, rps * 1.05, hu=HU["muscle"] - 8 * fat_inf,
                       clip="inner", rim=(1.2, HU["fat"]), noise=1.0))
        # quadratus lumborum, lateral to the transverse processes
        mq = sel(lz["L5"], lz["T12"])
        zq = zgrid[mq]
        gq = np.clip((lz["T12"] - zq) / (lz["T12"] - lz["L4"]), 0.0, 1.0)
        qx = bcx[mq] + side * (hw[mq] + 38.0 * size + 6.0 * gq)
        qy = cy_c[mq] + 6.0
        t.append(ZTube(f"quadratus_{side}", zq, qx, qy, (6.0 + 10.0 * np.sin(np.pi * np.clip(gq, 0, 1)) + 2) * mus,
                       np.full(mq.sum(), 9.0) * mus, hu=HU["muscle"] - 10 * fat_inf, clip="inner", noise=1.0))
    # --- kidneys (bean-shaped, tilted), with sinus fat
    for side in (-1, 1):
        if u[10 + side] < 0.02:
            continue  # nephrectomy
        zc = lz["L1"] - (lz["L1"] - lz["L2"]) * (0.4 + 0.5 * u[12 + side]) - (12.0 if side < 0 else 0.0)
        half = (52.0 + 10.0 * u[14 + side]) * size
        zk = np.linspace(zc - half, zc + half, 15)
        e = np.sqrt(np.clip(1.0 - ((zk - zc) / half) ** 2, 0.0, 1.0)) ** 0.8
        hwk = np.interp(zk, zgrid, hw)
        kcx = np.interp(zk, zgrid, bcx) + side * (hwk + 32.0 * size - 0.12 * (zk - zc))
        kcy = np.interp(zk, zgrid, cy_c) - 4.0 + 0.12 * (zk - zc)
        ang = np.full(15, side * (0.55 + 0.25 * u[16 + side]))
        t.append(ZTube(f"kidney_{side}", zk, kcx, kcy, 27.0 * size * e + 0.1, 19.0 * size * e + 0.1,
                       ang=ang, hu=organ_hu("kidney"), clip="cavity", rim=(4.0, HU["fat"])))
        es = np.sqrt(np.clip(1.0 - ((zk - zc) / (half * 0.55)) ** 2, 0.0, 1.0))
        # renal sinus fat opening medially (hilum), with the renal pelvis inside
        t.append(ZTube(f"sinus_{side}", zk, kcx - side * 17.0 * size, kcy - 7.0, 13.0 * size * es + 0.1,
                       7.5 * size * es + 0.1, ang=ang, hu=HU["fat"] + 20, clip="cavity"))
        t.append(ZTube(f"pelvis_{side}", zk, kcx - side * 14.0 * size, kcy - 6.0, 5.0 * size * es + 0.1,
                       3.5 * size * es + 0.1, ang=ang, hu=HU["urine"] + (150.0 if contrast == "portal" and u[46] < 0.3 else 0.0),
                       clip="cavity"))
    # --- liver, gallbladder, spleen, stomach, pancreas
    ztip = lz["L1"] - (0.3 + 1.5 * u[20]) * (lz["L1"] - lz["L2"])
    m = sel(ztip, zt)
    zz = zgrid[m]
    g = np.clip((zz - ztip) / (lz["T10"] - ztip), 0.0, 1.0)
    liver = ZTube("liver", zz, -ax[m] * (0.62 - 0.32 * g), cyb[m] - T[m] * (0.05 * g) + 0.05 * T[m],
                  ax[m] * (0.30 + 0.55 * g ** 0.7), T[m] * (0.22 + 0.34 * g ** 0.6), hu=organ_hu("liver"),
                  clip="cavity", noise=1.0)
    t.append(liver)
    if u[21] < 0.8:
        zg = ztip + 5.0 + 30.0 * u[22]
        zgv = np.linspace(zg - 30.0, zg + 30.0, 7)
        eg = np.sqrt(np.clip(1 - ((zgv - zg) / 30.0) ** 2, 0, 1))
        t.append(ZTube("gallbladder", zgv, np.interp(zgv, zgrid, -ax * 0.28), np.interp(zgv, zgrid, cyb - 0.18 * T),
                       14.0 * eg + 0.1, 14.0 * eg + 0.1, hu=HU["bile"], clip="cavity"))
    zsp = lz["T12"] - 10.0 - 25.0 * u[23]
    m = sel(zsp, zt)
    zz = zgrid[m]
    gs = np.clip((zz - zsp) / 50.0, 0.0, 1.0)
    t.append(ZTube("spleen", zz, ax[m] * 0.58, cyb[m] + 0.22 * T[m], 22.0 * gs + 8 * gs ** 2 + 0.1,
                   50.0 * gs + 0.1, ang=np.full(m.sum(), -0.6), hu=organ_hu("spleen"), clip="cavity"))
    zst = lz["L1"] - 20.0 * u[24]
    m = sel(zst, zt)
    zz = zgrid[m]
    gst = np.clip((zz - zst) / 60.0, 0.0, 1.0)
    t.append(ZTube("stomach", zz, ax[m] * 0.30, cyb[m] - 0.12 * T[m], 45.0 * gst + 0.1, 32.0 * gst + 0.1,
                   ang=np.full(m.sum(), 0.5), hu="stomach", clip="cavity"))
    zp = lz["L1"] + (u[25] - 0.5) * 15.0
    zpv = np.linspace(zp - 16.0, zp + 16.0, 7)
    ep = np.sqrt(np.clip(1 - ((zpv - zp) / 16.0) ** 2, 0, 1))
    t.append(ZTube("pancreas", zpv, np.interp(zpv, zgrid, bcx) + 25.0, np.interp(zpv, zgrid, front) - 32.0,
                   62.0 * ep + 0.1, 11.0 * ep + 0.1, ang=np.full(7, -0.25), hu=organ_hu("pancreas"), clip="cavity"))
    # --- aorta, iliac arteries, IVC, iliac veins
    r_ao = (9.5 + 2.5 * u[26] + 0.04 * max(age - 40, 0)) * size
    if u[27] < 0.03 * max(age - 55, 0) / 10.0:
        r_ao *= 1.8  # aneurysm
    zbif = lz["L4"] + (u[28] - 0.5) * 25.0
    m = sel(zbif, zt)
    zz = zgrid[m]
    aox = bcx[m] + (8.0 + 10.0 * u[29]) * size
    aoy = front[m] - r_ao - 2.5
    aor = r_ao * (1.0 - 0.1 * np.clip((lz["T12"] - zz) / 120.0, 0, 1))
    art = blood_hu("artery")
    t.append(ZTube("aorta", zz, aox, aoy, aor, aor, hu=art, clip="body"))
    m = sel(lz["S4"], zbif + 1.0)
    zz = zgrid[m]
    dz = np.clip((zbif - zz), 0.0, None)
    for side in (-1, 1):
        ix = np.interp(zbif, zgrid, bcx) + (8.0 + 10.0 * u[29]) * size + side * (4.0 + 0.55 * dz)
        ix = np.where(side * ix > 95.0, side * 95.0, ix)
        iy = np.interp(zz, zgrid, front) - r_ao * 0.6 - 2.0 + np.clip(dz - 40.0, 0, None) * -0.3
        t.append(ZTube(f"iliac_a_{side}", zz, ix, iy, np.full(m.sum(), 5.5 * size), np.full(m.sum(), 5.5 * size),
                       hu=art, clip="body"))
    vein = blood_hu("vein")
    zv = lz["L5"] + (u[30] - 0.3) * 15.0
    m = sel(zv, zt)
    zz = zgrid[m]
    t.append(ZTube("ivc", zz, bcx[m] - (16.0 + 10.0 * u[31]) * size, front[m] - 11.0 * size,
                   np.full(m.sum(), 12.0 * size), np.full(m.sum(), (7.0 + 5.0 * u[32]) * size), hu=vein, clip="body"))
    m = sel(lz["S4"], zv + 1.0)
    zz = zgrid[m]
    dz = np.clip((zv - zz), 0.0, None)
    for side in (-1, 1):
        vx = np.interp(zv, zgrid, bcx) - 8.0 + side * (10.0 + 0.5 * dz)
        vx = np.where(side * vx > 90.0, side * 90.0, vx)
        vy = np.interp(zz, zgrid, front) - 3.0 + np.clip(dz - 40.0, 0, None) * -0.3
        t.append(ZTube(f"iliac_v_{side}", zz, vx, vy, np.full(m.sum(), 7.0 * size), np.full(m.sum(), 6.0 * size),
                       hu=vein, clip="body"))
    # --- colon (ascending, descending, transverse, rectum) and bladder
    m = sel(lz["S2"], lz["L1"] + 10 * u[33])
    zz = zgrid[m]
    t.append(ZTube("colon_asc", zz, -ax[m] * (0.56 + 0.1 * u[34]), cyb[m] - 0.02 * T[m],
                   np.full(m.sum(), 24.0 + 10 * u[35]), np.full(m.sum(), 22.0 + 8 * u[35]), hu="colon", clip="cavity"))
    m = sel(lz["S1"], lz["T12"] + 10 * u[36])
    zz = zgrid[m]
    t.append(ZTube("colon_desc", zz, ax[m] * (0.60 + 0.1 * u[37]), cyb[m] + 0.06 * T[m],
                   np.full(m.sum(), 17.0 + 8 * u[38]), np.full(m.sum(), 17.0 + 6 * u[38]), hu="colon", clip="cavity"))
    ztc = lz["L2"] + (u[39] - 0.5) * 40.0
    zc = np.linspace(ztc - 22, ztc + 22, 9)
    ec = np.sqrt(np.clip(1 - ((zc - ztc) / 22.0) ** 2, 0, 1))
    t.append(ZTube("colon_trans", zc, np.zeros(9) + 10.0 * (u[40] - 0.5), np.interp(zc, zgrid, cyb - 0.32 * T),
                   np.interp(zc, zgrid, ax * 0.55) * ec ** 0.3 + 0.1, 20.0 * ec + 0.1, hu="colon", clip="cavity"))
    m = sel(zb, lz["S2"])
    zz = zgrid[m]
    sfr = np.interp(zz, [v.center[2] for v in reversed(sac)], [v.center[1] - v.b for v in reversed(sac)])
    t.append(ZTube("rectum", zz, np.zeros(m.sum()) + 5.0 * (u[41] - 0.5), sfr - 22.0, np.full(m.sum(), 20.0),
                   np.full(m.sum(), 17.0), hu="colon", clip="cavity"))
    zbl = lz["S3"] - 10.0 * u[42]
    m = sel(zb, zbl)
    if m.sum() >= 2:
        zz = zgrid[m]
        gb = np.clip((zbl - zz) / 40.0, 0, 1) ** 0.5
        t.append(ZTube("bladder", zz, np.zeros(m.sum()), cyb[m] - 0.25 * T[m], (35.0 + 25 * u[43]) * gb + 0.1,
                       (28.0 + 15 * u[43]) * gb + 0.1, hu=HU["urine"], clip="cavity"))
    # --- pelvic muscles: gluteal masses behind the iliac wings
    zcr = lz["L5"]
    m = sel(zb, zcr)
    zz = zgrid[m]
    gg = np.clip((zcr - zz) / 60.0, 0, 1)
    for side in (-1, 1):
        t.append(ZTube(f"gluteal_{side}", zz, side * ax[m] * (0.55 + 0.1 * u[44]),
                       body.y_back - body.t_post - 30.0 - 15.0 * gg, (25.0 + 30.0 * gg) * mus + 0.1,
                       (14.0 + 22.0 * gg) * mus + 0.1, hu=HU["muscle"] - 10 * fat_inf, clip="inner", noise=1.0))
    return t
