"""Everything `osteobmd run` writes into its output folder (names in results.py)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict

import numpy as np
import SimpleITK as sitk

from .config import LABEL_COLORS, VERTEBRA_NAMES
from .patches import Patch
from .progress import ProgressCallback, silent
from .results import (
    CSV_COLUMNS, LABELS_NRRD, OVERVIEW_PNG, PATCHES_NPZ, PATCHES_PNG, RESULTS_CSV, RESULTS_JSON, SCENE_MRB,
    CaseResult, csv_rows,
)

CLASS_COLORS = {"osteoporosis": "#c0392b", "osteopenia": "#e67e22", "normal": "#27ae60", None: "#7f8c8d"}
DISPLAY_WINDOW = (-150.0, 850.0)


def write_outputs(
    result: CaseResult, out_dir: Path, ct: sitk.Image, labels: sitk.Image, patches: Dict[str, Patch],
    progress: ProgressCallback = silent, write_scene: bool = True,
) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress("outputs", 0.0, "writing results")
    write_csv(result, out_dir / RESULTS_CSV)
    sitk.WriteImage(labels, str(out_dir / LABELS_NRRD), True)
    names = [n for n in VERTEBRA_NAMES if n in patches]
    np.savez_compressed(
        out_dir / PATCHES_NPZ,
        names=np.array(names),
        hu=np.stack([patches[n].hu for n in names]) if names else np.zeros((0, 3, 32, 32), np.float32),
        x01=np.stack([patches[n].x01 for n in names]) if names else np.zeros((0, 3, 32, 32), np.float32),
    )
    progress("outputs", 0.3, "drawing the overview")
    draw_patches_png(result, patches, out_dir / PATCHES_PNG)
    draw_overview_png(result, ct, labels, patches, out_dir / OVERVIEW_PNG)
    # results.json marks a finished case (batch resumes on it): written after the files it
    # describes; the scene is built from it.
    result.write_json(out_dir / RESULTS_JSON)
    if write_scene:
        progress("outputs", 0.7, "writing the Slicer scene")
        write_slicer_scene(out_dir, result, ct)


def write_csv(result: CaseResult, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(result))


def write_slicer_scene(out_dir: Path, result: CaseResult, ct: sitk.Image) -> bool:
    """scene.mrb for drag-and-drop into Slicer, when slicer-core is installed (extra `slicer`)."""
    try:
        from OsteoBMDLib.scene_export import write_scene_mrb
    except ImportError:
        result.messages.append(f"{SCENE_MRB} not written: install the 'slicer' extra (slicer-core) for it.")
        return False
    try:
        write_scene_mrb(out_dir, ct_image=ct)
    except Exception as err:  # the measurement stands without the convenience scene
        result.messages.append(f"{SCENE_MRB} could not be written ({type(err).__name__}: {err}).")
        return False
    return True


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
