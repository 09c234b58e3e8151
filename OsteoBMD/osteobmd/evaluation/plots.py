"""Figures of the evaluation report (matplotlib's Agg canvas, no pyplot, no GUI):
Bland-Altman, scatter with identity and regression lines, confusion-matrix heat map,
and per-vertebra DSC box plots when segmentation was evaluated."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..config import NORMAL_ABOVE, OSTEOPOROSIS_BELOW, VERTEBRA_NAMES

BLAND_ALTMAN_PNG = "bland_altman.png"
SCATTER_PNG = "scatter.png"
CONFUSION_PNG = "confusion.png"
DICE_PNG = "dice.png"


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    return path


def bland_altman_plot(report: dict, path: Path) -> Path:
    pred = np.array([c["bmd_pred"] for c in report["cases"]])
    ref = np.array([c["bmd_ref"] for c in report["cases"]])
    mean = (pred + ref) / 2
    diff = pred - ref
    ba = report["bland_altman"]
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(111)
    ax.scatter(mean, diff, s=14, alpha=0.7, color="tab:blue", edgecolors="none")
    ax.axhline(0.0, color="0.7", lw=0.8)
    if ba["bias"] is not None:
        ax.axhline(ba["bias"], color="tab:red", lw=1.2, label=f"bias {ba['bias']:.2f}")
    if ba["loa_low"] is not None:
        for key in ("loa_low", "loa_high"):
            ax.axhline(ba[key], color="tab:red", lw=1, ls="--")
        ax.plot([], [], color="tab:red", ls="--",
                label=f"95% LoA {ba['loa_low']:.2f} to {ba['loa_high']:.2f}")
    ax.set_xlabel("mean of predicted and reference BMD (mg/cm³)")
    ax.set_ylabel("predicted − reference (mg/cm³)")
    ax.set_title(f"Bland–Altman, n = {report['n_cases']}")
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def scatter_plot(report: dict, path: Path) -> Path:
    pred = np.array([c["bmd_pred"] for c in report["cases"]])
    ref = np.array([c["bmd_ref"] for c in report["cases"]])
    lo = float(min(pred.min(), ref.min()))
    hi = float(max(pred.max(), ref.max()))
    pad = max(5.0, 0.05 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    fig = Figure(figsize=(5.2, 5))
    ax = fig.add_subplot(111)
    for t in (OSTEOPOROSIS_BELOW, NORMAL_ABOVE):
        ax.axvline(t, color="0.85", lw=0.8)
        ax.axhline(t, color="0.85", lw=0.8)
    ax.scatter(ref, pred, s=14, alpha=0.7, color="tab:blue", edgecolors="none")
    ax.plot([lo, hi], [lo, hi], color="0.4", ls="--", lw=1, label="identity")
    fit = report.get("regression")
    if fit:
        ax.plot([lo, hi], [fit["slope"] * lo + fit["intercept"], fit["slope"] * hi + fit["intercept"]],
                color="tab:red", lw=1.2,
                label=f"fit: pred = {fit['slope']:.3f}·ref {fit['intercept']:+.1f}")
    r = report.get("pearson_r")
    title = f"n = {report['n_cases']}" + (f", r = {r:.3f}" if r is not None else "")
    ax.set_title(title)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("reference BMD (mg/cm³)")
    ax.set_ylabel("predicted BMD (mg/cm³)")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def confusion_plot(report: dict, path: Path) -> Path:
    conf = np.array(report["confusion"])
    classes = report["classes"]
    fig = Figure(figsize=(5, 4.3))
    ax = fig.add_subplot(111)
    im = ax.imshow(conf, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    top = conf.max() if conf.size else 0
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            ax.text(j, i, str(conf[i, j]), ha="center", va="center",
                    color="white" if top and conf[i, j] > 0.6 * top else "black")
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=20)
    ax.set_yticks(range(len(classes)))
    ax.set_yticklabels(classes)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    k = report.get("kappa")
    kl = report.get("kappa_linear")
    ax.set_title("kappa " + (f"{k:.3f}" if k is not None else "n/a")
                 + ", linear " + (f"{kl:.3f}" if kl is not None else "n/a"))
    return _save(fig, path)


def dice_plot(report: dict, path: Path) -> Path:
    cases = report.get("seg_cases", [])
    data = [[c[f"dice_{v}"] for c in cases if c.get(f"dice_{v}") is not None] for v in VERTEBRA_NAMES]
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot(111)
    ax.boxplot([d if d else [np.nan] for d in data])
    ax.set_xticks(range(1, len(VERTEBRA_NAMES) + 1))
    ax.set_xticklabels(VERTEBRA_NAMES)
    ax.axhline(0.5, color="tab:red", ls="--", lw=1, label="valid: DSC > 0.5")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("Dice similarity coefficient")
    ax.set_title(f"Segmentation, n = {report.get('n_seg_cases', len(cases))}")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def write_plots(report: dict, out_dir: Path, notes: List[str]) -> List[str]:
    """Write every plot the report's content allows; returns the file names written."""
    out_dir = Path(out_dir)
    written: List[str] = []
    if report.get("cases"):
        if report["n_cases"] >= 2:
            bland_altman_plot(report, out_dir / BLAND_ALTMAN_PNG)
            scatter_plot(report, out_dir / SCATTER_PNG)
            written += [BLAND_ALTMAN_PNG, SCATTER_PNG]
        else:
            notes.append("Bland–Altman and scatter plots skipped: fewer than 2 cases.")
        confusion_plot(report, out_dir / CONFUSION_PNG)
        written.append(CONFUSION_PNG)
    if report.get("seg_cases"):
        dice_plot(report, out_dir / DICE_PNG)
        written.append(DICE_PNG)
    return written
