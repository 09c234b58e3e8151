#!/usr/bin/env python
"""Run the vertebra finder on one CT the way the pipeline does, and show what it found.

    python scripts/vertebra_finder_on_ct.py CT WEIGHTS OUT.png [--levels levels.json]
        [--reference vertebral_bodies.nii.gz]

Canal detection picks the slab, `segmentation.fused_probabilities` fuses the finder's
softmax over it, the argmax is the class map on the CT's sagittal grid. Printed: each
body component (z extent and centre in LPS mm) and, with --levels (a levels.json with
bodies_z_mm) or --reference (a label map with one label per level), which level each
component matches; with --reference also the Dice per level on the slab slices. The PNG
shows the class map over the mid-slab CT slice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from osteobmd.canal import detect_canal
from osteobmd.config import SegmentationConfig
from osteobmd.io import read_ct, to_lps
from osteobmd.segmentation import fused_probabilities, network_config
from osteobmd.weights import load_model

BODY, SACRUM = 1, 2
MIN_AREA_MM2 = 60.0
TS_LEVELS = {19: "T12", 20: "L1", 21: "L2", 22: "L3", 23: "L4", 24: "L5"}


def components(classmap: np.ndarray, cls: int, spacing_zy, z_of_row) -> list:
    comps, n = ndimage.label(classmap == cls)
    out = []
    for c in range(1, n + 1):
        rows, cols = np.nonzero(comps == c)
        area = rows.size * spacing_zy[0] * spacing_zy[1]
        if area < MIN_AREA_MM2:
            continue
        out.append({"id": c, "area_mm2": round(area), "z_lo": round(z_of_row(rows.min()), 1),
                    "z_hi": round(z_of_row(rows.max()), 1), "z_centre": round(float(np.mean(z_of_row(rows))), 1)})
    return sorted(out, key=lambda d: d["z_centre"]), comps


def compare_with_reference(ref_slab: np.ndarray, classmap: np.ndarray, comps: np.ndarray) -> dict:
    """Dice per level of the body components that overlap it, on the slab slices, and whether
    each level is its own component (one component, lying on no other level)."""
    n = ref_slab.shape[2]
    comp3 = np.repeat(comps[:, :, None], n, axis=2) * (np.repeat(classmap[:, :, None], n, axis=2) == BODY)
    levels_of = {}  # component -> the levels holding at least 10 % of its voxels
    for c in np.unique(comp3[comp3 > 0]):
        on = ref_slab[comp3 == c]
        levels_of[int(c)] = {TS_LEVELS[v] for v in TS_LEVELS if np.mean(on == v) >= 0.1}
    per_level = {}
    for value, name in TS_LEVELS.items():
        r = ref_slab == value
        if not r.any():
            continue
        ids = [int(i) for i in np.unique(comp3[r]) if i and np.sum((comp3 == i) & r) >= 0.05 * r.sum()]
        hit = np.isin(comp3, ids) if ids else np.zeros_like(r)
        dice = 2 * np.sum(hit & r) / max(hit.sum() + r.sum(), 1)
        per_level[name] = {"dice": round(float(dice), 3), "components": len(ids),
                           "separate": len(ids) == 1 and levels_of.get(ids[0]) == {name}}
    return {"per_level": per_level}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("ct", type=Path)
    ap.add_argument("weights", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--levels", type=Path)
    ap.add_argument("--reference", type=Path)
    ap.add_argument("--json", type=Path, help="write the numbers here too")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    ct = read_ct(args.ct)
    model, meta = load_model(args.weights, "segmentation", "cpu")
    cfg = network_config(meta, SegmentationConfig())
    t0 = time.perf_counter()
    canal = detect_canal(ct)
    t1 = time.perf_counter()
    sx, sy, sz = ct.GetSpacing()
    volume = sitk.GetArrayViewFromImage(ct)
    probs = fused_probabilities(volume, canal.slab_indices, (sz, sy), model, cfg, torch.device("cpu"))
    t2 = time.perf_counter()
    classmap = np.argmax(probs, axis=0).astype(np.uint8)
    ci = canal.center_index

    def z_of_row(k):
        return ct.GetOrigin()[2] + np.asarray(k, float) * sz * ct.GetDirection()[8]

    bodies, comps = components(classmap, BODY, (sz, sy), z_of_row)
    sacrum, _ = components(classmap, SACRUM, (sz, sy), z_of_row)
    result = {"canal_s": round(t1 - t0, 2), "finder_s": round(t2 - t1, 2), "slab": list(map(int, canal.slab_indices)),
              "bodies": bodies, "sacrum": sacrum}
    if args.levels:
        levels = json.loads(args.levels.read_text())["bodies_z_mm"]
        match = {}
        for name, lv in levels.items():
            hits = [b for b in bodies if lv["inferior"] - 4 <= b["z_centre"] <= lv["superior"] + 4]
            match[name] = {"components": len(hits), "z_centre_found": hits[0]["z_centre"] if hits else None,
                           "z_centre_ref": lv["centre"]}
        result["levels"] = match
    if args.reference:
        # one label per level (TotalSegmentator's numbers), nearest-neighbour onto the CT's grid
        ref = sitk.Resample(to_lps(sitk.ReadImage(str(args.reference))), ct, sitk.Transform(),
                            sitk.sitkNearestNeighbor, 0)
        result["reference"] = compare_with_reference(
            sitk.GetArrayFromImage(ref)[:, :, canal.slab_indices], classmap, comps)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = np.asarray(volume[:, :, ci], np.float32)
    aspect = sz / sy
    fig, axes = plt.subplots(1, 2, figsize=(12, 7))
    for ax in axes:
        ax.imshow(image, cmap="gray", vmin=-150, vmax=850, origin="lower", aspect=aspect)
    overlay = np.ma.masked_where(classmap == 0, classmap)
    axes[1].imshow(overlay, cmap="autumn", alpha=0.45, origin="lower", aspect=aspect, vmin=1, vmax=2)
    for b in bodies:
        axes[1].axhline((b["z_centre"] - ct.GetOrigin()[2]) / sz, color="cyan", lw=0.5)
    if args.levels:
        for name, lv in json.loads(args.levels.read_text())["bodies_z_mm"].items():
            row = (lv["centre"] - ct.GetOrigin()[2]) / sz
            axes[1].text(5, row, name, color="lime", fontsize=9)
    axes[1].set_title(f"{args.weights.name}: {len(bodies)} body components, {len(sacrum)} sacrum")
    axes[0].set_title(f"{args.ct.parent.name} mid-slab slice {ci}")
    fig.tight_layout()
    fig.savefig(args.png, dpi=80)
    return 0


if __name__ == "__main__":
    sys.exit(main())
