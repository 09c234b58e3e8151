"""The pictures of one case: overview.png (sagittal view, patches, verdict, level table) and
patches.png.

They must not mislead: a level that failed its checks is greyed and struck through wherever
its number is drawn, marked "not valid" with its reasons in wrapped text; every number has
its unit; text is measured with the renderer and wrapped, and the figure grows to hold it,
so nothing is cut or drawn over something else; and every picture says it is research
software. Matplotlib's object API only (no pyplot state).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from .config import CLASS_COLORS, LABEL_COLORS, NORMAL_ABOVE, OSTEOPOROSIS_BELOW, VERTEBRA_NAMES
from .io import to_lps
from .patches import Patch
from .results import CaseResult, naming_verdict, notes_besides_naming

DISCLAIMER = "Research use only — not a medical device."
DISPLAY_WINDOW = (-150.0, 850.0)
NOT_VALID = "not valid"
INVALID_COLOR = "#8c8c8c"  # a level's number that failed its checks
WARNING_COLOR = "#a93226"  # "not valid" and its reasons
WARNING_ON_IMAGE = "#ff9c8f"  # the same, light enough to read on the CT
NOTE_COLOR = "#444444"
DPI = 100
STRIKE_GID = "strike"
# Verdict of the level naming -> colour: checked, doubtful, not checked.
NAMING_COLORS = {True: "#1e8449", False: WARNING_COLOR, None: "#b9770e"}


# --------------------------------------------------------------------------- layout
class Sheet:
    """A figure whose content is placed in inches from its top-left corner and whose height
    follows the content: texts are measured with the renderer when added, and placed once
    `finish` knows the height."""

    def __init__(self, width_in: float):
        self.fig = Figure(figsize=(width_in, 8.0), dpi=DPI)
        self.canvas = FigureCanvasAgg(self.fig)
        self.renderer = self.canvas.get_renderer()
        self.width = width_in
        self.height: Optional[float] = None
        self._texts: List[Tuple[Text, float, float]] = []
        self._boxes: List[Tuple[float, float, float, float, dict]] = []
        self._strikes: List[Text] = []
        self._widths: Dict[Tuple[str, float, str], float] = {}

    def text_width(self, s: str, size: float, weight: str = "normal") -> float:
        """Width in inches of one line of text (measured once per string: the renderer is slow)."""
        key = (s, size, weight)
        if key not in self._widths:
            prop = FontProperties(size=size, weight=weight)
            self._widths[key] = self.renderer.get_text_width_height_descent(s, prop, ismath=False)[0] / DPI
        return self._widths[key]

    def wrap(self, s: str, width_in: float, size: float, weight: str = "normal") -> str:
        """`s` broken into lines no wider than `width_in` (a word longer than a line is split).
        Lines are filled from word widths; each line is then measured whole, and one that
        came out too wide (kerning) loses its last word."""
        space = self.text_width("a a", size, weight) - self.text_width("aa", size, weight)
        lines: List[str] = []
        for paragraph in str(s).split("\n"):
            words: List[str] = []
            for word in paragraph.split(" "):
                while len(word) > 1 and self.text_width(word, size, weight) > width_in:
                    cut = len(word) - 1
                    while cut > 1 and self.text_width(word[:cut], size, weight) > width_in:
                        cut -= 1
                    words.append(word[:cut])
                    word = word[cut:]
                words.append(word)
            while words:
                n, used = 1, self.text_width(words[0], size, weight)
                while n < len(words) and used + space + self.text_width(words[n], size, weight) <= width_in:
                    used += space + self.text_width(words[n], size, weight)
                    n += 1
                while n > 1 and self.text_width(" ".join(words[:n]), size, weight) > width_in:
                    n -= 1
                lines.append(" ".join(words[:n]))
                words = words[n:]
        return "\n".join(lines)

    def text(self, x: float, y: float, s: str, size: float, width: Optional[float] = None,
             ha: str = "left", weight: str = "normal", color: str = "black", strike: bool = False,
             gid: Optional[str] = None) -> float:
        """Text whose top is at (x, y) inches, wrapped to `width`; returns its height in inches.
        For ha="center" / "right", x is the centre / right end."""
        if width is not None:
            s = self.wrap(s, width, size, weight)
        t = self.fig.text(0, 0, s, fontsize=size, ha=ha, va="top", fontweight=weight, color=color,
                          parse_math=False, linespacing=1.25, gid=gid)
        self._texts.append((t, x, y))
        if strike:
            self._strikes.append(t)
        return t.get_window_extent(self.renderer).height / DPI

    def box(self, x0: float, y0: float, x1: float, y1: float, **style) -> None:
        """A rectangle (cell background or border) between two corners, inches from the top."""
        self._boxes.append((x0, y0, x1, y1, style))

    def finish(self, height_in: float) -> None:
        self.height = height_in
        self.fig.set_size_inches(self.width, height_in)
        for t, x, y in self._texts:
            t.set_position(self.frac(x, y))
        for x0, y0, x1, y1, style in self._boxes:
            (fx0, fy1), (fx1, fy0) = self.frac(x0, y0), self.frac(x1, y1)
            self.fig.add_artist(Rectangle((fx0, fy0), fx1 - fx0, fy1 - fy0, transform=self.fig.transFigure,
                                          **style))
        for t in self._strikes:
            strike_through(self.fig, t, self.renderer)

    def frac(self, x: float, y: float) -> Tuple[float, float]:
        """Inches from the top-left -> figure fraction (after `finish`)."""
        return x / self.width, 1.0 - y / self.height

    def axes(self, x: float, y: float, w: float, h: float):
        """Axes whose top-left corner is at (x, y) inches, w x h inches (after `finish`)."""
        fx, fy = self.frac(x, y + h)
        return self.fig.add_axes((fx, fy, w / self.width, h / self.height))

    def disclaimer(self, y: float) -> float:
        return self.text(self.width / 2, y, DISCLAIMER, 8.5, ha="center", color=NOTE_COLOR, gid="disclaimer")


def strike_through(fig: Figure, text: Text, renderer) -> Line2D:
    """A line through every line of `text` (in its colour): the number is not to be read as valid."""
    box = text.get_window_extent(renderer)
    n_lines = text.get_text().count("\n") + 1
    to_fig = fig.transFigure.inverted()
    line = None
    for k in range(n_lines):
        y = box.y1 - (k + 0.55) * box.height / n_lines
        (x0, fy), (x1, _) = to_fig.transform([(box.x0 - 1, y), (box.x1 + 1, y)])
        line = Line2D([x0, x1], [fy, fy], transform=fig.transFigure, color=text.get_color(), lw=1.2,
                      gid=STRIKE_GID)
        fig.add_artist(line)
    return line


# --------------------------------------------------------------------------- what is drawn
def bmd_text(value: Optional[float]) -> str:
    return "no BMD" if value is None else f"{value:.1f} mg/cm³"


def is_valid(v) -> bool:
    return bool(v.valid) and v.bmd_mg_cm3 is not None


# --------------------------------------------------------------------------- overview.png
def _oriented(ct: sitk.Image, labels: sitk.Image) -> Tuple[sitk.Image, sitk.Image]:
    """CT and labels with LPS axes (i right->left, j anterior->posterior, k inferior->superior),
    whatever the files' own direction; labels moved onto the CT's grid if theirs differs."""
    same_grid = (labels.GetSize() == ct.GetSize()
                 and np.allclose(labels.GetOrigin(), ct.GetOrigin(), atol=1e-3)
                 and np.allclose(labels.GetSpacing(), ct.GetSpacing(), atol=1e-5)
                 and np.allclose(labels.GetDirection(), ct.GetDirection(), atol=1e-5))
    if not same_grid:
        labels = sitk.Resample(labels, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
    return to_lps(ct), to_lps(labels)


def _sagittal(ax, result: CaseResult, ct: sitk.Image, labels: sitk.Image, renderer) -> None:
    """The sagittal slice through the most labelled voxels, in LPS millimetres, with each
    level's BMD beside it (greyed, struck through and marked "not valid" when it failed)."""
    ct, labels = _oriented(ct, labels)
    lab = sitk.GetArrayViewFromImage(labels)  # [k, j, i]
    per_i = lab.reshape(-1, lab.shape[2]).astype(bool).sum(axis=0)
    i = int(np.argmax(per_i)) if per_i.any() else lab.shape[2] // 2
    image = np.asarray(sitk.GetArrayViewFromImage(ct)[:, :, i])
    sx, sy, sz = ct.GetSpacing()
    ox, oy, oz = ct.GetOrigin()
    extent = (oy - sy / 2, oy + (image.shape[1] - 0.5) * sy, oz - sz / 2, oz + (image.shape[0] - 0.5) * sz)
    ax.imshow(image, cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1], extent=extent,
              origin="lower", interpolation="bilinear")
    cmap = ListedColormap([(0, 0, 0, 0)] + [(*LABEL_COLORS[n], 0.45) for n in VERTEBRA_NAMES])
    ax.imshow(np.asarray(lab[:, :, i]), cmap=cmap, vmin=0, vmax=4, extent=extent, origin="lower",
              interpolation="nearest")
    ax.set_xlim(extent[0], extent[1])
    ax.set_autoscale_on(False)
    rows = np.flatnonzero(lab[:, :, i].any(axis=1))
    if rows.size:  # the spine with 70 mm around it, not the whole body
        ax.set_ylim(max(extent[2], oz + rows[0] * sz - 70), min(extent[3], oz + rows[-1] * sz + 70))
    ax.set_anchor("N")
    ax.set_title(f"Sagittal slice x = {ox + i * sx:.0f} mm (LPS)", fontsize=9)
    ax.set_xlabel("anterior → posterior, y (mm)", fontsize=8)
    ax.set_ylabel("inferior → superior, z (mm)", fontsize=8)
    ax.tick_params(labelsize=7)

    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    placed = []
    for v in result.vertebrae:
        if v.center_lps_mm is None:
            continue
        _, y_mm, z_mm = v.center_lps_mm
        if v.patch:
            p = v.patch.center_lps_mm
            half = v.patch.size_mm / 2
            ax.plot([p[1] - half, p[1] + half], [p[2]] * 2, color="cyan", lw=2)
        valid = is_valid(v)
        color = LABEL_COLORS[v.name] if valid else INVALID_COLOR
        label = ax.text(y_mm - 25, z_mm, f"{v.name}  {bmd_text(v.bmd_mg_cm3)}", color=color, fontsize=8.5,
                        ha="right", va="bottom", fontweight="bold", path_effects=outline, parse_math=False,
                        gid=f"level {v.name}")
        tag = None
        if not valid:
            tag = ax.text(y_mm - 25, z_mm, NOT_VALID, color=WARNING_ON_IMAGE, fontsize=8, ha="right", va="top",
                          fontweight="bold", path_effects=outline, gid=f"not valid {v.name}")
        placed.append((z_mm, label, tag, (y_mm, z_mm), valid))
    _keep_labels_apart(ax, placed, renderer)


def _keep_labels_apart(ax, placed, renderer) -> None:
    """Moves the level labels inside the axes and apart from each other (top to bottom),
    draws a leader to the level's centre from a label that had to move, and strikes the
    invalid ones through."""
    ax.apply_aspect()  # the axes box is final before anything is measured in pixels
    box = ax.get_window_extent(renderer)
    to_data = ax.transData.inverted()
    ceiling = box.y1 - 2  # a label's top may not be above this, going down the list
    for _, label, tag, centre, valid in sorted(placed, key=lambda p: -p[0]):
        parts = [t for t in (label, tag) if t is not None]
        extents = [t.get_window_extent(renderer) for t in parts]
        top, bottom = max(e.y1 for e in extents), min(e.y0 for e in extents)
        left, right = min(e.x0 for e in extents), extents[0].x1
        dy = min(0.0, ceiling - top)
        dy += max(0.0, box.y0 + 2 - (bottom + dy))
        dx = max(0.0, box.x0 + 3 - left)
        if dx or dy:
            for t in parts:
                px, py = ax.transData.transform(t.get_position())
                t.set_position(to_data.transform((px + dx, py + dy)))
            start = to_data.transform((right + dx + 2, (top + bottom) / 2 + dy))
            ax.plot([start[0], centre[0]], [start[1], centre[1]], color=label.get_color(), lw=0.8)
        ceiling = bottom + dy - 3
        if not valid:
            strike_through(ax.figure, label, renderer)


def _mean_label(result: CaseResult) -> str:
    used = [n for n in result.mean_vertebrae if (v := result.vertebra(n)) is not None and is_valid(v)]
    skipped = [n for n in result.mean_vertebrae if n not in used]
    text = f"Mean BMD over {'+'.join(used)}"
    if skipped:
        text += f" ({', '.join(skipped)} {NOT_VALID})"
    return text


def _verdict(sheet: Sheet, x: float, y: float, width: float, result: CaseResult) -> float:
    """The class, large, only when the mean is valid; otherwise "No valid measurement" and why."""
    if result.valid and result.mean_bmd_mg_cm3 is not None:
        y += sheet.text(x, y, f"{_mean_label(result)}: {bmd_text(result.mean_bmd_mg_cm3)}", 12, width,
                        gid="mean") + 0.05
        y += sheet.text(x, y, (result.classification or "").upper(), 22, width, weight="bold",
                        color=CLASS_COLORS.get(result.classification, INVALID_COLOR), gid="class") + 0.04
        y += sheet.text(x, y, f"ACR: < {OSTEOPOROSIS_BELOW:g} mg/cm³ osteoporosis · "
                              f"{OSTEOPOROSIS_BELOW:g}–{NORMAL_ABOVE:g} mg/cm³ osteopenia · "
                              f"> {NORMAL_ABOVE:g} mg/cm³ normal", 7.5, width, color=NOTE_COLOR)
        return y
    y += sheet.text(x, y, "NO VALID MEASUREMENT", 18, width, weight="bold", color=INVALID_COLOR,
                    gid="class") + 0.05
    why = []
    for n in result.mean_vertebrae:
        v = result.vertebra(n)
        for reason in (["not found"] if v is None else v.reasons or ["no BMD"]):
            if reason not in why:
                why.append(reason)
    y += sheet.text(x, y, f"None of {', '.join(result.mean_vertebrae)} passed the checks:", 9, width,
                    color=WARNING_COLOR) + 0.03
    for reason in why:
        y += sheet.text(x + 0.12, y, f"• {reason}", 8.5, width - 0.12, color=WARNING_COLOR, gid="reason")
    return y


def _level_table(sheet: Sheet, x: float, y: float, width: float, result: CaseResult) -> float:
    """level | BMD | in mean | check, each cell wrapped to its column; invalid rows greyed."""
    pad = 0.06
    widths = [0.55, 1.2, 0.7]
    widths.append(width - sum(widths))
    edges = np.concatenate([[x], x + np.cumsum(widths)])
    size = 8.5

    def row(cells, y, fill=None):
        heights = [sheet.text(edges[c] + pad, y + pad, text, size, widths[c] - 2 * pad, **style)
                   for c, (text, style) in enumerate(cells)]
        h = max(heights) + 2 * pad
        sheet.box(x, y, x + width, y + h, facecolor=fill or "none", edgecolor="#999999", lw=0.6)
        for e in edges[1:-1]:
            sheet.box(e, y, e, y + h, facecolor="none", edgecolor="#999999", lw=0.6)
        return y + h

    y = row([(h, {"weight": "bold"}) for h in ("level", "BMD", "in mean", "check")], y, fill="#e8e8e8")
    for v in result.vertebrae:
        valid = is_valid(v)
        in_mean = valid and v.name in result.mean_vertebrae
        check = "ok" if valid else f"{NOT_VALID}: " + ("; ".join(v.reasons) or "no BMD")
        grey = {} if valid else {"color": INVALID_COLOR}
        y = row([
            (v.name, {"weight": "bold", "color": LABEL_COLORS.get(v.name, "black") if valid else INVALID_COLOR}),
            (bmd_text(v.bmd_mg_cm3), {**grey, "strike": not valid and v.bmd_mg_cm3 is not None,
                                      "gid": f"bmd {v.name}"}),
            ("yes" if in_mean else "no", grey),
            (check, {} if valid else {"color": WARNING_COLOR, "gid": f"reason {v.name}"}),
        ], y, fill=None if valid else "#f2f2f2")
    return y


def overview_figure(result: CaseResult, ct: sitk.Image, labels: sitk.Image, patches: Dict[str, Patch]) -> Figure:
    """Sagittal view, the patches, the verdict, the level naming, the level table and the notes."""
    sheet = Sheet(13.0)
    margin, top = 0.25, 0.65
    panel_x, panel_w = 7.45, 13.0 - 7.45 - margin
    sheet.text(margin, 0.15, f"OsteoBMD — case {result.case}", 13, 7.0, weight="bold")
    y = top
    y = _verdict(sheet, panel_x, y, panel_w, result) + 0.2
    verdict, lines = naming_verdict(result)
    y += sheet.text(panel_x, y, lines[0], 9.5, panel_w, weight="bold", color=NAMING_COLORS[verdict],
                    gid="naming") + 0.03
    for line in lines[1:]:
        y += sheet.text(panel_x, y, line, 8.5, panel_w, color=NAMING_COLORS[verdict]) + 0.02
    y = _level_table(sheet, panel_x, y + 0.15, panel_w, result) + 0.15
    notes = notes_besides_naming(result)  # the naming's own notes stand above, with its verdict
    if notes:
        y += sheet.text(panel_x, y, "Notes", 8.5, panel_w, weight="bold", color=NOTE_COLOR) + 0.03
        for message in notes:
            y += sheet.text(panel_x, y, f"• {message}", 8, panel_w, color=NOTE_COLOR) + 0.02
    names = [n for n in VERTEBRA_NAMES if n in patches]
    if names:
        sheet.text(6.35, top, f"Trabecular patches\n{patches[names[0]].info.size_mm:.1f} mm, centre slice", 9, 1.8,
                   ha="center")
    height = max(7.0, y + 0.2 + 0.3)
    sheet.disclaimer(height - 0.3)
    sheet.finish(height)

    image_h = height - top - 0.3 - 0.75
    ax = sheet.axes(0.75, top + 0.15, 4.6, image_h - 0.15)
    _sagittal(ax, result, ct, labels, sheet.renderer)
    if names:
        size = min(1.25, (image_h - 0.4) / len(names) - 0.3)
        for row, name in enumerate(names):
            v = result.vertebra(name)
            valid = v is not None and is_valid(v)
            pax = sheet.axes(6.35 - size / 2, top + 0.7 + row * (size + 0.3), size, size)
            pax.imshow(patches[name].hu[1], cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1])
            pax.set_xticks([])
            pax.set_yticks([])
            pax.set_title(name if valid else f"{name}  {NOT_VALID}", fontsize=8, fontweight="bold",
                          color=LABEL_COLORS[name] if valid else INVALID_COLOR)
            for spine in pax.spines.values():
                spine.set_edgecolor(LABEL_COLORS[name] if valid else INVALID_COLOR)
                spine.set_linewidth(2 if valid else 1)
            if not valid:  # greyed out
                pax.add_patch(Rectangle((0, 0), 1, 1, transform=pax.transAxes, color="white", alpha=0.45))
    return sheet.fig


def draw_overview_png(result: CaseResult, ct: sitk.Image, labels: sitk.Image, patches: Dict[str, Patch],
                      path: Path) -> None:
    overview_figure(result, ct, labels, patches).savefig(str(path), dpi=DPI)


# --------------------------------------------------------------------------- patches.png
def patches_figure(result: CaseResult, patches: Dict[str, Patch]) -> Figure:
    """Each level's three axial patch slices beside its BMD, patch mean HU and check."""
    sheet = Sheet(8.0)
    margin, text_w, image = 0.25, 3.0, 1.35
    sheet.text(margin, 0.15, f"Trabecular patches — case {result.case}", 12, 7.5, weight="bold")
    any_patch = next(iter(patches.values()), None)
    subtitle = f"display window {DISPLAY_WINDOW[0]:.0f} HU to {DISPLAY_WINDOW[1]:.0f} HU"
    if any_patch is not None:
        subtitle = f"{any_patch.info.size_mm:.1f} mm squares, axial; " + subtitle
    y = 0.5 + sheet.text(margin, 0.5, subtitle, 8.5, 7.5, color=NOTE_COLOR) + 0.3
    image_rows = []
    for v in result.vertebrae:
        valid = is_valid(v)
        grey = {} if valid else {"color": INVALID_COLOR}
        h = sheet.text(margin, y, v.name, 11, text_w, weight="bold",
                       color=LABEL_COLORS.get(v.name, "black") if valid else INVALID_COLOR) + 0.04
        h += sheet.text(margin, y + h, bmd_text(v.bmd_mg_cm3), 10, text_w, **grey,
                        strike=not valid and v.bmd_mg_cm3 is not None, gid=f"bmd {v.name}") + 0.04
        mean_hu = v.patch.mean_hu if v.patch else None
        if mean_hu is not None:
            h += sheet.text(margin, y + h, f"patch mean {mean_hu:.0f} HU", 8.5, text_w, **grey,
                            strike=not valid, gid=f"hu {v.name}") + 0.04
        if not valid:
            h += sheet.text(margin, y + h, f"{NOT_VALID}: " + ("; ".join(v.reasons) or "no BMD"), 8.5, text_w,
                            color=WARNING_COLOR, gid=f"reason {v.name}")
        elif v.name not in result.mean_vertebrae:
            h += sheet.text(margin, y + h, "valid, not in the mean", 8.5, text_w, color=NOTE_COLOR)
        image_rows.append((v, y + 0.22))
        y += max(h, image + 0.3) + 0.2
    height = y + 0.35
    sheet.disclaimer(height - 0.3)
    sheet.finish(height)
    for v, row_y in image_rows:
        patch = patches.get(v.name)
        if patch is None:
            continue
        valid = is_valid(v)
        for col in range(3):
            ax = sheet.axes(margin + text_w + 0.3 + col * (image + 0.12), row_y, image, image)
            ax.imshow(patch.hu[col], cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1])
            ax.set_xticks([])
            ax.set_yticks([])
            offset = patch.info.slice_offsets_mm[col]
            ax.set_title("centre slice" if offset == 0 else f"{offset:+.1f} mm", fontsize=7.5,
                         color="black" if valid else INVALID_COLOR)
            for spine in ax.spines.values():
                spine.set_edgecolor(LABEL_COLORS.get(v.name, "black") if valid else INVALID_COLOR)
    return sheet.fig


def draw_patches_png(result: CaseResult, patches: Dict[str, Patch], path: Path) -> None:
    patches_figure(result, patches).savefig(str(path), dpi=DPI)

