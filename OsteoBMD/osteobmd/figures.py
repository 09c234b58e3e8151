"""The pictures of one case: overview.png (sagittal view, patches, BMD table) and patches.png."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import SimpleITK as sitk

from .config import CLASS_COLORS, LABEL_COLORS, VERTEBRA_NAMES
from .patches import Patch
from .results import CaseResult

DISPLAY_WINDOW = (-150.0, 850.0)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _bmd_text(v) -> str:
    return "-" if v.bmd_mg_cm3 is None else f"{v.bmd_mg_cm3:.0f}"


def draw_patches_png(result: CaseResult, patches: Dict[str, Patch], path: Path) -> None:
    plt = _plt()
    names = [n for n in VERTEBRA_NAMES if n in patches] or ["none"]
    fig, axes = plt.subplots(len(names), 3, figsize=(4.2, 1.45 * len(names) + 0.3), squeeze=False)
    for row, name in enumerate(names):
        for col, title in enumerate(("below", "centre", "above")):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if name in patches:
                ax.imshow(patches[name].hu[col], cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1])
            if row == 0:
                ax.set_title(title, fontsize=8)
            if col == 0:
                v = result.vertebra(name)
                ax.set_ylabel(f"{name}\n{_bmd_text(v) if v else ''}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mid_sagittal(ct: sitk.Image, labels: sitk.Image):
    """The sagittal slice with most labelled voxels (else the middle one), flipped head-up."""
    lab = sitk.GetArrayViewFromImage(labels)
    per_i = lab.reshape(-1, lab.shape[2]).astype(bool).sum(axis=0)
    i = int(np.argmax(per_i)) if per_i.any() else lab.shape[2] // 2
    image = sitk.GetArrayViewFromImage(ct)[:, :, i][::-1]
    return i, image, np.asarray(lab[:, :, i][::-1])


def draw_overview_png(result: CaseResult, ct: sitk.Image, labels: sitk.Image, patches: Dict[str, Patch], path: Path) -> None:
    """Mid-sagittal CT with the labels, the patches and the BMD table in one picture."""
    plt = _plt()
    from matplotlib.colors import ListedColormap

    sx, sy, sz = ct.GetSpacing()
    i, image, lab = _mid_sagittal(ct, labels)
    fig = plt.figure(figsize=(11, 5.2))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.25, 0.9, 1.1])
    ax = fig.add_subplot(grid[0])
    nz = image.shape[0]
    extent = (0, image.shape[1] * sy, 0, nz * sz)
    ax.imshow(image, cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1], extent=extent)
    cmap = ListedColormap([(0, 0, 0, 0)] + [(*LABEL_COLORS[n], 0.45) for n in VERTEBRA_NAMES])
    ax.imshow(lab, cmap=cmap, vmin=0, vmax=4, extent=extent, interpolation="nearest")
    origin = np.asarray(ct.GetOrigin())
    for v in result.vertebrae:
        if v.center_lps_mm is None:
            continue
        # Row (mm from the top) and column (mm from the anterior edge) of the centre.
        idx = ct.TransformPhysicalPointToContinuousIndex(v.center_lps_mm)
        y_mm, z_mm = idx[1] * sy, (idx[2] + 0.5) * sz
        ax.text(y_mm - 35, z_mm, f"{v.name} {_bmd_text(v)}", color=LABEL_COLORS[v.name], fontsize=9,
                ha="right", va="center", fontweight="bold")
        if v.patch:
            p = ct.TransformPhysicalPointToContinuousIndex(v.patch.center_lps_mm)
            half = v.patch.size_mm / 2
            ax.plot([p[1] * sy - half, p[1] * sy + half], [(p[2] + 0.5) * sz] * 2, color="cyan", lw=2)
    ax.set_title(f"Sagittal slice x = {origin[0] + i * sx:.0f} mm (LPS)", fontsize=9)
    ax.set_xlabel("anterior → posterior (mm)", fontsize=8)
    ax.set_ylabel("inferior → superior (mm)", fontsize=8)
    ax.tick_params(labelsize=7)

    names = [n for n in VERTEBRA_NAMES if n in patches]
    sub = grid[1].subgridspec(max(1, len(names)), 1)
    for row, name in enumerate(names):
        pax = fig.add_subplot(sub[row])
        pax.imshow(patches[name].hu[1], cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1])
        pax.set_xticks([])
        pax.set_yticks([])
        pax.set_ylabel(name, fontsize=8, color=LABEL_COLORS[name], fontweight="bold")
        if row == 0:
            pax.set_title(f"Trabecular patches ({patches[name].info.size_mm:.0f} mm)", fontsize=9)

    tax = fig.add_subplot(grid[2])
    tax.axis("off")
    rows = []
    for v in result.vertebrae:
        status = "ok" if v.valid else _short("; ".join(v.reasons), 30)
        rows.append([v.name, _bmd_text(v), "yes" if v.name in result.mean_vertebrae and v.valid else "no", status])
    table = tax.table(cellText=rows, colLabels=["level", "BMD mg/cm³", "in mean", "check"],
                      loc="upper center", cellLoc="left", colWidths=[0.13, 0.22, 0.15, 0.55])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.4)
    mean = "—" if result.mean_bmd_mg_cm3 is None else f"{result.mean_bmd_mg_cm3:.0f} mg/cm³"
    tax.text(0.5, 0.42, f"Mean BMD ({'+'.join(result.mean_vertebrae)}): {mean}", ha="center", fontsize=11)
    tax.text(0.5, 0.30, (result.classification or "no valid measurement").upper(), ha="center",
             fontsize=17, fontweight="bold", color=CLASS_COLORS.get(result.classification, "#7f8c8d"))
    tax.text(0.5, 0.20, "< 80 osteoporosis · 80–120 osteopenia · > 120 normal (ACR)", ha="center", fontsize=7)
    tax.text(0.5, 0.02, "\n".join(m[:80] for m in result.messages[:4]), ha="center", va="bottom", fontsize=6.5,
             color="#555555", wrap=True)
    fig.suptitle(f"OsteoBMD — case {result.case}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
