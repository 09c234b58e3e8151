"""The trabecular patches in the scene: one locked ROI box per patch and a label map of the
exact CT voxels the patches were sampled from."""

from typing import Dict, Optional, Sequence

import numpy as np
import vtk

from osteobmd.config import LABEL_OF
from osteobmd.results import CaseResult, PatchInfo

from .conventions import ATTR_ROLE, ATTR_VERTEBRA, lps_to_ras, vertebra_color
from .volumes import vertebra_color_table


def _patch_axes(patch: PatchInfo):
    """Centre (RAS), two in-plane unit axes, the normal and the in-plane edge lengths."""
    corners = np.array([lps_to_ras(c) for c in patch.corners_lps_mm], dtype=float)
    center = np.array(lps_to_ras(patch.center_lps_mm), dtype=float)
    if len(corners) >= 3:
        d = corners[1:] - corners[0]
        lengths = np.linalg.norm(d, axis=1)
        order = np.argsort(lengths)  # two edges, then the diagonal
        e1, e2 = d[order[0]], d[order[1]]
        size_u, size_v = float(np.linalg.norm(e1)), float(np.linalg.norm(e2))
        u = e1 / max(size_u, 1e-9)
        v = e2 - np.dot(e2, u) * u
        v = v / max(np.linalg.norm(v), 1e-9)
    else:  # no corners: an axial square
        u, v = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
        size_u = size_v = float(patch.size_mm)
    n = np.cross(u, v)
    return center, u, v, n, size_u, size_v


def _spacing_along(ct_node, direction) -> float:
    """Voxel extent of the CT along a RAS direction."""
    m = vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASMatrix(m)
    a = np.array([[m.GetElement(r, c) for c in range(3)] for r in range(3)])
    ijk = np.linalg.solve(a, np.asarray(direction, dtype=float))
    return 1.0 / max(np.abs(ijk).max(), 1e-9) if np.abs(ijk).max() > 0 else 1.0


def patch_depth_mm(patch: PatchInfo, slice_thickness_mm: float) -> float:
    offsets = patch.slice_offsets_mm or [0.0]
    return float(max(offsets) - min(offsets)) + slice_thickness_mm


def add_patch_rois(scene, result: CaseResult, ct_node=None, existing: Optional[Dict[str, object]] = None,
                   name_prefix: str = "") -> Dict[str, object]:
    """One locked markups ROI box per measured patch, coloured like its vertebra."""
    existing = dict(existing or {})
    rois = {}
    for v in result.vertebrae:
        roi = existing.pop(v.name, None)
        if v.patch is None:
            if roi is not None:
                scene.RemoveNode(roi)
            continue
        center, u, w, n, size_u, size_w = _patch_axes(v.patch)
        thickness = _spacing_along(ct_node, n) if ct_node is not None else v.patch.spacing_mm
        if roi is None:
            roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"{name_prefix}{v.name} patch")
            roi.CreateDefaultDisplayNodes()
        matrix = vtk.vtkMatrix4x4()
        for r in range(3):
            matrix.SetElement(r, 0, u[r])
            matrix.SetElement(r, 1, w[r])
            matrix.SetElement(r, 2, n[r])
            matrix.SetElement(r, 3, center[r])
        roi.SetAndObserveObjectToNodeMatrix(matrix)
        roi.SetSize(size_u, size_w, patch_depth_mm(v.patch, thickness))
        roi.SetLocked(True)
        roi.SetAttribute(ATTR_ROLE, "patch")
        roi.SetAttribute(ATTR_VERTEBRA, v.name)
        display = roi.GetDisplayNode()
        if display is not None:
            display.SetSelectedColor(*vertebra_color(v.name))
            display.SetColor(*vertebra_color(v.name))
            display.SetFillOpacity(0.15)
            display.SetHandlesInteractive(False)
        rois[v.name] = roi
    for roi in existing.values():  # vertebrae no longer measured
        scene.RemoveNode(roi)
    return rois


def patch_voxel_mask(result: CaseResult, ijk_to_ras: np.ndarray, dims: Sequence[int]):
    """The CT voxels the patches were sampled from, as (k, j, i) uint8 array of labels.

    A voxel belongs to a patch when its centre lies inside the patch square (in the patch's
    plane) on one of the sampled slices (within half a voxel of the slice along the normal).
    Returns (mask, (i0, j0, k0)) with the mask cropped to the patches' bounding box.
    """
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    a = ijk_to_ras[:3, :3]
    boxes = []
    specs = []
    for v in result.vertebrae:
        if v.patch is None:
            continue
        center, u, w, n, size_u, size_w = _patch_axes(v.patch)
        # half the voxel extent along the normal
        ijk_n = np.linalg.solve(a, n)
        half_t = 0.5 / max(np.abs(ijk_n).max(), 1e-9)
        offsets = v.patch.slice_offsets_mm or [0.0]
        corners = []
        for o in (min(offsets) - half_t, max(offsets) + half_t):
            for su in (-0.5, 0.5):
                for sw in (-0.5, 0.5):
                    corners.append(center + su * size_u * u + sw * size_w * w + o * n)
        ijk = (ras_to_ijk @ np.c_[np.array(corners), np.ones(len(corners))].T)[:3].T
        lo = np.maximum(np.floor(ijk.min(0)).astype(int) - 1, 0)
        hi = np.minimum(np.ceil(ijk.max(0)).astype(int) + 1, np.array(dims) - 1)
        if np.any(hi < lo):
            continue
        boxes.append((lo, hi))
        specs.append((LABEL_OF.get(v.name, 1), lo, hi, center, u, w, n, size_u, size_w, offsets, half_t))
    if not boxes:
        return np.zeros((1, 1, 1), np.uint8), (0, 0, 0)
    lo_all = np.min([b[0] for b in boxes], axis=0)
    hi_all = np.max([b[1] for b in boxes], axis=0)
    shape_ijk = hi_all - lo_all + 1
    mask = np.zeros((shape_ijk[2], shape_ijk[1], shape_ijk[0]), np.uint8)
    for label, lo, hi, center, u, w, n, size_u, size_w, offsets, half_t in specs:
        ii, jj, kk = np.meshgrid(
            np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), np.arange(lo[2], hi[2] + 1), indexing="ij"
        )
        pts = np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)])
        ras = (ijk_to_ras @ pts)[:3].T - center
        du, dw, dn = ras @ u, ras @ w, ras @ n
        inside = (np.abs(du) <= size_u / 2) & (np.abs(dw) <= size_w / 2)
        on_slice = np.zeros_like(inside)
        for o in offsets:
            on_slice |= np.abs(dn - o) <= half_t + 1e-6
        sel = inside & on_slice
        i = ii.ravel()[sel] - lo_all[0]
        j = jj.ravel()[sel] - lo_all[1]
        k = kk.ravel()[sel] - lo_all[2]
        mask[k, j, i] = label
    return mask, tuple(int(x) for x in lo_all)


def _ijk_to_ras_array(volume_node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def make_patch_labelmap(scene, result: CaseResult, ct_node, node=None, name: str = "BMD patches", color_table=None):
    """A label map on the CT's grid (cropped to the patches) marking the voxels measured."""
    ijk_to_ras = _ijk_to_ras_array(ct_node)
    dims = ct_node.GetImageData().GetDimensions()
    mask, (i0, j0, k0) = patch_voxel_mask(result, ijk_to_ras, dims)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    image = vtk.vtkImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    from vtk.util import numpy_support

    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask.ravel(order="C"), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
    node.SetAndObserveImageData(image)
    origin_ras = ijk_to_ras @ np.array([i0, j0, k0, 1.0])
    m = vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASDirectionMatrix(m)
    node.SetIJKToRASDirectionMatrix(m)
    node.SetSpacing(ct_node.GetSpacing())
    node.SetOrigin(origin_ras[:3])
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetAndObserveColorNodeID((color_table or vertebra_color_table(scene)).GetID())
    node.SetAttribute(ATTR_ROLE, "patches")
    return node
