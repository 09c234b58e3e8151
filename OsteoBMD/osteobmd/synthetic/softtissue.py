"""Soft tissue: body wall layers, organs, vessels, bowel, lungs, iliac wings and table.

Soft tissue changes slowly along z, so it is drawn on 2D axial *key slices* a few mm apart
(at full in-plane resolution, every structure only inside its bounding box) and linearly
interpolated to the CT's slices. Edges are drawn soft (a ramp about one PSF wide), so no
separate blur of the whole volume is needed.
"""

from __future__ import annotations

import math
import numpy as np

from .anatomy import Anatomy
from .constants import HU
from .primitives import F32, axis_range, blend, paint_ellipse, soft_alpha
from .texture import FieldBank


class SoftTissueRenderer:
    def __init__(self, anat: Anatomy, p: dict, X, Y, rng, edge: float):
        self.a = anat
        self.p = p
        self.X = np.asarray(X, F32)
        self.Y = np.asarray(Y, F32)
        self.edge = edge
        ny, nx = len(Y), len(X)
        sp = float(X[1] - X[0])
        self.sp = sp
        self.f_mod = FieldBank(rng, ny, nx, sp, 9.0, 40.0, n=3)
        self.f_loop = FieldBank(rng, ny, nx, sp, 8.5, 26.0, n=4, drift=0.5)
        self.f_gas = FieldBank(rng, ny, nx, sp, 11.0, 30.0, n=3, drift=0.4)
        self.f_fine = FieldBank(rng, ny, nx, sp, 1.3, 8.0, n=3, drift=0.3)
        self.f_warp = FieldBank(rng, ny, nx, sp, 7.0, 35.0, n=3)
        self.fat_inf = max(0.0, (p["age"] - 40.0) / 50.0)
        self._clips = {k: np.zeros((ny, nx), F32) for k in ("body", "inner", "cavity")}
        self.ru = rng.random(20)

    # ------------------------------------------------------------------ one key slice
    def render(self, z: float) -> np.ndarray:
        a = self.a
        X, Y, edge = self.X, self.Y, self.edge
        ny, nx = len(Y), len(X)
        img = np.full((ny, nx), HU["air"], F32)
        fmod = self.f_mod.at(z)
        ffine = self.f_fine.at(z)
        fwarp = self.f_warp.at(z)
        self._table(img, z)
        body = a.body
        bd = body.at(z)
        cx, cy, ax = bd["cx"], bd["cy"], bd["ax"]
        uu = (X - F32(cx)) / F32(ax)
        vy = Y - F32(cy)
        ay = np.where(vy < 0, bd["ay_ant"], bd["ay_post"]).astype(F32)
        vv = vy / ay
        by = np.where(vy < 0, body.beta_ant, body.beta_post).astype(F32)
        bx = F32(body.beta_x)
        gx = (1 - bx) * uu * uu + bx * uu ** 4
        gxd = (2 * (1 - bx) * uu + 4 * bx * uu ** 3) / F32(ax)
        gy = (1 - by) * vv * vv + by * vv ** 4
        gyd = (2 * (1 - by) * vv + 4 * by * vv ** 3) / ay
        # bounding box of the body
        i0, i1 = axis_range(X, cx - ax * 1.02 - 3, cx + ax * 1.02 + 3)
        j0, j1 = axis_range(Y, cy - bd["ay_ant"] - 3, cy + bd["ay_post"] + 3)
        if i1 <= i0 or j1 <= j0:
            return img
        sj, si = slice(j0, j1), slice(i0, i1)
        F = gy[sj, None] + gx[None, si]
        G = np.sqrt(gyd[sj, None] ** 2 + gxd[None, si] ** 2) + F32(1e-6)
        d = (F - 1.0) / G
        d += F32(0.6) * fwarp[sj, si]
        depth = -d
        u2 = uu[si] ** 2
        v2 = vv[sj] ** 2
        S = v2[:, None] + u2[None, :] + F32(1e-6)
        cw = u2[None, :] / S
        tv = np.where(vv[sj] < 0, body.t_ant, body.t_post).astype(F32)
        t_fat = F32(body.t_lat) * cw + tv[:, None] * (1.0 - cw) + F32(body.skin)
        # muscle wall: obliques laterally, rectus in front (linea alba in the midline), thin behind
        xm = np.abs(X[si] - F32(cx))
        tr = F32(body.t_rect) * np.clip((xm - F32(3.0)) / F32(3.0), 0.0, 1.0)
        tmv = np.where(vv[sj, None] < 0, tr[None, :], F32(body.t_pl))
        t_mus = F32(body.t_obl) * cw + tmv * (1.0 - cw)
        a_body = soft_alpha(d, edge)
        a_fat = soft_alpha(F32(body.skin) - depth, edge)
        a_inner = soft_alpha(t_fat - depth, edge)
        a_cav = soft_alpha(t_fat + t_mus - depth, edge)
        # fat planes between the oblique muscle layers
        a_plane = soft_alpha(np.abs(depth - t_fat - F32(0.4) * t_mus) - F32(0.6), edge) * (cw * cw)
        sub = img[sj, si]
        blend(sub, a_body, F32(HU["skin"]))
        blend(sub, a_fat, F32(HU["fat"]) + F32(5.0) * fmod[sj, si])
        blend(sub, a_inner, F32(HU["muscle"]) + F32(3.0) * fmod[sj, si])
        blend(sub, a_plane * a_inner, F32(HU["fat"] + 30.0))
        blend(sub, a_cav, F32(HU["visceral_fat"]) + F32(6.0) * fmod[sj, si])
        clips = self._clips
        for name, al in (("body", a_body), ("inner", a_inner), ("cavity", a_cav)):
            c = clips[name]
            c.fill(0.0)
            c[sj, si] = al
        # --- bowel loops and mesenteric fat in the anterior (peritoneal) cavity
        self._bowel(img, z, clips["cavity"], sj, si, fmod, ffine)
        # --- organs, muscles, vessels
        for t in a.tubes:
            prm = t.at(z)
            if prm is None:
                continue
            tcx, tcy, tax, tay, tang = prm
            clip = clips.get(t.clip) if t.clip else None
            wmm = float(np.clip(0.07 * min(tax, tay), 0.4, 3.0)) if not t.name.startswith(("aorta", "iliac", "ivc")) else 0.3
            if t.rim is not None:
                paint_ellipse(img, X, Y, tcx, tcy, tax, tay, tang, F32(t.rim[1]), edge, clip, grow=t.rim[0],
                              warp=fwarp, warp_mm=wmm)
            hu_fn = None
            if isinstance(t.hu, str):
                hu_fn = self._special(t.hu, tcx, tcy, tax, tay, ffine, z)
                val = 0.0
            else:
                val = F32(t.hu)
                if t.noise:
                    base = F32(t.hu)
                    if t.name.startswith(("erector", "psoas", "quadratus", "gluteal", "back")):
                        fi = self.fat_inf
                        hu_fn = (lambda j0, j1, i0, i1, dd, base=base, fi=fi:
                                 base + F32(4.0) * fmod[j0:j1, i0:i1]
                                 - F32(80.0 * fi) * np.clip(ffine[j0:j1, i0:i1] - F32(1.3), 0, 1))
                    else:
                        hu_fn = (lambda j0, j1, i0, i1, dd, base=base: base + F32(4.0) * fmod[j0:j1, i0:i1])
            paint_ellipse(img, X, Y, tcx, tcy, tax, tay, tang, val, edge, clip, hu_fn=hu_fn, warp=fwarp, warp_mm=wmm)
            if t.name == "aorta" or t.name.startswith("iliac_a"):
                self._plaques(img, z, t.name, tcx, tcy, tax)
        self._ilium(img, z, clips["inner"], ffine)
        self._lung(img, z, bd, sj, si, uu, vv, depth, t_fat + t_mus, clips["cavity"], ffine)
        return img

    # ------------------------------------------------------------------ pieces
    def _table(self, img, z):
        t = self.a.table
        if not t["present"]:
            return
        X, Y = self.X, self.Y
        yt = self.a.body.y_back + t["gap"]
        R = t["radius"]
        i0, i1 = axis_range(X, -230.0, 230.0)
        j0, j1 = axis_range(Y, yt - 60.0, yt + 45.0)
        if i1 <= i0 or j1 <= j0:
            return
        x = X[i0:i1][None, :]
        y = Y[j0:j1][:, None]
        surf = yt - x * x / (2 * R)
        dy = y - surf
        sub = img[j0:j1, i0:i1]
        edge = self.edge
        foam = soft_alpha(np.abs(dy - 17.0) - 16.0, edge) * soft_alpha(np.abs(x) - 215.0, edge)
        blend(sub, foam, F32(-930.0))
        for off in (0.0, 34.0):
            sh = soft_alpha(np.abs(dy - off) - 1.0, edge) * soft_alpha(np.abs(x) - 220.0, edge)
            blend(sub, sh, F32(260.0))

    def _bowel(self, img, z, cav, sj, si, fmod, ffine):
        a = self.a
        bw = a.bowel
        X, Y = self.X, self.Y
        fy = float(a.spine_fn.body_front(z))
        bx = float(a.spine_fn.body_center(z)[0])
        yr = fy - 14.0 + 0.0028 * (X[si] - bx) ** 2  # behind this line: retroperitoneum
        w = np.clip((yr[None, :] - Y[sj, None]) / 12.0, 0.0, 1.0) * cav[sj, si]
        floop = self.f_loop.at(z, sj.start, sj.stop, si.start, si.stop)
        fgas = self.f_gas.at(z, sj.start, sj.stop, si.start, si.stop)
        fine = ffine[sj, si]
        width = F32(0.3 + 0.4 * bw["fill"])
        loops = np.clip((width - np.abs(floop)) / F32(0.15), 0.0, 1.0)
        loop_hu = F32(HU["bowel"]) + F32(8.0) * fine
        if bw["oral"]:
            oral = np.clip((fgas + 0.2) / 0.3, 0.0, 1.0)
            loop_hu = loop_hu + oral * F32(260.0)
        gas = np.clip((fgas - F32(1.6 - 2.0 * bw["gas"])) / F32(0.2), 0.0, 1.0) * np.clip(
            (width * 0.8 - np.abs(floop)) / F32(0.1), 0.0, 1.0)
        hu = F32(HU["visceral_fat"]) + F32(6.0) * fmod[sj, si]
        hu = hu + loops * (loop_hu - hu)
        hu = hu + gas * (F32(-960.0) - hu)
        sub = img[sj, si]
        blend(sub, w, hu)

    def _special(self, kind, cx, cy, ax, ay, ffine, z):
        bw = self.a.bowel
        fg = self.f_gas

        if kind == "colon":
            def fn(j0, j1, i0, i1, d):
                f = ffine[j0:j1, i0:i1]
                g = fg.at(z + 57.0, j0, j1, i0, i1)
                feces = F32(HU["feces"]) + F32(45.0) * f
                bub = np.clip((f - F32(1.0)) / F32(0.3), 0.0, 1.0) * F32(bw["feces"])
                hu = feces + bub * (F32(-800.0) - feces)
                gas = np.clip((g - F32(0.9 - 1.6 * bw["gas"])) / F32(0.25), 0.0, 1.0)
                hu = hu + gas * (F32(-970.0) - hu)
                wall = np.clip((d + F32(1.8)) / F32(1.0), 0.0, 1.0)
                return hu + wall * (F32(30.0) - hu)
            return fn
        if kind == "stomach":
            def fn(j0, j1, i0, i1, d):
                y = self.Y[j0:j1][:, None]
                gas = np.clip(((cy - 0.25 * ay) - y) / 1.5, 0.0, 1.0) * np.ones((1, i1 - i0), F32)
                hu = F32(HU["bowel_fluid"]) + F32(10.0) * ffine[j0:j1, i0:i1]
                hu = hu + gas * (F32(-970.0) - hu)
                wall = np.clip((d + F32(3.0)) / F32(1.0), 0.0, 1.0)
                return hu + wall * (F32(40.0) - hu)
            return fn
        raise ValueError(kind)

    def _plaques(self, img, z, name, cx, cy, r):
        for pl in self.a.plaques:
            if abs(z - pl["z"]) > pl["len"] / 2:
                continue
            if name == "aorta":
                pass
            elif name != f"iliac_a_{1 if pl['side'] else -1}":
                continue
            X, Y = self.X, self.Y
            i0, i1 = axis_range(X, cx - r - 3, cx + r + 3)
            j0, j1 = axis_range(Y, cy - r - 3, cy + r + 3)
            if i1 <= i0 or j1 <= j0:
                continue
            rx = X[i0:i1][None, :] - F32(cx)
            ry = Y[j0:j1][:, None] - F32(cy)
            rr = np.sqrt(rx * rx + ry * ry) + F32(1e-3)
            c = (rx * F32(math.cos(pl["ang"])) + ry * F32(math.sin(pl["ang"]))) / rr
            ang_ok = np.clip((c - F32(math.cos(pl["arc"] / 2))) / F32(0.08), 0.0, 1.0)
            rad = soft_alpha(np.abs(rr - F32(r - pl["thick"] / 2 + 0.3)) - F32(pl["thick"] / 2), self.edge)
            blend(img[j0:j1, i0:i1], ang_ok * rad, F32(pl["hu"]))

    def _ilium(self, img, z, inner, ffine):
        a = self.a
        il = a.ilium
        zc = il["z_crest"]
        if z > zc:
            return
        lz = a.level_z
        sac = a.sacrum
        sp = a.spine_fn
        zS1top = float(sac[0].world((0, 0, sac[0].H / 2))[2])
        zs_sac = [v.center[2] for v in sac]  # descending
        alas = [v.ala for v in sac]
        post_y = [v.world((0, v.post + 4.0, 0))[1] for v in sac]
        zb = lz["S5"] - 30.0
        if z < zb:
            return
        W = il["width"]
        cxs, cys = sp.canal(z)
        if z >= zS1top:
            t = (z - zS1top) / max(zc - zS1top, 1.0)
            xp = alas[0] + 5.0 + 14.0 * t
            yp = float(np.interp(zS1top, zs_sac[::-1], post_y[::-1])) + 4.0 + 6.0 * t
        else:
            xp = float(np.interp(z, zs_sac[::-1], alas[::-1])) + 3.5
            yp = float(np.interp(z, zs_sac[::-1], post_y[::-1])) - 2.0
            lzs = lz["S2"] - 0.3 * (lz["S2"] - lz["S3"])
            if z < lzs:  # greater sciatic notch: the ilium leaves the sacrum
                xp += 0.9 * (lzs - z)
                yp -= 0.5 * (lzs - z)
        zz = [zb, lz["S3"], zS1top, zc]
        xa = W * float(np.interp(z, zz, [92.0, 100.0, 118.0, 126.0]))
        ya = float(cys) - W * float(np.interp(z, zz, [88.0, 78.0, 66.0, 50.0]))
        h = zc - z
        t0 = 0.35 * (1.0 - min(h / 35.0, 1.0))
        t1 = 1.0 - 0.3 * (1.0 - min(h / 22.0, 1.0))
        if z < lz["S3"]:
            t0 = max(t0, min((lz["S3"] - z) / 40.0, 0.6))
        rpost = float(np.interp(z, zz, [9.0, 9.0, 8.0, 6.5]))
        marrow = self.p["bone_slope"] * il["bmd"] + self.p["marrow_offset"] + 15.0
        X, Y, edge = self.X, self.Y, self.edge
        for side in (-1.0, 1.0):
            P0 = np.array([side * xp, yp])
            P2 = np.array([side * xa, ya])
            mid = (P0 + P2) / 2
            dvec = P2 - P0
            n = np.array([dvec[1], -dvec[0]]) / (np.linalg.norm(dvec) + 1e-6)
            if n[0] * side < 0:
                n = -n
            P1 = mid + n * 34.0 * W
            ts = np.linspace(t0, t1, 8)
            pts = ((1 - ts)[:, None] ** 2) * P0 + (2 * (1 - ts) * ts)[:, None] * P1 + (ts ** 2)[:, None] * P2
            rad = np.interp(ts, [0.0, 0.15, 0.45, 0.85, 1.0], [rpost, rpost * 0.75, 3.0, 3.2, 4.5])
            lo = pts.min(0) - 16
            hi = pts.max(0) + 16
            i0, i1 = axis_range(X, lo[0], hi[0])
            j0, j1 = axis_range(Y, lo[1], hi[1])
            if i1 <= i0 or j1 <= j0:
                continue
            gx = X[i0:i1][None, :]
            gy = Y[j0:j1][:, None]
            dmin = np.full((j1 - j0, i1 - i0), 1e3, F32)
            rmin = np.zeros_like(dmin)
            for k in range(len(pts) - 1):
                A, B = pts[k], pts[k + 1]
                ab = B - A
                L2 = float(ab @ ab) + 1e-9
                tt = np.clip(((gx - A[0]) * ab[0] + (gy - A[1]) * ab[1]) / L2, 0.0, 1.0)
                ddx = gx - (A[0] + tt * ab[0])
                ddy = gy - (A[1] + tt * ab[1])
                dd = np.sqrt(ddx * ddx + ddy * ddy)
                rr = rad[k] + tt * (rad[k + 1] - rad[k])
                sd = dd - rr
                m = sd < dmin - rmin
                dmin = np.where(m, sd + rr, dmin)
                rmin = np.where(m, rr, rmin)
            d = (dmin - rmin).astype(F32)
            sub = img[j0:j1, i0:i1]
            # iliacus inside and gluteus medius outside the wing
            blend(sub, soft_alpha(d - F32(13.0), edge) * inner[j0:j1, i0:i1],
                  F32(HU["muscle"] - 20 * self.fat_inf))
            a_b = soft_alpha(d, edge)
            shell = np.clip((d + F32(1.3)) / F32(edge) + F32(0.5), 0.0, 1.0)
            hu = F32(marrow) + F32(20.0) * ffine[j0:j1, i0:i1]
            hu = hu + shell * (F32(950.0) - hu)
            blend(sub, a_b, hu)

    def _lung(self, img, z, bd, sj, si, uu, vv, depth, t_fat, cav, ffine):
        a = self.a
        lg = a.lung
        if z < lg["z0"]:
            return
        L = lg["depth"] * min((z - lg["z0"]) / 45.0, 1.0) ** 0.6
        if L < 0.5:
            return
        u = uu[si][None, :]
        v = vv[sj][:, None]
        s = v / np.sqrt(u * u + v * v + F32(1e-6))
        wpost = np.clip((s + F32(0.2)) / F32(0.7), 0.0, 1.0)
        inner_depth = depth - t_fat
        al = soft_alpha(inner_depth - F32(L) * wpost, self.edge) * cav[sj, si]
        # keep the lung off the spine's surroundings
        cx, cyc = a.spine_fn.canal(z)
        X, Y = self.X, self.Y
        ds = np.sqrt(((X[si] - F32(cx)) / 1.0)[None, :] ** 2 + ((Y[sj] - F32(cyc + 5)) / 1.0)[:, None] ** 2)
        al *= np.clip((ds - F32(45.0)) / F32(4.0), 0.0, 1.0)
        blend(img[sj, si], al, F32(HU["lung"]) + F32(30.0) * ffine[sj, si])


def render_soft_volume(anat: Anatomy, p: dict, X, Y, Z, rng, edge: float, step_mm: float) -> np.ndarray:
    """Soft tissue on the CT grid (nz, ny, nx): key slices every ~step_mm, linear in z."""
    nz = len(Z)
    dzs = float(Z[1] - Z[0]) if nz > 1 else 1.0
    r = SoftTissueRenderer(anat, p, X, Y, rng, edge)
    m = max(1, int(round(step_mm / dzs)))
    V = np.empty((nz, len(Y), len(X)), F32)
    if m == 1:
        for k in range(nz):
            V[k] = r.render(float(Z[k]))
        return V
    keys = list(range(0, nz, m))
    if keys[-1] != nz - 1:
        keys.append(nz - 1)
    prev_k, prev = keys[0], r.render(float(Z[keys[0]]))
    V[prev_k] = prev
    for k in keys[1:]:
        cur = r.render(float(Z[k]))
        n = k - prev_k
        if n > 1:
            diff = cur - prev
            for q in range(1, n):
                np.multiply(diff, F32(q / n), out=V[prev_k + q])
                V[prev_k + q] += prev
        V[k] = cur
        prev_k, prev = k, cur
    return V
