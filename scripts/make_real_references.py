"""Make the reference masks of the two shared real CTs (issue 7), reproducibly.

    PYTHONPATH=OsteoBMD python scripts/make_real_references.py [--data /work/shared/data]
        [--out Testing/data/real_ct] [--images docs/evaluation/real_ct]

Writes <out>/<case>/reference_levels.nii.gz (uint8 on the CT's own grid: T12 = 12,
L1..L5 = 21..25, sacrum = 30, the convention of levels.nrrd in docs/DESIGN.md) and check
images <images>/reference_<case>_*.png (mid-sagittal, two parasagittal, coronal, axial).

- TotalSegmentator sample: the vertebral bodies come from its vertebral_bodies.nii.gz
  (19 T12 ... 24 L5). The sacrum is its labels 25 (sacrum) and 26 (S1) of the full label map,
  cut to the part anterior to the sacral canal and within the body corridor (see below).
- Pancreas case (no masks exist): bone (HU > 150) in a corridor anterior to the spinal canal,
  holes filled per axial slice, thin bridges opened away; the bodies are split by disc planes
  fitted to the image (the tilted plane of lowest mean HU near each boundary of levels.json);
  each level keeps its largest connected piece. Read Testing/data/real_ct/README.md.
"""

from __future__ import annotations

import argparse
import json
from itertools import product
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from osteobmd.canal import detect_canal
from osteobmd.io import read_ct

TS_CASE = "real_ct_totalsegmentator_example"
PANCREAS_CASE = "real_ct_pancreas_ct_cb_001"
CODE = {"T12": 12, "L1": 21, "L2": 22, "L3": 23, "L4": 24, "L5": 25, "sacrum": 30}
TS_BODY_LABELS = {19: "T12", 20: "L1", 21: "L2", 22: "L3", 23: "L4", 24: "L5"}
TS_SACRUM_LABELS = (25, 26)

# Bone for the canal's front wall; the pancreas case's bodies use a higher threshold because its
# contrast-filled aorta (150-200 HU) touches them, while its trabecular bone reads 250-280 HU.
BONE_HU = 150.0
BODY_BONE_HU = 200.0
# A per-slice opening with a disc of this radius cuts the necks to touching vessels and rib heads.
NECK_RADIUS_MM = 5.0
# A slice's part of a body has its centre this close to the canal's centre line, or reaches
# within the band of it (the aorta at T12 lies 15-20 mm left of it).
MAX_OFF_MIDLINE_MM = 10.0
MIDLINE_BAND_MM = 2.0
# The vertebral-body corridor: this far left and right of the canal centre (L5 is ~55 mm
# wide) and this far anterior of the canal's front wall (bodies are 30-45 mm deep).
BODY_HALF_WIDTH_MM = 32.0
SACRUM_HALF_WIDTH_MM = 25.0
BODY_DEPTH_MM = 75.0
# Disc-plane search around each boundary of levels.json: offset (mm) and tilts (mm of z per mm).
PLANE_Z_SEARCH_MM = 10.0
PLANE_AP_TILTS = np.arange(-0.8, 0.81, 0.05)
PLANE_LR_TILTS = np.arange(-0.2, 0.21, 0.05)


def canal_track(ct: sitk.Image, hu: np.ndarray):
    """Per axial slice k of an LPS CT: canal centre (i, j) and the index j of the canal's front wall.

    detect_canal gives centres where the canal is a closed ring; between them they are
    interpolated and below the lowest (the sacrum) extrapolated along the lowest 8.
    The front wall is the first bone met walking anterior from the canal along the midline.
    """
    canal = detect_canal(ct)
    idx = np.array([ct.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in canal.centers_lps_mm])
    ks = canal.slice_indices
    kk = np.arange(hu.shape[0])
    ci = np.interp(kk, ks, idx[:, 0])
    cj = np.interp(kk, ks, idx[:, 1])
    below = kk < ks[0]
    if below.any():
        n = min(8, len(ks))
        ci[below] = np.polyval(np.polyfit(ks[:n], idx[:n, 0], 1), kk[below])
        cj[below] = np.polyval(np.polyfit(ks[:n], idx[:n, 1], 1), kk[below])
    sx, sy, _ = ct.GetSpacing()
    band = max(1, int(round(3.0 / sx)))
    search = int(round(12.0 / sy))
    front = np.zeros(len(kk))
    for k in kk:
        i0 = int(round(ci[k]))
        profile = ndimage.uniform_filter1d(hu[k, :, max(0, i0 - band):i0 + band + 1].mean(axis=1), 3)
        j_est = int(round(cj[k]))
        lo, hi = max(0, j_est - search), min(len(profile), j_est + search + 1)
        j0 = lo + int(np.argmin(profile[lo:hi]))  # the canal: the lowest HU near the estimate
        j, stop = j0, j0 - int(round(25.0 / sy))
        while j > stop and profile[j] < BONE_HU:
            j -= 1
        front[k] = j if j > stop else j0 - 8.0 / sy
    return ci, ndimage.median_filter(front, 5, mode="nearest")


def corridor(shape, ci, front, spacing, half_width_mm: float) -> np.ndarray:
    """Voxels anterior to the canal's front wall and within half_width_mm of its centre line."""
    sx, sy, _ = spacing
    jj = np.arange(shape[1])[None, :, None]
    ii = np.arange(shape[2])[None, None, :]
    f = front[:, None, None]
    return (jj <= f + 1) & (jj >= f - BODY_DEPTH_MM / sy) & (np.abs(ii - ci[:, None, None]) * sx <= half_width_mm)


def _disk(radius_mm: float, spacing) -> np.ndarray:
    r = max(1, int(round(radius_mm / spacing[0])))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy ** 2 + xx ** 2) <= r * r


def body_bone(hu: np.ndarray, region: np.ndarray, spacing, ci, front) -> np.ndarray:
    """Bone of the bodies in the region.

    Per axial slice: bone closed and hole-filled, then opened with a disc that cuts narrow
    necks (to vessels, rib heads). In 3D, the opened pieces that hold the body's midline
    (15 mm anterior of the canal front) on some slice survive (3D, so that a slice through a
    tilted disc keeps the body it cuts even where its midline point lies in the disc); on
    each slice, parts off the midline go; the rest grows back by half the opening radius.
    """
    sx, sy = spacing[0], spacing[1]
    bone = ndimage.binary_closing((hu > BODY_BONE_HU) & region, structure=np.ones((1, 3, 3), bool))
    for k in range(bone.shape[0]):
        bone[k] = ndimage.binary_fill_holes(bone[k])
    parts = ndimage.binary_opening(bone, structure=_disk(NECK_RADIUS_MM, spacing)[None])
    pieces, _ = ndimage.label(parts)
    ks = np.arange(bone.shape[0])
    seeds = pieces[ks, np.round(front - 15.0 / sy).astype(int), np.round(ci).astype(int)]
    kept = np.isin(pieces, seeds[seeds > 0])
    # A kept piece may still join a vessel or a rib head on the odd slice where the neck is
    # wide; on each slice, parts centred off the midline that do not reach it are not the body.
    ii = np.arange(bone.shape[2])
    for k in ks:
        flat, n = ndimage.label(kept[k])
        if n == 0:
            continue
        centres = ndimage.center_of_mass(kept[k], flat, range(1, n + 1))
        on_midline = set(np.unique(flat[:, np.abs(ii - ci[k]) * sx <= MIDLINE_BAND_MM]).tolist())
        off = [v + 1 for v, (_, i) in enumerate(centres)
               if abs(i - ci[k]) * sx > MAX_OFF_MIDLINE_MM and v + 1 not in on_midline]
        kept[k] &= ~np.isin(flat, off)
    return bone & ndimage.binary_dilation(kept, structure=_disk(NECK_RADIUS_MM / 2, spacing)[None]) & region


def fit_disc_plane(hu, ct, ci, front, z_expected: float):
    """The tilted plane z = z0 + a (y - yc) + b (x - xc) of lowest mean HU in the body core.

    Returns (z0, a, b, yc, xc) in LPS mm. The core is the middle of the bodies: 3-40 mm
    anterior of the canal front, 15 mm either side of the canal centre.
    """
    sx, sy, sz = ct.GetSpacing()
    ox, oy, oz = ct.GetOrigin()
    k = int(np.clip(round((z_expected - oz) / sz), 0, hu.shape[0] - 1))
    xc = ox + ci[k] * sx
    yf = oy + front[k] * sy
    ys = np.arange(yf - 40.0, yf - 3.0, sy)
    xs = np.arange(xc - 15.0, xc + 15.0, sx)
    Y, X = np.meshgrid(ys, xs, indexing="ij")
    yc = float(ys.mean())
    best = None
    for a, b in product(PLANE_AP_TILTS, PLANE_LR_TILTS):
        for z0 in np.arange(z_expected - PLANE_Z_SEARCH_MM, z_expected + PLANE_Z_SEARCH_MM + 0.1, 1.0):
            Z = z0 + a * (Y - yc) + b * (X - xc)
            coords = np.stack([(Z - oz) / sz, (Y - oy) / sy, (X - ox) / sx])
            score = float(ndimage.map_coordinates(hu, coords.reshape(3, -1), order=1, mode="nearest").mean())
            if best is None or score < best[0]:
                best = (score, z0, a, b)
    return best[1], best[2], best[3], yc, xc, best[0]


def split_by_planes(bone, ct, planes, names) -> np.ndarray:
    """Label bone between consecutive planes (top to bottom) with names[n]; keep each level's largest piece."""
    K, J, I = bone.shape
    sx, sy, sz = ct.GetSpacing()
    ox, oy, oz = ct.GetOrigin()
    z = (oz + np.arange(K) * sz)[:, None, None]
    y = (oy + np.arange(J) * sy)[None, :, None]
    x = (ox + np.arange(I) * sx)[None, None, :]
    out = np.zeros(bone.shape, np.uint8)
    for n, name in enumerate(names):
        upper, lower = planes[n], planes[n + 1]
        between = bone.copy()
        if upper is not None:
            z0, a, b, yc, xc = upper[:5]
            between &= z < z0 + a * (y - yc) + b * (x - xc)
        if lower is not None:
            z0, a, b, yc, xc = lower[:5]
            between &= z >= z0 + a * (y - yc) + b * (x - xc)
        pieces, count = ndimage.label(between)
        if count == 0:
            continue
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        out[pieces == int(np.argmax(sizes))] = CODE[name]
    return out


def to_ct_grid(labels_lps: np.ndarray, ct_lps: sitk.Image, ct_original: sitk.Image) -> sitk.Image:
    """The LPS label array as an image on the original CT's grid (a permutation, no interpolation)."""
    image = sitk.GetImageFromArray(labels_lps.astype(np.uint8))
    image.CopyInformation(ct_lps)
    return sitk.Resample(image, ct_original, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def sacral_body(hu, ct) -> np.ndarray:
    """The corridor of the sacral bodies: anterior to the sacral canal, near the midline."""
    ci, front = canal_track(ct, hu)
    return corridor(hu.shape, ci, front, ct.GetSpacing(), SACRUM_HALF_WIDTH_MM)


def ts_reference(case_dir: Path) -> sitk.Image:
    original = sitk.ReadImage(str(case_dir / "ct.nii.gz"))
    ct = read_ct(case_dir / "ct.nii.gz")
    hu = sitk.GetArrayFromImage(ct)
    bodies = sitk.ReadImage(str(case_dir / "vertebral_bodies.nii.gz"))
    structures = sitk.ReadImage(str(case_dir / "totalsegmentator_all_structures.nii.gz"))
    for name, image in (("vertebral_bodies", bodies), ("all_structures", structures)):
        same = image.GetSize() == original.GetSize() and np.allclose(image.GetOrigin(), original.GetOrigin()) \
            and np.allclose(image.GetSpacing(), original.GetSpacing()) and np.allclose(image.GetDirection(), original.GetDirection())
        if not same:
            raise SystemExit(f"{name} is not on the CT's grid")
    body = sitk.GetArrayFromImage(sitk.DICOMOrient(bodies, "LPS"))
    every = sitk.GetArrayFromImage(sitk.DICOMOrient(structures, "LPS"))
    out = np.zeros(body.shape, np.uint8)
    sacrum, count = ndimage.label(np.isin(every, TS_SACRUM_LABELS) & sacral_body(hu, ct))
    if count:
        sizes = np.bincount(sacrum.ravel())
        sizes[0] = 0
        out[sacrum == int(np.argmax(sizes))] = CODE["sacrum"]
    for value, name in TS_BODY_LABELS.items():
        out[body == value] = CODE[name]
    return to_ct_grid(out, ct, original)


def pancreas_reference(case_dir: Path, log: list) -> sitk.Image:
    original = sitk.ReadImage(str(case_dir / "ct.nii.gz"))
    ct = read_ct(case_dir / "ct.nii.gz")
    hu = sitk.GetArrayFromImage(ct)
    levels = json.loads((case_dir / "levels.json").read_text())["bodies_z_mm"]
    names = ["T12", "L1", "L2", "L3", "L4", "L5"]
    ci, front = canal_track(ct, hu)
    bone = body_bone(hu, corridor(hu.shape, ci, front, ct.GetSpacing(), BODY_HALF_WIDTH_MM), ct.GetSpacing(), ci, front)
    # Boundaries: above T12 (T11/T12), between neighbours, and L5/S1.
    expected = [levels["T12"]["superior"] + 4.0]
    expected += [(levels[u]["inferior"] + levels[l]["superior"]) / 2.0 for u, l in zip(names, names[1:])]
    expected += [levels["L5"]["inferior"] - 4.0]
    planes = []
    for z in expected:
        plane = fit_disc_plane(hu, ct, ci, front, z)
        planes.append(plane)
        log.append(f"disc plane near z={z:.0f}: z0={plane[0]:.0f} mm, tilt a-p {plane[1]:+.2f}, l-r {plane[2]:+.2f}, mean {plane[5]:.0f} HU")
    labels = split_by_planes(bone, ct, [planes[0]] + planes[1:], names)
    # The sacrum: everything below the L5/S1 plane in the narrower corridor, largest piece.
    sacrum_bone = body_bone(hu, corridor(hu.shape, ci, front, ct.GetSpacing(), SACRUM_HALF_WIDTH_MM), ct.GetSpacing(), ci, front)
    sacrum = split_by_planes(sacrum_bone, ct, [planes[-1], None], ["sacrum"])
    labels[(labels == 0) & (sacrum > 0)] = CODE["sacrum"]
    return to_ct_grid(labels, ct, original)


NAME_OF = {v: k for k, v in CODE.items()}
COLOURS = {12: "#e6194b", 21: "#3cb44b", 22: "#ffe119", 23: "#4363d8", 24: "#f58231", 25: "#911eb4", 30: "#42d4f4"}


def _overlay(ax, image, labels, aspect, title):
    ax.imshow(image, cmap="gray", vmin=-200, vmax=1000, aspect=aspect, interpolation="nearest")
    for value in np.unique(labels[labels > 0]):
        ax.contour(labels == value, levels=[0.5], colors=[COLOURS[int(value)]], linewidths=0.8)
        rows, cols = np.nonzero(labels == value)
        ax.text(cols.max() + 3, rows.mean(), NAME_OF[int(value)], color=COLOURS[int(value)], fontsize=7, va="center")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def render_checks(ct_path: Path, reference: sitk.Image, out_dir: Path, prefix: str) -> list:
    """Overlays for the visual check: sagittal x3 + coronal in one image, axial slices per level in another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ct = read_ct(ct_path)
    hu = sitk.GetArrayFromImage(ct)
    lab = sitk.GetArrayFromImage(sitk.DICOMOrient(reference, "LPS"))
    sx, sy, sz = ct.GetSpacing()
    ci, _ = canal_track(ct, hu)
    i_mid = int(round(np.median(ci)))
    k_any, j_any, _ = np.nonzero(lab)
    j_cor = int(round(np.median(j_any)))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    # Sagittal and coronal, cropped to the spine.
    k0 = max(0, int(k_any.min() - 25 / sz))
    k1 = min(hu.shape[0], int(k_any.max() + 25 / sz) + 1)
    j0, j1 = max(0, j_cor - int(90 / sy)), min(hu.shape[1], j_cor + int(70 / sy))
    ic0, ic1 = max(0, i_mid - int(110 / sx)), min(hu.shape[2], i_mid + int(110 / sx))
    fig, axes = plt.subplots(1, 4, figsize=(14, 7), dpi=80)
    for ax, di in zip(axes[:3], (-10, 0, 10)):
        i = i_mid + int(round(di / sx))
        _overlay(ax, hu[k0:k1, j0:j1, i][::-1], lab[k0:k1, j0:j1, i][::-1],
                 sz / sy, f"sagittal {'mid' if di == 0 else f'{di:+d} mm'} (anterior left)")
    _overlay(axes[3], hu[k0:k1, j_cor, ic0:ic1][::-1], lab[k0:k1, j_cor, ic0:ic1][::-1], sz / sx, "coronal through the bodies")
    fig.tight_layout()
    path = out_dir / f"reference_{prefix}_sagittal_coronal.png"
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)
    # Axial: three slices per level (a quarter, half, three quarters of its height).
    levels = [v for v in (12, 21, 22, 23, 24, 25, 30) if (lab == v).any()]
    fig, axes = plt.subplots(len(levels), 3, figsize=(6.6, 2.3 * len(levels)), dpi=60)
    ja, jb = max(0, j_cor - int(70 / sy)), min(hu.shape[1], j_cor + int(50 / sy))
    ia, ib = max(0, i_mid - int(60 / sx)), min(hu.shape[2], i_mid + int(60 / sx))
    for row, value in zip(np.atleast_2d(axes), levels):
        ks = np.unique(np.nonzero(lab == value)[0])
        for ax, q in zip(row, (0.25, 0.5, 0.75)):
            k = int(ks[int(q * (len(ks) - 1))])
            _overlay(ax, hu[k, ja:jb, ia:ib], lab[k, ja:jb, ia:ib], sy / sx, f"{NAME_OF[value]} axial k={k}")
    fig.tight_layout()
    path = out_dir / f"reference_{prefix}_axial.png"
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--out", type=Path, default=Path("Testing/data/real_ct"))
    parser.add_argument("--images", type=Path, default=Path("docs/evaluation/real_ct"))
    parser.add_argument("--cases", nargs="*", default=[TS_CASE, PANCREAS_CASE])
    args = parser.parse_args()
    for case in args.cases:
        log: list = []
        case_dir = args.data / case
        reference = ts_reference(case_dir) if case == TS_CASE else pancreas_reference(case_dir, log)
        target = args.out / case
        target.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(reference, str(target / "reference_levels.nii.gz"), useCompression=True)
        counts = np.bincount(sitk.GetArrayViewFromImage(reference).ravel(), minlength=31)
        volume = np.prod(reference.GetSpacing()) / 1000.0
        for line in log:
            print(f"{case}: {line}")
        print(case, {NAME_OF[v]: round(float(counts[v] * volume), 1) for v in CODE.values()}, "cm3")
        for path in render_checks(case_dir / "ct.nii.gz", reference, args.images, case.replace("real_ct_", "")):
            print("wrote", path)


if __name__ == "__main__":
    main()
