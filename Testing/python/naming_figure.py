"""An overview PNG of level naming on a real CT: the sagittal slab with every found body and
its name, and a coronal bone MIP with each body's rib evidence (arm root -> tip, by verdict)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from osteobmd.ribs import CANNOT_TELL, NO_RIB, RIB  # noqa: E402

COLOURS = {RIB: "lime", NO_RIB: "red", CANNOT_TELL: "orange"}


def save_naming_figure(case, finding, ribs, naming, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ct = case.ct
    hu = sitk.GetArrayViewFromImage(ct)
    sx, sy, sz = ct.GetSpacing()
    ox, _, oz = ct.GetOrigin()
    fig, (ax_sag, ax_cor) = plt.subplots(1, 2, figsize=(15, 8), gridspec_kw={"width_ratios": [1, 1.6]})

    slab = case.canal.slab_indices
    sag = np.asarray(hu[:, :, slab]).mean(axis=2)
    ax_sag.imshow(sag, cmap="gray", vmin=-200, vmax=900, origin="lower", aspect=sz / sy)
    ax_sag.contour(case.class_map == 2, [0.5], colors="cyan", linewidths=0.8)
    for body, name, ev in zip(finding.bodies, naming.names, ribs.bodies):
        ax_sag.contour(body.mask, [0.5], colors="yellow", linewidths=0.8)
        r, c = body.center_rc
        ax_sag.text(c - 60 / sy, r, f"{name or '?'}", color="yellow", fontsize=9, va="center")
        ax_sag.text(c + 25 / sy, r, ev.verdict, color=COLOURS[ev.verdict], fontsize=7, va="center")
    for b in finding.breaks:
        r = 0.5 * (finding.bodies[b].center_rc[0] + finding.bodies[b + 1].center_rc[0])
        ax_sag.axhline(r, color="red", ls="--")
    ax_sag.set_title(f"{case.name}: {naming.anchor or 'no anchor'}", fontsize=10)
    ax_sag.axis("off")
    mip = np.where(np.asarray(hu) > 150, np.asarray(hu), 150).max(axis=1)
    ax_cor.imshow(mip, cmap="gray", vmin=150, vmax=1000, origin="lower", aspect=sz / sx)
    for body, name, ev in zip(finding.bodies, naming.names, ribs.bodies):
        for side in (ev.right, ev.left):
            if side.root_lps is None:
                continue
            (x0, _, z0), (x1, _, z1) = side.root_lps, side.tip_lps
            ax_cor.plot([(x0 - ox) / sx, (x1 - ox) / sx], [(z0 - oz) / sz, (z1 - oz) / sz],
                        color=COLOURS[side.verdict], lw=1.5)
            label = "?" if side.length_mm is None else f"{side.length_mm:.0f}"
            ax_cor.text((x1 - ox) / sx, (z1 - oz) / sz, label, color=COLOURS[side.verdict], fontsize=7)
        r = body.center_rc[0]
        ax_cor.text(2, r, f"{name or '?'}: {ev.verdict}", color=COLOURS[ev.verdict], fontsize=8, va="center")
    ax_cor.set_title("coronal bone MIP; arms from the spine: green rib, red no rib, orange cannot tell "
                     "(numbers: length mm)", fontsize=9)
    ax_cor.axis("off")
    fig.text(0.01, 0.01, naming.message, fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
