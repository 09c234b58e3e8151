"""Ribs beside each vertebral body, found in 3D on the axial slices: "rib", "no rib" or
"cannot tell".

A rib articulates with its vertebra at the body and the transverse process and is long; a
lumbar transverse process is fused to the vertebra and short. Yun et al. (Korean J Radiol
2018) call a vertebra thoracic when it bears ribs of 38 mm or longer. Here:

1. Bone is HU above a threshold on a working copy of the CT (spacing at least
   WORKING_SPACING_MM on every axis, so 0.7 mm and 5 mm scans cost and behave alike).
   Two thresholds (RIB_BONE_HU): the low one keeps thin native ribs whole; where an arm
   merges into an organ bright with contrast at the low one, the high one may find the rib. The threshold
   stays above the aorta with contrast (about 200-350 HU; its mean, not its rim).
2. The vertebra itself is cut away: everything closer than SPINE_HALF_WIDTH_MM to the
   canal centre, left or right, on each slice. What leaves that column on each side at a
   body's level (the root band, posterior to the body's centre) is where that vertebra's
   rib or transverse process starts.
3. From all roots of one side at once, geodesic distances (in mm) are grown through the bone;
   every bone voxel belongs to the root nearest along the bone, so two ribs that touch do
   not lend each other length. A root's arm length is its farthest voxel's distance plus
   the part hidden in the cut-away column (from the rib head, HEAD_FROM_CANAL_MM beside
   the canal centre, to the cut).
4. An arm is measured only as far as it stays a tube: the bone met per mm of geodesic
   distance (the arm's cross-section) must stay below MAX_RIB_SECTION_MM2. Where a rib
   touches a kidney or the liver bright with contrast, or where a process meets the ilium,
   the arm stops being a tube. An arm that is a tube for RIB_MIN_LENGTH_MM or more and runs
   outward (not along the spine, as the aorta does) is a rib. Shorter is "no rib", unless the view ends
   before a rib could have reached that length: then it is "cannot tell".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from .bodies import SpineFinding
from .canal import CanalResult

RIB = "rib"
NO_RIB = "no rib"
CANNOT_TELL = "cannot tell"

# Cortical bone; organs and vessels bright with contrast stay below it (except the
# collecting system in an excretory phase, which then reads as bone: "cannot tell").
CORTEX_HU = 400.0
# An arm that widens into something of which more than this share is cortex runs into a
# bony plate (the ilium or the sacral ala), not an organ.
MERGED_BONE_SHARE = 0.2
# Bone thresholds, low then high. The low one keeps thin ribs of native thick-slice scans
# in one piece; with contrast, a kidney or the liver may pass it and merge with a rib, which
# the high one (above contrast-enhanced organs and the aorta's mean) separates. The high
# threshold may only add a rib, never rule one out (thin ribs fall apart at it).
RIB_BONE_HU = (200.0, 300.0)
# Ribs are 6-12 mm thick: 2 mm voxels still hold them, and thin-slice scans cost no more.
WORKING_SPACING_MM = 2.0
# Half-width of the column cut away around the canal centre: the vertebral body, pedicles
# and articular processes of T11-L5 lie inside it; ribs and transverse processes leave it.
SPINE_HALF_WIDTH_MM = 25.0
# Where a rib's head sits beside the canal centre; the arm length adds the stretch from
# here to the cut, which the cut hides.
HEAD_FROM_CANAL_MM = 18.0
# Width of the band just outside the cut in which arms start.
ROOT_BAND_MM = 8.0
# Yun et al. 2018: paired ribs of 38 mm or longer mark a thoracic vertebra.
RIB_MIN_LENGTH_MM = 38.0
# A rib runs outward: its lateral reach beyond the cut is at least this share of its length
# (the aorta, the IVC with contrast, or bridging osteophytes run along z instead).
MIN_LATERAL_SHARE = 0.35
# A rib is a thin tube (about 8 x 12 mm, blurred): the bone met per mm along the arms of
# one level (a rib and a transverse process side by side) stays below this cross-section
# (mm^2); a plate, an organ or a vessel does not.
MAX_RIB_SECTION_MM2 = 400.0
SECTION_BIN_MM = 3.0
# Ribs run down from their head: look this far below and above a body for its arms.
BELOW_MM = 110.0
ABOVE_MM = 30.0


@dataclass
class SideEvidence:
    verdict: str  # RIB, NO_RIB or CANNOT_TELL
    length_mm: Optional[float]  # estimated length of the longest arm from the rib head
    reason: str
    # LPS mm of the arm's root and far end (for drawing), when an arm was found.
    root_lps: Optional[Tuple[float, float, float]] = None
    tip_lps: Optional[Tuple[float, float, float]] = None
    merged_organ: bool = False  # the arm merges into an organ bright with contrast
    pelvis: bool = False  # the arm widens into a bony plate: the pelvis or the sacral ala

    def to_dict(self) -> dict:
        return {"verdict": self.verdict,
                "length_mm": None if self.length_mm is None else round(self.length_mm, 1),
                "reason": self.reason}


@dataclass
class BodyRibs:
    verdict: str
    right: SideEvidence
    left: SideEvidence
    reason: str

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "reason": self.reason,
                "right": self.right.to_dict(), "left": self.left.to_dict()}


@dataclass
class RibEvidence:
    """Per body of the SpineFinding (same order, inferior -> superior)."""

    bodies: List[BodyRibs] = field(default_factory=list)

    @property
    def verdicts(self) -> List[str]:
        return [b.verdict for b in self.bodies]

    def to_dict(self) -> dict:
        return {"bodies": [b.to_dict() for b in self.bodies]}


def _working_image(ct: sitk.Image) -> sitk.Image:
    spacing = tuple(max(s, WORKING_SPACING_MM) for s in ct.GetSpacing())
    if np.allclose(spacing, ct.GetSpacing()):
        return ct
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(ct.GetSize(), ct.GetSpacing(), spacing)]
    return sitk.Resample(ct, size, sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), spacing,
                         ct.GetDirection(), -1024.0, sitk.sitkFloat32)


def _canal_centres(canal: CanalResult, n_slices: int, origin_z: float, sz: float) -> np.ndarray:
    """Canal centre (x, y) in LPS mm for every slice; between and beyond the slices where
    the canal was found, interpolated and held constant."""
    zc = canal.centers_lps_mm[:, 2]
    if zc.size == 0:
        return np.tile(canal.spine_center_lps_mm[:2], (n_slices, 1))
    z = origin_z + np.arange(n_slices) * sz
    order = np.argsort(zc)
    # Smooth over a few slices: single-slice centres jitter with the canal's shape.
    xs = ndimage.median_filter(canal.centers_lps_mm[order, 0], size=5, mode="nearest")
    ys = ndimage.median_filter(canal.centers_lps_mm[order, 1], size=5, mode="nearest")
    return np.stack([np.interp(z, zc[order], xs), np.interp(z, zc[order], ys)], axis=1)


def _graph(coords_kji: np.ndarray, shape, spacing_kji) -> coo_matrix:
    """26-connected voxel graph of the given voxels (C-ordered, as np.argwhere gives them),
    edge weights in mm."""
    n = len(coords_kji)
    flat = np.ravel_multi_index(coords_kji.T, shape)
    rows, cols, w = [], [], []
    for off in [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) > (0, 0, 0)]:
        nb = coords_kji + np.asarray(off)
        ok = np.flatnonzero(np.all((nb >= 0) & (nb < np.asarray(shape)), axis=1))
        nbf = np.ravel_multi_index(nb[ok].T, shape)
        dst = np.minimum(np.searchsorted(flat, nbf), n - 1)
        hit = flat[dst] == nbf
        rows.append(ok[hit])
        cols.append(dst[hit])
        w.append(np.full(int(hit.sum()), float(np.linalg.norm(np.asarray(off) * np.asarray(spacing_kji)))))
    rows, cols, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(w)
    return coo_matrix((w, (rows, cols)), shape=(n, n)).tocsr()


def _level_ranges(finding: SpineFinding) -> List[Tuple[float, float]]:
    """Each body's vertebral level along z (mm from row 0): from half-way to the body below
    to half-way to the body above (a rib head may sit at the disc). At a chain end or a
    break (a missed body) only half a disc beyond the body: the missed body's ribs must not
    be lent to its neighbours."""
    bodies = finding.bodies
    half_disc = 0.15 * finding.typical_step_mm
    out = []
    for i, b in enumerate(bodies):
        has_below = i > 0 and finding.connected(i - 1, i)
        has_above = i < len(bodies) - 1 and finding.connected(i, i + 1)
        lo = 0.5 * (bodies[i - 1].z_range_mm[1] + b.z_range_mm[0]) if has_below else b.z_range_mm[0] - half_disc
        hi = 0.5 * (b.z_range_mm[1] + bodies[i + 1].z_range_mm[0]) if has_above else b.z_range_mm[1] + half_disc
        out.append((lo, hi))
    return out


def _side_arms(coords, values, lateral, y_rel, z_mm, level_ranges, y_front, shape, spacing_kji, side: int):
    """Arms of every body on one side (+1 left, -1 right in LPS). `coords` are the bone
    voxels (k, j, i), `lateral`, `y_rel` their offsets from the canal centre (mm), `z_mm`
    their height. Per body, a dict of its arm's features, or None when no bone leaves the
    column at that level."""
    outward = side * lateral
    keep = outward >= SPINE_HALF_WIDTH_MM
    coords, values, outward, y_rel, z_mm = coords[keep], values[keep], outward[keep], y_rel[keep], z_mm[keep]
    result = [None] * len(level_ranges)
    if len(coords) == 0:
        return result
    in_band = outward < SPINE_HALF_WIDTH_MM + ROOT_BAND_MM
    owner = np.full(len(coords), -1)
    for b, (lo, hi) in enumerate(level_ranges):
        # Roots sit behind the body's centre: the aorta and the IVC lie in front of it.
        owner[in_band & (z_mm >= lo) & (z_mm < hi) & (y_rel >= y_front[b])] = b
    roots = np.flatnonzero(owner >= 0)
    if roots.size == 0:
        return result
    graph = _graph(coords, shape, spacing_kji)
    dist, _, source = dijkstra(graph, directed=False, indices=roots, min_only=True, return_predecessors=True)
    reached = np.isfinite(dist)
    root_of = np.full(len(coords), -1)
    root_of[reached] = owner[source[reached]]
    voxel_mm3 = float(np.prod(spacing_kji))
    for b in range(len(level_ranges)):
        mine = np.flatnonzero(root_of == b)
        if mine.size == 0:
            continue
        d = dist[mine]
        # Cross-section along the arm: bone volume per mm of distance, in bins of SECTION_BIN_MM.
        bins = (d // SECTION_BIN_MM).astype(int)
        section = np.bincount(bins) * voxel_mm3 / SECTION_BIN_MM
        # The root band itself (distance 0) holds every process of the level: skip bin 0.
        wide = np.flatnonzero(section[1:] > MAX_RIB_SECTION_MM2) + 1
        tube_end = float(wide[0] * SECTION_BIN_MM) if wide.size else float(d.max())
        tube = mine[d <= tube_end]
        far = tube[np.argmax(dist[tube])]
        result[b] = dict(
            length=float(dist[far]) + (SPINE_HALF_WIDTH_MM - HEAD_FROM_CANAL_MM),
            reach=float(d.max()) + (SPINE_HALF_WIDTH_MM - HEAD_FROM_CANAL_MM),
            stops_being_a_tube=bool(wide.size),
            # What the arm merges into: bone (cortex > CORTEX_HU) or an organ bright with contrast.
            merged_bone_share=float(np.mean(values[mine[d > tube_end]] > CORTEX_HU)) if wide.size else 0.0,
            lateral=float(outward[tube].max() - SPINE_HALF_WIDTH_MM),
            voxels=coords[mine], root=coords[source[far]], tip=coords[far],
        )
    return result


def _side_verdict(arm, room_mm: float, cut_in_z: bool, shape, bottom_is_edge: bool, top_is_edge: bool) -> SideEvidence:
    touches_edge = False
    if arm is not None:
        v = arm["voxels"]
        touches_edge = bool(np.any(v[:, 1:] == 0) or np.any(v[:, 1] == shape[1] - 1)
                            or np.any(v[:, 2] == shape[2] - 1)
                            or (bottom_is_edge and np.any(v[:, 0] == 0))
                            or (top_is_edge and np.any(v[:, 0] == shape[0] - 1)))
    if arm is not None and arm["stops_being_a_tube"] and arm["merged_bone_share"] > MERGED_BONE_SHARE:
        return SideEvidence(CANNOT_TELL, arm["length"], "the bone beside it merges into a bony plate (the pelvis)",
                            pelvis=True)
    if arm is not None and arm["length"] >= RIB_MIN_LENGTH_MM:
        if arm["lateral"] < MIN_LATERAL_SHARE * (arm["length"] - (SPINE_HALF_WIDTH_MM - HEAD_FROM_CANAL_MM)):
            return SideEvidence(CANNOT_TELL, arm["length"], "the long bone beside it runs along the spine, not outward")
        return SideEvidence(RIB, arm["length"], f"a rib of {arm['length']:.0f} mm")
    if arm is not None and arm["stops_being_a_tube"] and arm["reach"] >= RIB_MIN_LENGTH_MM:
        return SideEvidence(CANNOT_TELL, arm["length"],
                            "the bone beside it merges into a broad structure (an organ bright with contrast)",
                            merged_organ=True)
    length = None if arm is None else arm["length"]
    if room_mm < RIB_MIN_LENGTH_MM + 10.0:
        return SideEvidence(CANNOT_TELL, length, "the view does not reach far enough to the side to see a rib")
    if cut_in_z or touches_edge:
        return SideEvidence(CANNOT_TELL, length, "the body or the bone beside it is cut by the edge of the view")
    if arm is None:
        return SideEvidence(NO_RIB, None, "no bone leaves the vertebra on this side")
    return SideEvidence(NO_RIB, length, f"only a short process ({length:.0f} mm), not a rib")


def _combine(right: SideEvidence, left: SideEvidence) -> Tuple[str, str]:
    pair = {right.verdict, left.verdict}
    if pair == {RIB}:
        return RIB, "ribs on both sides"
    if pair == {RIB, CANNOT_TELL}:
        if right.pelvis or left.pelvis:
            # Ribs and the pelvis never flank one vertebra: the long "rib" is the pelvis too,
            # cut by the edge of the view so that it looks like a tube.
            return CANNOT_TELL, "the pelvis on one side, so the long bone on the other is not taken for a rib"
        return RIB, "a rib on the side in view"
    if pair == {NO_RIB}:
        return NO_RIB, "no rib on either side"
    if pair == {RIB, NO_RIB}:
        return CANNOT_TELL, "a rib on one side only (possible transitional vertebra)"
    if pair == {NO_RIB, CANNOT_TELL}:
        return CANNOT_TELL, "no rib on one side; the other side cannot be judged"
    return CANNOT_TELL, "neither side can be judged"


def detect_ribs(ct: sitk.Image, finding: SpineFinding, canal: CanalResult) -> RibEvidence:
    """Rib evidence for every body of `finding` (same order, inferior -> superior).

    ct: the CT in LPS (HU, as io.read_ct returns it); finding: bodies.find_bodies on the
    sagittal class map of this CT (rows = the CT's slices k, columns = its rows j);
    canal: canal.detect_canal(ct). Never raises on a scan without ribs.
    """
    if not finding.bodies:
        return RibEvidence([])
    work = _working_image(ct)
    sx, sy, sz = work.GetSpacing()
    ox, oy, oz = work.GetOrigin()
    hu = sitk.GetArrayViewFromImage(work)
    nk, nj, ni = hu.shape
    ranges = _level_ranges(finding)
    z_lo = max(0, int(np.floor((min(r[0] for r in ranges) - BELOW_MM) / sz)))
    z_hi = min(nk, int(np.ceil((max(r[1] for r in ranges) + ABOVE_MM) / sz)) + 1)
    sub_shape = (z_hi - z_lo, nj, ni)
    centres = _canal_centres(canal, nk, oz, sz)
    # Each body's centre relative to the canal centre (negative: in front of it).
    y_front = []
    for b in finding.bodies:
        k_c = int(np.clip(round(b.z_center_mm / sz), 0, nk - 1))
        y_front.append(ct.GetOrigin()[1] + b.y_center_mm - centres[k_c, 1])
    arms = {}  # (threshold index, side) -> per body arm
    for t, threshold in enumerate(RIB_BONE_HU):
        sub = np.asarray(hu[z_lo:z_hi])
        coords = np.argwhere(sub > threshold)
        values = sub[tuple(coords.T)]
        k_ct = coords[:, 0] + z_lo
        lateral = ox + coords[:, 2] * sx - centres[k_ct, 0]
        y_rel = oy + coords[:, 1] * sy - centres[k_ct, 1]
        for s in (-1, 1):
            arms[t, s] = _side_arms(coords, values, lateral, y_rel, k_ct * sz, ranges, y_front, sub_shape,
                                    (sz, sy, sx), s)
    x_first, x_last = ox, ox + (ni - 1) * sx
    out = RibEvidence([])
    for b_i, body in enumerate(finding.bodies):
        k_c = int(np.clip(round(body.z_center_mm / sz), 0, nk - 1))
        cx = centres[k_c, 0]
        # Room for a rib: from the rib head to the view's edge on each side.
        room = {1: x_last - cx - HEAD_FROM_CANAL_MM, -1: cx - x_first - HEAD_FROM_CANAL_MM}
        lo, hi = ranges[b_i]
        cut_in_z = body.cut or lo < 0 or hi > nk * sz
        sides = {}
        for s in (-1, 1):
            evidence = []
            for t in range(len(RIB_BONE_HU)):
                arm = arms[t, s][b_i]
                ev = _side_verdict(arm, room[s], cut_in_z, sub_shape, z_lo == 0, z_hi == nk)
                if arm is not None:
                    ev.root_lps = _to_lps(arm["root"], work, z_lo)
                    ev.tip_lps = _to_lps(arm["tip"], work, z_lo)
                evidence.append(ev)
            # The high threshold only separates a rib from an organ bright with contrast: it is
            # asked only when the low one found an arm merging into one.
            low = evidence[0]
            sides[s] = evidence[1] if low.merged_organ and evidence[1].verdict == RIB else low
        verdict, reason = _combine(sides[-1], sides[1])
        out.bodies.append(BodyRibs(verdict=verdict, right=sides[-1], left=sides[1], reason=reason))
    return out


def _to_lps(kji, image: sitk.Image, z_lo: int) -> Tuple[float, float, float]:
    k, j, i = (int(v) for v in kji)
    return tuple(float(c) for c in image.TransformIndexToPhysicalPoint((i, j, k + z_lo)))
