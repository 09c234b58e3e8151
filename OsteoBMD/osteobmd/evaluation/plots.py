"""Figures of the evaluation report (matplotlib's Agg canvas, no pyplot, no GUI):
Bland-Altman, scatter with identity and regression lines, confusion-matrix heat map,
and per-vertebra DSC box plots when segmentation was evaluated."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..config import NORMAL_ABOVE, OSTEOPOROSIS_BELOW, VERTEBRA_NAMES
from ..figures import DISCLAIMER

BLAND_ALTMAN_PNG = "bland_altman.png"
SCATTER_PNG = "scatter.png"
CONFUSION_PNG = "confusion.png"
DICE_PNG = "dice.png"


def _finish(fig: Figure) -> Figure:
    """The disclaimer line at the bottom, and the axes laid out above it."""
    canvas = FigureCanvasAgg(fig)
    note = fig.text(0.5, 0.005, DISCLAIMER, ha="center", va="bottom", fontsize=7, color="0.35")
    height = note.get_window_extent(canvas.get_renderer()).height / fig.bbox.height
    fig.tight_layout(rect=(0, height + 0.01, 1, 1))
    return fig


def _why_not(report: dict, key: str) -> str:
    return (report.get("not_computed") or {}).get(key, "undefined")


def bland_altman_figure(report: dict) -> Figure:
    pred = np.array([c["bmd_pred"] for c in report["cases"]])
    ref = np.array([c["bmd_ref"] for c in report["cases"]])
    mean = (pred + ref) / 2
    diff = pred - ref
    ba = report["bland_altman"]
    fig = Figure(figsize=(7.6, 4.5))
    ax = fig.add_subplot(111)
    ax.scatter(mean, diff, s=14, alpha=0.7, color="tab:blue", edgecolors="none")
    ax.axhline(0.0, color="0.7", lw=0.8)
    if ba["bias"] is not None:
        ax.axhline(ba["bias"], color="tab:red", lw=1.2, label=f"bias {ba['bias']:.2f} mg/cm³")
    if ba["loa_low"] is not None:
        for key in ("loa_low", "loa_high"):
            ax.axhline(ba[key], color="tab:red", lw=1, ls="--", gid=key)
        ax.plot([], [], color="tab:red", ls="--",
                label=f"95% limits of agreement\n{ba['loa_low']:.2f} to {ba['loa_high']:.2f} mg/cm³")
    ax.set_xlabel("mean of predicted and reference BMD (mg/cm³)")
    ax.set_ylabel("predicted − reference (mg/cm³)")
    ax.set_title(f"Bland–Altman, n = {report['n_cases']}")
    # Beside the axes: the limit lines span the whole width, so no corner inside is free.
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    return _finish(fig)


def scatter_figure(report: dict) -> Figure:
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
                label=f"fit: pred = {fit['slope']:.3f}·ref {fit['intercept']:+.1f} mg/cm³")
    r = report.get("pearson_r")
    ax.set_title(f"n = {report['n_cases']}, " + (f"r = {r:.3f}" if r is not None else
                                                  f"r not computed\n({_why_not(report, 'pearson_r')})"),
                 fontsize=10)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("reference BMD (mg/cm³)")
    ax.set_ylabel("predicted BMD (mg/cm³)")
    ax.legend(loc="upper left", fontsize=8)
    return _finish(fig)


def confusion_figure(report: dict) -> Figure:
    conf = np.array(report["confusion"])
    classes = report["classes"]
    fig = Figure(figsize=(5, 4.3))
    ax = fig.add_subplot(111)
    im = ax.imshow(conf, cmap="Blues", vmin=0)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, ticks=MaxNLocator(integer=True))
    bar.set_label("cases")
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
    if k is None:
        ax.set_title(f"kappa not computed\n({_why_not(report, 'kappa')})", fontsize=10)
    else:
        ax.set_title(f"kappa {k:.3f}, linear " + (f"{kl:.3f}" if kl is not None else "undefined"), fontsize=10)
    return _finish(fig)


def dice_figure(report: dict) -> Figure:
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
    return _finish(fig)


def write_plots(report: dict, out_dir: Path, notes: List[str]) -> List[str]:
    """Write every plot the report's content allows; returns the file names written."""
    out_dir = Path(out_dir)
    figures: Dict[str, Callable[[dict], Figure]] = {}
    if report.get("cases"):
        if report["n_cases"] >= 2:
            figures[BLAND_ALTMAN_PNG] = bland_altman_figure
            figures[SCATTER_PNG] = scatter_figure
        else:
            notes.append("Bland–Altman and scatter plots skipped: fewer than 2 cases.")
        figures[CONFUSION_PNG] = confusion_figure
    if report.get("seg_cases"):
        figures[DICE_PNG] = dice_figure
    for name, draw in figures.items():
        draw(report).savefig(str(out_dir / name), dpi=120)
    return list(figures)
