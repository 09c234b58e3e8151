"""Render synthetic cases next to the real CT: mid-sagittal and axial-at-L2 views.

    python benchmarks/preview_synthetic.py [--seeds 3 21:bmd_mean=55 2:vendor=B] [--vendor A]
                                           [--override key=value ...] [--out docs/images/synthetic_vs_real.png]

Each row is one case (the real CT first): mid-sagittal and axial through the L2 centre, in
the method's window (WL 350 / WW 1000) and in a soft-tissue window (WL 40 / WW 400). All
views are shown in millimetres at the same scale, so anatomy proportions can be compared.
Prints per-case generation time and a few intensity statistics (air, fat, muscle, bone).

Real CT: TotalSegmentator's example case (Apache-2.0; Wasserthal et al., Radiology: AI 2023).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "OsteoBMD"))

REAL = Path("/work/shared/data/real_ct_totalsegmentator_example")
WINDOWS = [(350.0, 1000.0), (40.0, 400.0)]
SAG_EXTENT = (330.0, 300.0)  # (superior-inferior, anterior-posterior) mm shown
AX_EXTENT = (420.0, 340.0)  # (left-right, anterior-posterior) mm shown


def to_lps(img):
    return sitk.DICOMOrient(img, "LPS")


def views(ct: sitk.Image, labels: sitk.Image, l1_value: int):
    """(sagittal s[z, y] with extent, axial a[y, x] with extent) through the spine / L2 centre."""
    a = sitk.GetArrayFromImage(ct).astype(np.float32)
    lab = sitk.GetArrayFromImage(labels)
    sx, sy, sz = ct.GetSpacing()
    ox, oy, oz = ct.GetOrigin()
    body = np.argwhere((lab >= l1_value) & (lab <= l1_value + 3))
    i_mid = int(round(body[:, 2].mean()))
    l2 = np.argwhere(lab == l1_value + 1)
    k2 = int(round(l2[:, 0].mean())) if len(l2) else a.shape[0] // 2
    jc = float(body[:, 1].mean())
    kc = float(body[:, 0].mean())
    # sagittal: rows z (flip so superior is up), columns y (anterior left)
    sag = a[::-1, :, i_mid]
    y0 = oy + (np.arange(a.shape[1])[[0, -1]]) * sy
    z0 = oz + (np.arange(a.shape[0])[[0, -1]]) * sz
    sag_ext = (y0[0], y0[1], z0[0], z0[1])
    ax = a[k2]
    x0 = ox + (np.arange(a.shape[2])[[0, -1]]) * sx
    ax_ext = (x0[0], x0[1], y0[1], y0[0])
    centre = (ox + i_mid * sx, oy + jc * sy, oz + kc * sz)
    return (sag, sag_ext), (ax, ax_ext), centre, a, lab


def tissue_stats(a, lab):
    air = a[a < -900]
    fat = a[(a > -190) & (a < -30)]
    mus = a[(a > 20) & (a < 90)]
    bone = a[(lab >= 1) & (lab <= 4)] if (lab >= 1).any() and lab.max() <= 4 else a[(lab >= 20) & (lab <= 23)]
    f = lambda v: f"{np.median(v):7.1f}" if len(v) else "    n/a"
    return f"air {f(air)}  fat {f(fat)}  muscle {f(mus)}  L1-L4 mean {np.mean(bone):6.1f} sd {np.std(bone):5.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", default=["3", "21:bmd_mean=55", "2:vendor=B", "6:contrast='portal'",
                                                     "9:fracture='L1';fracture_ratio=0.6"],
                    help="SEED or SEED:key=value;key=value (per-case overrides, vendor=B allowed)")
    ap.add_argument("--vendor", default="A")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "synthetic_vs_real.png"))
    ap.add_argument("--override", nargs="*", default=[], help="key=value overrides (python literals)")
    args = ap.parse_args(argv)
    import ast

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from osteobmd.synthetic import make_case

    ov = {}
    for kv in args.override:
        k, v = kv.split("=", 1)
        try:
            ov[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            ov[k] = v
    rows = []
    real_ct = to_lps(sitk.ReadImage(str(REAL / "ct.nii.gz"), sitk.sitkFloat32))
    real_lab = to_lps(sitk.ReadImage(str(REAL / "vertebral_bodies.nii.gz")))
    real_lab = sitk.Resample(real_lab, real_ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    s, ax, c, a, lab = views(real_ct, real_lab, 20)
    print(f"real CT      {tissue_stats(a, lab)}")
    rows.append(("real CT (TotalSegmentator example, 3 mm)", s, ax, c))
    for token in args.seeds:
        seed_s, _, spec = str(token).partition(":")
        seed = int(seed_s)
        cov = dict(ov)
        vendor = args.vendor
        for kv in filter(None, spec.split(";")):
            k, v = kv.split("=", 1)
            try:
                v = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                pass
            if k == "vendor":
                vendor = v
            else:
                cov[k] = v
        t = time.perf_counter()
        case = make_case(seed, vendor, **cov)
        dt = time.perf_counter() - t
        s, ax, c, a, lab = views(case.ct, case.labels, 1)
        m = case.meta
        flags = [f"{f}={m[f]}" for f in ("fracture", "metal", "contrast", "transitional") if m.get(f)]
        title = (f"synthetic seed {seed}, vendor {vendor}: BMD {m['bmd_mean_L1_L3']:.0f}, {m['spacing_mm'][0]:.2f}x"
                 f"{m['slice_mm']:.2f} mm, noise {m['noise_hu']:.0f} {' '.join(flags)}")
        print(f"seed {seed:4d} {dt:5.2f}s {m['size']} {tissue_stats(a, lab)}  {title}")
        rows.append((title, s, ax, c))

    n = len(rows)
    fig, axs = plt.subplots(n, 4, figsize=(16, 4.1 * n))
    for r, (title, (sag, se), (axi, ae), c) in enumerate(rows):
        for w, (wl, ww) in enumerate(WINDOWS):
            lo, hi = wl - ww / 2, wl + ww / 2
            A = axs[r, 2 * w]
            A.imshow(sag, cmap="gray", vmin=lo, vmax=hi, extent=se, interpolation="bilinear")
            A.set_xlim(c[1] - SAG_EXTENT[1] * 0.55, c[1] + SAG_EXTENT[1] * 0.45)
            A.set_ylim(c[2] - SAG_EXTENT[0] / 2, c[2] + SAG_EXTENT[0] / 2)
            A.set_title(f"{title}\nsagittal W{ww:.0f}/L{wl:.0f}", fontsize=8)
            A.set_facecolor("black")
            B = axs[r, 2 * w + 1]
            B.imshow(axi, cmap="gray", vmin=lo, vmax=hi, extent=ae, interpolation="bilinear")
            B.set_xlim(c[0] - AX_EXTENT[0] / 2, c[0] + AX_EXTENT[0] / 2)
            B.set_ylim(c[1] + AX_EXTENT[1] * 0.4, c[1] - AX_EXTENT[1] * 0.6)
            B.set_title(f"axial at L2, W{ww:.0f}/L{wl:.0f}", fontsize=8)
            B.set_facecolor("black")
            for X in (A, B):
                X.tick_params(labelsize=6)
    plt.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plt.savefig(out, dpi=75)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
