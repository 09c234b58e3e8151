"""Small CT volumes the tests build themselves: a body, a bony ring round the canal, blocks for vertebrae.

Geometry is given in millimetres, so the same phantom can be voxelised at any spacing.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

# Body axis along z; LPS: x right->left, y anterior->posterior.
CANAL_CENTER_XY = (4.0, 30.0)  # mm, in the phantom's LPS frame
BODY_HU, CORTEX_HU, CSF_HU, AIR_HU = 40.0, 700.0, 15.0, -1000.0
# z centre (mm) and trabecular HU of L1..L4 (L1 on top); heights 26 mm, discs 10 mm.
VERTEBRAE = {"L1": (150.0, 180.0), "L2": (114.0, 140.0), "L3": (78.0, 100.0), "L4": (42.0, 70.0)}
HALF_HEIGHT = 13.0


def make_toy_ct(spacing=(0.8, 0.8, 1.0), fov_mm=(160.0, 140.0, 190.0), metal_in=None, with_canal=True,
                vertebrae=("L1", "L2", "L3", "L4")):
    """Returns (ct, labels) as SimpleITK images (float32 HU, uint8 1..4), LPS, origin at (-80, -60, 0)."""
    sx, sy, sz = spacing
    nx, ny, nz = (int(round(f / s)) for f, s in zip(fov_mm, spacing))
    origin = (-80.0, -60.0, 0.0)
    x = origin[0] + np.arange(nx) * sx
    y = origin[1] + np.arange(ny) * sy
    z = origin[2] + np.arange(nz) * sz
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    hu = np.full(Z.shape, AIR_HU, np.float32)
    body = ((X / 75.0) ** 2 + ((Y - 5.0) / 60.0) ** 2) <= 1.0
    hu[body] = BODY_HU
    labels = np.zeros(Z.shape, np.uint8)
    cx, cy = CANAL_CENTER_XY
    r = np.hypot(X - cx, Y - cy)
    if with_canal:
        # Posterior arch: a bony ring round the canal along the whole spine.
        hu[(r >= 8.0) & (r <= 13.0)] = CORTEX_HU
        hu[r < 8.0] = CSF_HU
    for n, name in enumerate(("L1", "L2", "L3", "L4")):
        if name not in vertebrae:
            continue
        zc, trab = VERTEBRAE[name]
        # Vertebral body: an elliptic cylinder in front of the canal, with a 2 mm cortex.
        d = ((X - cx) / 24.0) ** 2 + ((Y - (cy - 31.0)) / 18.0) ** 2
        slab = np.abs(Z - zc) <= HALF_HEIGHT
        outer = (d <= 1.0) & slab
        inner = (((X - cx) / 22.0) ** 2 + ((Y - (cy - 31.0)) / 16.0) ** 2 <= 1.0) & (np.abs(Z - zc) <= HALF_HEIGHT - 2)
        hu[outer] = CORTEX_HU
        hu[inner] = trab
        labels[outer] = n + 1
    if metal_in:
        zc, _ = VERTEBRAE[metal_in]
        hu[(np.hypot(X - (cx + 6.0), Y - (cy - 28.0)) <= 2.5) & (np.abs(Z - zc) <= 8.0)] = 3000.0
    ct = sitk.GetImageFromArray(hu)
    lab = sitk.GetImageFromArray(labels)
    for img in (ct, lab):
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
    return ct, lab


def mid_sagittal_labels(labels: sitk.Image, x_mm: float = CANAL_CENTER_XY[0], half_width_mm: float = 3.5) -> sitk.Image:
    """Keep the labels only in the mid-sagittal slab, as the network's output would be."""
    a = sitk.GetArrayFromImage(labels)
    x = labels.GetOrigin()[0] + np.arange(a.shape[2]) * labels.GetSpacing()[0]
    a[:, :, np.abs(x - x_mm) > half_width_mm] = 0
    out = sitk.GetImageFromArray(a)
    out.CopyInformation(labels)
    return out
