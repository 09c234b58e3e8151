"""From the finding network's sagittal class map to an ordered chain of vertebral bodies.

The class map `s[z, y]` lies on the CT's own sagittal grid: row r is the CT's axial slice
k = r (inferior -> superior), column c is its row j (anterior -> posterior); spacing
(sz, sy) in mm. Classes: 0 background, 1 vertebral body (any level; discs are background,
so bodies are separate), 2 sacrum.

A real network output is not a clean set of boxes, so this module repairs what it can and
says what it cannot:
- two bodies bridged across a disc are split (erosion first, then the narrowest row);
- fragments of one body (pieces overlapping in z, or two short pieces that make one body's
  height together) are joined;
- tiny specks are dropped;
- a body touching the first or last row is kept but marked as cut by the image edge;
- a step between neighbouring body centres longer than about 1.6 typical steps means a
  body was missed there: the chain is broken, and nothing may be counted across a break.
All sizes are in millimetres, so 0.7 mm and 5 mm scans behave alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage

BODY_CLASS = 1
SACRUM_CLASS = 2

# Adult lumbar and low thoracic bodies are 18-35 mm tall; a reference height is clamped
# to this range so that a map full of merged or fragmented bodies cannot set its own scale.
MIN_BODY_HEIGHT_MM = 18.0
MAX_BODY_HEIGHT_MM = 35.0
TYPICAL_BODY_HEIGHT_MM = 26.5
# Body height / centre-to-centre step (body plus one disc) in adults is about 0.7-0.8.
HEIGHT_TO_STEP = 0.75
# A step this many typical steps long has room for a missed body in it.
BREAK_STEP_FACTOR = 1.6
# A piece smaller than this share of the median body area is a speck (unless cut by the edge).
SPECK_AREA_FRACTION = 0.2
MIN_AREA_MM2 = 30.0
# A piece taller than this many reference heights holds more than one body.
MERGED_HEIGHT_FACTOR = 1.5
# A piece still this tall after splitting holds two fused bodies (two bodies and a disc are
# more than twice a body's height; a body and half a disc left on each part are not).
FUSED_HEIGHT_FACTOR = 1.7
# A gap between the sacrum and the lowest body wider than this share of that body's height
# has room for a missed body (it would hold a body and two discs; one disc is about a third
# to a half of a body's height).
SACRUM_GAP_FACTOR = 0.8
# A row narrower than this share of a tall piece's median row width is a disc's bridge.
NARROW_ROW_FRACTION = 0.8
# S1 is fused to the sacrum below it; L5 is separated from S1 by the L5-S1 disc. A lowest
# "body" whose underside meets the sacrum with a gap thinner than this is S1 (a finder
# trained on synthetic data often calls the real S1 a body), not L5.
MIN_DISC_MM = 2.0
# The sacrum seen below the L5-S1 disc (S1 and the segments under it) is larger in sagittal
# section than any lumbar body. A "sacrum" piece smaller than the body above it is S2 under
# an S1 taken for a body, or an S1 cut by the image edge: counting from it is not safe.
MIN_SACRUM_TO_BODY_AREA = 1.0
# Pieces overlapping in z by more than this share of the shorter one belong to one body.
SAME_BODY_Z_OVERLAP = 0.5
# Two pieces shorter than this share of the reference height may be halves of one body.
FRAGMENT_HEIGHT_FACTOR = 0.65


@dataclass
class Body:
    """One vertebral body on the sagittal map (level not known here)."""

    mask: np.ndarray  # bool, the class map's shape
    rows: Tuple[int, int]  # first and last row (CT slice k) it covers
    z_range_mm: Tuple[float, float]  # inferior and superior edge, mm from row 0
    z_center_mm: float
    y_center_mm: float  # mm from column 0 (anterior -> posterior)
    area_mm2: float
    cut: bool  # touches the first or last row: part of it may lie outside the view

    @property
    def height_mm(self) -> float:
        return self.z_range_mm[1] - self.z_range_mm[0]

    @property
    def center_rc(self) -> Tuple[int, int]:
        """(row, column) of its centre on the class map."""
        r, c = np.nonzero(self.mask)
        return int(round(r.mean())), int(round(c.mean()))


@dataclass
class Sacrum:
    mask: np.ndarray
    top_mm: float  # the highest point of the sacrum (S1's upper endplate), mm from row 0
    top_row: int
    area_mm2: float


@dataclass
class SpineFinding:
    """The bodies, ordered inferior -> superior, the sacrum if found, and the chain's breaks.

    `breaks` holds i where a body is missing between bodies[i] and bodies[i + 1];
    `sacrum_break` is True when a body is missing between the sacrum and bodies[0];
    `sacrum_unsure` is True when bodies[0] may be S1 rather than L5 (too little sacrum below it).
    """

    bodies: List[Body]
    sacrum: Optional[Sacrum]
    spacing_zy: Tuple[float, float]
    shape: Tuple[int, int]
    typical_step_mm: float
    breaks: List[int] = field(default_factory=list)
    sacrum_break: bool = False
    sacrum_unsure: bool = False
    notes: List[str] = field(default_factory=list)

    def connected(self, i: int, j: int) -> bool:
        """True when bodies i and j are in one unbroken run of the chain."""
        lo, hi = min(i, j), max(i, j)
        return not any(lo <= b < hi for b in self.breaks)

    def to_dict(self) -> dict:
        return {
            "bodies": [
                {"z_range_mm": [round(b.z_range_mm[0], 1), round(b.z_range_mm[1], 1)],
                 "z_center_mm": round(b.z_center_mm, 1), "area_mm2": round(b.area_mm2, 1), "cut": b.cut}
                for b in self.bodies
            ],
            "sacrum_top_mm": None if self.sacrum is None else round(self.sacrum.top_mm, 1),
            "typical_step_mm": round(self.typical_step_mm, 1),
            "breaks": list(self.breaks),
            "sacrum_break": self.sacrum_break,
            "sacrum_unsure": self.sacrum_unsure,
            "notes": list(self.notes),
        }


def _pieces(mask: np.ndarray) -> List[np.ndarray]:
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return [lab == i for i in range(1, n + 1)]


def _rows(m: np.ndarray) -> Tuple[int, int]:
    r = np.flatnonzero(m.any(axis=1))
    return int(r[0]), int(r[-1])


def _height_mm(m: np.ndarray, sz: float) -> float:
    r0, r1 = _rows(m)
    return (r1 - r0 + 1) * sz


def _body_height_mm(m: np.ndarray, spacing_zy) -> float:
    """Height along the piece's own axis nearest to z: a tilted body (L5 on a steep sacrum)
    reaches further along z than it is tall, two fused bodies do not."""
    sz, sy = spacing_zy
    r, c = np.nonzero(m)
    if r.size < 3:
        return float(r.size and (r.max() - r.min() + 1) * sz)
    pts = np.stack([r * sz, c * sy], axis=1)
    _, vecs = np.linalg.eigh(np.cov(pts.T))
    axis = vecs[:, np.argmax(np.abs(vecs[0]))]
    proj = pts @ axis
    return float(proj.max() - proj.min() + sz * abs(axis[0]) + sy * abs(axis[1]))


def _reference_height(pieces: List[np.ndarray], spacing_zy) -> float:
    """Median height of the pieces that no image edge cuts; with fewer than three, a
    typical body height (a single tall piece must not set its own scale)."""
    whole = [p for p in pieces if not (p[0].any() or p[-1].any())]
    if len(whole) < 3:
        return TYPICAL_BODY_HEIGHT_MM
    h = float(np.median([_body_height_mm(p, spacing_zy) for p in whole]))
    return float(np.clip(h, MIN_BODY_HEIGHT_MM, MAX_BODY_HEIGHT_MM))


def _split_by_erosion(piece: np.ndarray, spacing_zy, ref_h: float) -> List[np.ndarray]:
    """Erode until the piece falls apart into parts of a body's size; give every pixel to
    its nearest part. Splits bridges that run obliquely (a tilted disc)."""
    sz, sy = spacing_zy
    for radius_mm in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        rz, ry = max(1, int(round(radius_mm / sz))), max(1, int(round(radius_mm / sy)))
        zz, yy = np.mgrid[-rz:rz + 1, -ry:ry + 1]
        disk = (zz * sz) ** 2 + (yy * sy) ** 2 <= radius_mm ** 2 + 1e-6
        cores = [c for c in _pieces(ndimage.binary_erosion(piece, disk)) if _height_mm(c, sz) >= 0.3 * ref_h]
        if len(cores) >= 2:
            seeds = np.zeros(piece.shape, np.int32)
            for i, c in enumerate(cores, 1):
                seeds[c] = i
            _, (ri, ci) = ndimage.distance_transform_edt(seeds == 0, sampling=spacing_zy, return_indices=True)
            nearest = seeds[ri, ci]
            return [piece & (nearest == i) for i in range(1, len(cores) + 1)]
    return [piece]


def _split_at_narrowest_row(piece: np.ndarray, spacing_zy, ref_h: float) -> List[np.ndarray]:
    """Cut a too-tall piece at its narrowest row, away from its ends; repeat on the parts."""
    sz = spacing_zy[0]
    if _body_height_mm(piece, spacing_zy) <= MERGED_HEIGHT_FACTOR * ref_h:
        return [piece]
    r0, r1 = _rows(piece)
    width = piece.sum(axis=1).astype(float)
    margin = max(1, int(round(0.5 * ref_h / sz)))
    lo, hi = r0 + margin, r1 - margin
    if hi <= lo:
        return [piece]
    band = width[lo:hi + 1]
    # The middle of the run of narrowest rows (a bridge may span the whole disc).
    narrowest = np.flatnonzero(band <= band.min() + 0.05 * np.median(width[r0:r1 + 1]))
    gaps = np.flatnonzero(np.diff(narrowest) != 1)
    run_last = narrowest[gaps[0]] if gaps.size else narrowest[-1]
    cut = lo + int((narrowest[0] + run_last) // 2)
    if width[cut] > NARROW_ROW_FRACTION * np.median(width[r0:r1 + 1]):
        return [piece]  # no waist to cut at: one tall (or tilted) body, or bodies fused beyond repair
    upper, lower = piece.copy(), piece.copy()
    upper[:cut + 1] = False
    lower[cut + 1:] = False
    return _split_at_narrowest_row(lower, spacing_zy, ref_h) + _split_at_narrowest_row(upper, spacing_zy, ref_h)


def _split_merged(pieces: List[np.ndarray], spacing_zy, ref_h: float) -> Tuple[List[np.ndarray], int]:
    out, n_split = [], 0
    for p in pieces:
        if _body_height_mm(p, spacing_zy) > MERGED_HEIGHT_FACTOR * ref_h:
            parts = []
            for q in _split_by_erosion(p, spacing_zy, ref_h):
                parts += _split_at_narrowest_row(q, spacing_zy, ref_h)
            n_split += len(parts) - 1
            out += parts
        else:
            out.append(p)
    return out, n_split


def _join_fragments(pieces: List[np.ndarray], sz: float, ref_h: float) -> Tuple[List[np.ndarray], int]:
    """Join pieces that are parts of one body: overlapping in z, or two short stacked halves."""
    pieces = sorted(pieces, key=lambda p: _rows(p)[0])
    n_joined = 0
    changed = True
    while changed:
        changed = False
        for i in range(len(pieces) - 1):
            a, b = pieces[i], pieces[i + 1]
            (a0, a1), (b0, b1) = _rows(a), _rows(b)
            overlap = (min(a1, b1) - max(a0, b0) + 1) * sz
            shorter = min(a1 - a0 + 1, b1 - b0 + 1) * sz
            both_short = max((a1 - a0 + 1), (b1 - b0 + 1)) * sz < FRAGMENT_HEIGHT_FACTOR * ref_h
            joined_h = (max(a1, b1) - min(a0, b0) + 1) * sz
            if overlap > SAME_BODY_Z_OVERLAP * shorter or (both_short and joined_h <= 1.15 * ref_h):
                pieces[i] = a | b
                del pieces[i + 1]
                n_joined += 1
                changed = True
                break
    return pieces, n_joined


def _find_sacrum(class_map: np.ndarray, spacing_zy) -> Optional[Sacrum]:
    """The largest sacrum piece that lies below the middle of the bodies (a body mistaken
    for sacrum higher up is not the sacrum)."""
    sz, sy = spacing_zy
    parts = _pieces(class_map == SACRUM_CLASS)
    body_rows = np.nonzero(class_map == BODY_CLASS)[0]
    if body_rows.size:
        middle = float(np.median(body_rows))
        parts = [p for p in parts if np.nonzero(p)[0].mean() < middle]
    if not parts:
        return None
    best = max(parts, key=lambda p: int(p.sum()))
    area = float(best.sum()) * sz * sy
    if area < 2 * MIN_AREA_MM2:
        return None
    top = _rows(best)[1]
    return Sacrum(mask=best, top_mm=(top + 0.5) * sz, top_row=top, area_mm2=area)


def _with_s1(sacrum: Sacrum, s1: np.ndarray, spacing_zy) -> Sacrum:
    """The sacrum with a body piece that is really its first segment added to it."""
    mask = sacrum.mask | s1
    top = _rows(mask)[1]
    return Sacrum(mask=mask, top_mm=(top + 0.5) * spacing_zy[0], top_row=top,
                  area_mm2=float(mask.sum()) * spacing_zy[0] * spacing_zy[1])


def _column_tops(mask: np.ndarray) -> np.ndarray:
    """Per column, the highest row of the mask (-1 where the column is empty)."""
    rows = np.arange(mask.shape[0])[:, None]
    return np.where(mask.any(axis=0), np.max(np.where(mask, rows, -1), axis=0), -1)


def _below_sacrum(body: np.ndarray, sacrum: Sacrum) -> bool:
    """True when, column by column, the sacrum lies above most of the piece: a sacral
    segment labelled as a body. (The top of S1 is tilted, so a plain height test would
    wrongly drop L5.)"""
    tops = _column_tops(sacrum.mask)
    r, c = np.nonzero(body)
    return bool(np.mean(r < tops[c]) > 0.5)


def _gap_above_sacrum_mm(body: np.ndarray, sacrum: Sacrum, sz: float) -> float:
    """Height of the gap between the sacrum's top and the body's underside, measured in the
    columns both share (the disc, when the body is L5)."""
    tops = _column_tops(sacrum.mask)
    rows = np.arange(body.shape[0])[:, None]
    bottoms = np.min(np.where(body, rows, body.shape[0]), axis=0)
    shared = (tops >= 0) & body.any(axis=0)
    if not shared.any():
        return (float(np.flatnonzero(body.any(axis=1))[0]) - sacrum.top_row) * sz
    return float(np.median(bottoms[shared] - tops[shared] - 1)) * sz


def _make_body(m: np.ndarray, spacing_zy, n_rows: int) -> Body:
    sz, sy = spacing_zy
    r0, r1 = _rows(m)
    rr, cc = np.nonzero(m)
    return Body(
        mask=m, rows=(r0, r1), z_range_mm=(r0 * sz - 0.5 * sz, r1 * sz + 0.5 * sz),
        z_center_mm=float(rr.mean()) * sz, y_center_mm=float(cc.mean()) * sy,
        area_mm2=float(m.sum()) * sz * sy, cut=bool(r0 == 0 or r1 == n_rows - 1),
    )


def _height_step(bodies: List[Body], ref_h: float) -> float:
    """The step that the bodies' heights imply (uncut bodies only; else the reference)."""
    heights = [b.height_mm for b in bodies if not b.cut]
    h = float(np.clip(np.mean(heights), MIN_BODY_HEIGHT_MM, MAX_BODY_HEIGHT_MM)) if heights else ref_h
    return h / HEIGHT_TO_STEP


def _local_steps(bodies: List[Body], ref_h: float) -> List[float]:
    """For each gap i (between bodies i and i + 1), the step expected there. Steps grow from
    about 25 mm in the low thoracic spine to about 38 mm in the lumbar spine, so the
    expectation is local: the median of up to two neighbouring steps on each side, capped
    by what the two bodies' heights allow (a neighbouring missed body must not inflate it)."""
    centres = [b.z_center_mm for b in bodies]
    steps = np.diff(centres)
    out = []
    for i in range(len(steps)):
        from_heights = _height_step(bodies[i:i + 2], ref_h)
        near = [steps[j] for j in (i - 2, i - 1, i + 1, i + 2)
                if 0 <= j < len(steps) and not (bodies[j].cut or bodies[j + 1].cut)]
        out.append(float(min(np.median(near), 1.25 * from_heights)) if len(near) >= 2 else from_heights)
    return out


def find_bodies(class_map: np.ndarray, spacing_zy: Tuple[float, float]) -> SpineFinding:
    """The bodies (inferior -> superior) and sacrum of a sagittal class map.

    class_map: int array [z, y] (rows = CT axial slices k, inferior -> superior; columns =
    CT rows j, anterior -> posterior) with 0 background, 1 vertebral body, 2 sacrum.
    spacing_zy: (sz, sy) in mm. Returns a SpineFinding; never raises on an empty map.
    """
    class_map = np.asarray(class_map)
    if class_map.ndim != 2:
        raise ValueError(f"class_map must be 2D [z, y], not of shape {class_map.shape}")
    sz, sy = float(spacing_zy[0]), float(spacing_zy[1])
    n_rows = class_map.shape[0]
    notes: List[str] = []
    sacrum = _find_sacrum(class_map, (sz, sy))

    pieces = [p for p in _pieces(class_map == BODY_CLASS) if p.sum() * sz * sy >= MIN_AREA_MM2 / 3]
    ref_h = _reference_height(pieces, (sz, sy))
    # Splitting judges "too tall" against at least a typical body: a tilted L5 reaches
    # further along z than its height, and small thoracic bodies must not make it look merged.
    split_h = max(ref_h, TYPICAL_BODY_HEIGHT_MM)
    pieces, n_split = _split_merged(pieces, (sz, sy), split_h)
    if n_split:
        notes.append(f"{n_split} bridge(s) between bodies were cut")
    pieces, n_joined = _join_fragments(pieces, sz, ref_h)
    if n_joined:
        notes.append(f"{n_joined} fragment(s) were joined to a body")

    bodies = [_make_body(p, (sz, sy), n_rows) for p in pieces]
    if bodies:
        median_area = float(np.median([b.area_mm2 for b in bodies if not b.cut] or [b.area_mm2 for b in bodies]))
        keep = [b for b in bodies
                if b.area_mm2 >= MIN_AREA_MM2 and (b.cut or b.area_mm2 >= SPECK_AREA_FRACTION * median_area)]
        if len(keep) < len(bodies):
            notes.append(f"{len(bodies) - len(keep)} speck(s) dropped")
        bodies = keep
    if sacrum is not None:
        # Below the sacrum's top lies sacrum, not a lumbar body (a mislabelled sacral segment).
        below = [b for b in bodies if _below_sacrum(b.mask, sacrum)]
        if below:
            notes.append(f"{len(below)} body piece(s) below the top of the sacrum ignored")
            bodies = [b for b in bodies if not any(b is x for x in below)]
    bodies.sort(key=lambda b: b.z_center_mm)
    sacrum_unsure = False
    if sacrum is not None and bodies and _gap_above_sacrum_mm(bodies[0].mask, sacrum, sz) < MIN_DISC_MM:
        sacrum = _with_s1(sacrum, bodies.pop(0).mask, (sz, sy))
        notes.append("the lowest body sits on the sacrum with no disc between: it is S1, counted with the sacrum")
    elif sacrum is not None and bodies and sacrum.area_mm2 < MIN_SACRUM_TO_BODY_AREA * bodies[0].area_mm2:
        sacrum_unsure = True
        notes.append("the sacrum piece in view is smaller than the body above it (it may be S2, or an S1 cut by "
                     "the image edge), so that body may be S1 rather than L5")
    ref_h = _reference_height([b.mask for b in bodies], (sz, sy))
    expected = _local_steps(bodies, ref_h)
    breaks = {i for i, e in enumerate(expected)
              if bodies[i + 1].z_center_mm - bodies[i].z_center_mm > BREAK_STEP_FACTOR * e}
    # A piece still too tall after splitting may hold two fused bodies: never count across it.
    fused = [i for i, b in enumerate(bodies)
             if not b.cut and _body_height_mm(b.mask, (sz, sy)) > FUSED_HEIGHT_FACTOR * split_h]
    for i in fused:
        breaks |= {j for j in (i - 1, i) if 0 <= j < len(bodies) - 1}
    if fused:
        notes.append(f"{len(fused)} piece(s) too tall for one body could not be split; the count stops there")
    breaks = sorted(breaks)
    kept = [e for i, e in enumerate(expected) if i not in breaks]
    step = float(np.median(kept)) if kept else _height_step(bodies, ref_h)
    sacrum_break = False
    if sacrum is not None and bodies:
        # Between S1 and the body above it lies one disc; a missed body makes the gap more
        # than a body and two discs.
        low_h = bodies[0].height_mm if not bodies[0].cut else ref_h
        sacrum_break = _gap_above_sacrum_mm(bodies[0].mask, sacrum, sz) > SACRUM_GAP_FACTOR * low_h
    return SpineFinding(
        bodies=bodies, sacrum=sacrum, spacing_zy=(sz, sy), shape=tuple(class_map.shape),
        typical_step_mm=step, breaks=breaks, sacrum_break=sacrum_break, sacrum_unsure=sacrum_unsure, notes=notes,
    )
