"""Read a pipeline output folder into an MRML scene (Qt-free; works in Slicer and slicer-core).

Everything here takes the scene as an argument and talks to nodes and storage nodes only,
so the same code builds the Slicer panel's results and the tests' scenes.

What ``load_results`` puts in the scene:
- the CT (given as a node, or read from a file),
- ``labels.nrrd`` as a label map node with an L1-L4 colour table,
- a segmentation node with segments named L1..L4 (SNOMED CT terminology, fixed colours),
  the CT as its reference geometry (so DICOM SEG export and the Segment Editor work),
- the BMD table node (one row per vertebra and a last row for the mean),
- one markups ROI box per trabecular patch and a label map of the exact CT voxels the
  patches were sampled from.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import vtk

import slicer
from osteobmd.config import LABEL_COLORS, LABEL_OF, VERTEBRA_NAMES, classify_bmd
from osteobmd.results import LABELS_NRRD, RESULTS_JSON, CaseResult, PatchInfo

# SNOMED CT codes of the lumbar vertebrae (the codes DICOM SEG and Slicer's terminology use).
SNOMED_VERTEBRA = {
    "L1": ("66794005", "L1 vertebra"),
    "L2": ("14293000", "L2 vertebra"),
    "L3": ("36470004", "L3 vertebra"),
    "L4": ("11994002", "L4 vertebra"),
}
# One colour per level, the same as the pipeline's figures (overview.png, patches.png).
# Slicer's shipped terminology has no recommended colour for single lumbar vertebrae:
# the pipeline's figure colours (config.LABEL_COLORS) are used, so panel and overview.png agree.
ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")

# Table columns: (name, kind). Titles shown in the GUI can be translated by the caller.
TABLE_COLUMNS: Tuple[Tuple[str, str], ...] = (
    ("Vertebra", "string"),
    ("BMD", "double"),
    ("Class", "string"),
    ("Valid", "string"),
    ("Reasons", "string"),
    ("Patch centre", "string"),
    ("Corrected mask", "string"),
)
BMD_UNIT = "mg/cm3"

# Node attributes that let the panel find its results again after a scene reload.
ATTR_ROLE = "OsteoBMD.Role"
ATTR_OUTPUT_DIR = "OsteoBMD.OutputDir"
ATTR_MEAN = "OsteoBMD.MeanBMD"
ATTR_CLASS = "OsteoBMD.Classification"
ATTR_MASK_SOURCE = "OsteoBMD.MaskSource"


def terminology_entry(name: str) -> str:
    """Slicer terminology entry string of a lumbar vertebra (DICOM/SNOMED CT codes)."""
    code, meaning = SNOMED_VERTEBRA[name]
    category = "^".join(ANATOMICAL_STRUCTURE)
    return (
        "Segmentation category and type - DICOM master list"
        f"~{category}~SCT^{code}^{meaning}~^^"
        "~Anatomic codes - DICOM master list~^^~^^"
    )


def vertebra_color(name: str) -> Tuple[float, float, float]:
    r, g, b = LABEL_COLORS[name]
    return (float(r), float(g), float(b))


def lps_to_ras(p: Sequence[float]) -> List[float]:
    return [-float(p[0]), -float(p[1]), float(p[2])]


@dataclass
class ResultNodes:
    """The nodes ``load_results`` made or updated."""

    result: CaseResult
    output_dir: str
    ct: object
    labelmap: Optional[object] = None
    segmentation: Optional[object] = None
    table: Optional[object] = None
    color_table: Optional[object] = None
    patch_rois: Dict[str, object] = field(default_factory=dict)
    patch_labelmap: Optional[object] = None


# --------------------------------------------------------------------------- reading files


def _read_volume(scene, path: str, class_name: str, name: str, node=None):
    if not os.path.exists(path):
        raise FileNotFoundError(f"'{path}' does not exist.")
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
    storage = node.GetStorageNode()
    if storage is None:
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(path)
    if class_name == "vtkMRMLLabelMapVolumeNode":
        storage.SetCenterImage(False)
    if not storage.ReadData(node):
        raise RuntimeError(f"'{os.path.basename(path)}' could not be read as a volume.")
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def load_ct(scene, ct_path: str, name: Optional[str] = None, method_window: bool = True):
    """Read a CT file (NRRD, NIfTI, MHA) into a scalar volume node, shown in the method's
    window (``method_window=False``: the automatic window Slicer gives a loaded volume)."""
    if name is None:
        name = "CT"
    node = _read_volume(scene, str(ct_path), "vtkMRMLScalarVolumeNode", name)
    display = node.GetDisplayNode()
    if display is not None and method_window:
        display.AutoWindowLevelOff()
        display.SetWindowLevel(1000, 350)  # the method's window: WL 350 / WW 1000
    return node


def vertebra_color_table(scene, name: str = "OsteoBMD vertebrae"):
    """A colour table 0 = background, 1..4 = L1..L4 (reused when it already exists)."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    table.SetNumberOfColors(len(VERTEBRA_NAMES) + 1)
    table.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for vname in VERTEBRA_NAMES:
        r, g, b = vertebra_color(vname)
        table.SetColor(LABEL_OF[vname], vname, r, g, b, 1.0)
    table.SetAttribute(ATTR_ROLE, "colors")
    return table


def load_labelmap(scene, path: str, name: str, color_table=None, node=None):
    """Read labels.nrrd into a label map node coloured L1..L4."""
    node = _read_volume(scene, str(path), "vtkMRMLLabelMapVolumeNode", name, node=node)
    if color_table is None:
        color_table = vertebra_color_table(scene)
    node.GetDisplayNode().SetAndObserveColorNodeID(color_table.GetID())
    node.SetAttribute(ATTR_ROLE, "labels")
    return node


# --------------------------------------------------------------------------- segmentation


def set_segment_terminology(segment, name: str) -> None:
    segment.SetName(name)
    segment.SetColor(*vertebra_color(name))
    segment.SetTag(segment.GetTerminologyEntryTagName(), terminology_entry(name))


def labelmap_to_segmentation(scene, labelmap_node, ct_node, segmentation_node=None, name: Optional[str] = None):
    """Make (or refill) a segmentation with segments L1..L4 from a 0..4 label map.

    The segment IDs are the vertebra names, label value k goes to segment VERTEBRA_NAMES[k-1],
    and the CT is the reference geometry.
    """
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or "Vertebrae")
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    segmentation_node.SetNodeReferenceID(segmentation_node.GetReferenceImageGeometryReferenceRole(), ct_node.GetID())
    segmentation = segmentation_node.GetSegmentation()
    segment_ids = vtk.vtkStringArray()
    for vname in VERTEBRA_NAMES:
        if segmentation.GetSegment(vname) is None:
            segmentation.AddEmptySegment(vname, vname, vertebra_color(vname))
        set_segment_terminology(segmentation.GetSegment(vname), vname)
        segment_ids.InsertNextValue(vname)
    ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
        labelmap_node, segmentation_node, segment_ids
    )
    if not ok:
        raise RuntimeError("The label map could not be imported into the segmentation.")
    segmentation_node.SetAttribute(ATTR_ROLE, "segmentation")
    return segmentation_node


# --------------------------------------------------------------------------- table


def _fmt_point(p: Optional[Sequence[float]]) -> str:
    if not p:
        return ""
    return ", ".join(f"{v:.1f}" for v in p)


def bmd_rows(result: CaseResult) -> List[dict]:
    """The table's rows as dicts (one per vertebra, then the mean)."""
    rows = []
    for v in result.vertebrae:
        center = v.patch.center_lps_mm if v.patch else v.center_lps_mm
        rows.append({
            "Vertebra": v.name,
            "BMD": float("nan") if v.bmd_mg_cm3 is None else float(v.bmd_mg_cm3),
            "Class": classify_bmd(v.bmd_mg_cm3) if v.bmd_mg_cm3 is not None else "",
            "Valid": "yes" if v.valid else "no",
            "Reasons": "; ".join(v.reasons),
            "Patch centre": _fmt_point(lps_to_ras(center)) if center else "",
            "Corrected mask": "yes" if v.from_corrected_mask else "no",
        })
    mean = result.mean_bmd_mg_cm3
    rows.append({
        "Vertebra": "Mean (" + ", ".join(result.mean_vertebrae) + ")",
        "BMD": float("nan") if mean is None else float(mean),
        "Class": result.classification or "",
        "Valid": "yes" if result.valid else "no",
        "Reasons": "; ".join(result.messages),
        "Patch centre": "",
        "Corrected mask": "yes" if result.mask_source == "user" else "no",
    })
    return rows


def make_bmd_table(scene, result: CaseResult, table_node=None, name: str = "BMD", titles: Optional[Dict[str, str]] = None):
    """Fill (or create) the BMD table node from a CaseResult."""
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    was_modifying = table_node.StartModify()
    table_node.RemoveAllColumns()
    rows = bmd_rows(result)
    table = table_node.GetTable()
    for col_name, kind in TABLE_COLUMNS:
        array = vtk.vtkDoubleArray() if kind == "double" else vtk.vtkStringArray()
        array.SetName(col_name)
        for row in rows:
            if kind == "double":
                array.InsertNextValue(row[col_name])
            else:
                array.InsertNextValue(str(row[col_name]))
        table.AddColumn(array)
    if hasattr(table_node, "SetUseColumnTitleAsColumnHeader"):
        table_node.SetUseColumnTitleAsColumnHeader(True)
    else:  # Slicer before 5.9
        table_node.SetUseColumnNameAsColumnHeader(True)
    table_node.SetColumnUnitLabel("BMD", BMD_UNIT)
    table_node.SetColumnDescription("BMD", "Trabecular bone mineral density (QCT-equivalent)")
    table_node.SetColumnDescription("Patch centre", "Centre of the trabecular patch, RAS millimetres")
    table_node.SetColumnDescription("Corrected mask", "Measured on a mask the reader corrected")
    for col_name, title in (titles or {}).items():
        table_node.SetColumnTitle(col_name, title)
    table_node.SetAttribute(ATTR_ROLE, "table")
    table_node.SetAttribute(ATTR_MEAN, "" if result.mean_bmd_mg_cm3 is None else f"{result.mean_bmd_mg_cm3:.3f}")
    table_node.SetAttribute(ATTR_CLASS, result.classification or "")
    table_node.SetAttribute(ATTR_MASK_SOURCE, result.mask_source)
    table_node.Modified()
    table_node.EndModify(was_modifying)
    return table_node


def vertebra_name_of_row(table_node, row: int) -> Optional[str]:
    """The vertebra a table row shows, or None for the mean row / out of range."""
    if row < 0 or row >= table_node.GetNumberOfRows():
        return None
    name = table_node.GetCellText(row, 0)
    return name if name in VERTEBRA_NAMES else None


# --------------------------------------------------------------------------- patches


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
        roi.SetAttribute("OsteoBMD.Vertebra", v.name)
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


# --------------------------------------------------------------------------- views


def vertebra_center_ras(result: CaseResult, name: str) -> Optional[List[float]]:
    v = result.vertebra(name)
    if v is None:
        return None
    center = v.patch.center_lps_mm if v.patch else v.center_lps_mm
    return lps_to_ras(center) if center else None


def spine_center_ras(result: CaseResult) -> Optional[List[float]]:
    centers = [vertebra_center_ras(result, v.name) for v in result.vertebrae]
    centers = [c for c in centers if c]
    if not centers:
        return None
    return [float(x) for x in np.mean(np.array(centers), axis=0)]


def jump_slices_to(scene, ras: Sequence[float]) -> int:
    """Centre every slice view of the scene on a RAS point; returns how many were moved."""
    moved = 0
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        slice_node = scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
        slice_node.JumpSliceByCentering(float(ras[0]), float(ras[1]), float(ras[2]))
        moved += 1
    return moved


def show_results(scene, nodes: ResultNodes) -> None:
    """CT in the background, the segmentation outlined, the patches drawn; the views
    centred on the spine (the sagittal view through the canal)."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        composite.SetBackgroundVolumeID(nodes.ct.GetID())
        composite.SetLabelVolumeID(nodes.patch_labelmap.GetID() if nodes.patch_labelmap is not None else None)
        composite.SetLabelOpacity(0.8)
    if nodes.segmentation is not None:
        display = nodes.segmentation.GetDisplayNode()
        if display is not None:
            display.SetVisibility(True)
            display.SetVisibility2DFill(True)
            display.SetVisibility2DOutline(True)
            display.SetOpacity2DFill(0.25)
    if nodes.labelmap is not None:
        # The label map duplicates the segmentation; keep it out of the views.
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            if composite.GetLabelVolumeID() == nodes.labelmap.GetID():
                composite.SetLabelVolumeID(None)
    center = spine_center_ras(nodes.result)
    if center is not None:
        jump_slices_to(scene, center)


# --------------------------------------------------------------------------- all together


def load_results(scene, output_dir: str, ct_node=None, ct_path: Optional[str] = None,
                 previous: Optional[ResultNodes] = None, update_segmentation: bool = True,
                 name_prefix: Optional[str] = None, table_titles: Optional[Dict[str, str]] = None) -> ResultNodes:
    """Read ``output_dir`` (results.json, labels.nrrd) into the scene.

    ``previous``: nodes of an earlier load to update in place (a recompute).
    ``update_segmentation=False`` keeps the segmentation as it is: after a recompute from
    the reader's corrected masks the segmentation already holds what the reader drew.
    """
    output_dir = str(output_dir)
    result = CaseResult.read_json(os.path.join(output_dir, RESULTS_JSON))
    if ct_node is None:
        if previous is not None:
            ct_node = previous.ct
        elif ct_path is not None:
            ct_node = load_ct(scene, ct_path)
        else:
            raise ValueError("load_results needs the CT node or the CT file.")
    prefix = name_prefix if name_prefix is not None else (ct_node.GetName() + " ")
    colors = vertebra_color_table(scene)
    nodes = ResultNodes(result=result, output_dir=output_dir, ct=ct_node, color_table=colors)

    labels_path = os.path.join(output_dir, LABELS_NRRD)
    if previous is not None and not update_segmentation:
        nodes.labelmap = previous.labelmap
        nodes.segmentation = previous.segmentation
    elif os.path.exists(labels_path):
        nodes.labelmap = load_labelmap(
            scene, labels_path, prefix + "vertebrae labels", colors,
            node=previous.labelmap if previous is not None else None,
        )
        nodes.segmentation = labelmap_to_segmentation(
            scene, nodes.labelmap, ct_node,
            segmentation_node=previous.segmentation if previous is not None else None,
            name=prefix + "vertebrae",
        )

    nodes.table = make_bmd_table(
        scene, result, table_node=previous.table if previous is not None else None,
        name=prefix + "BMD", titles=table_titles,
    )
    nodes.patch_rois = add_patch_rois(
        scene, result, ct_node, existing=previous.patch_rois if previous is not None else None, name_prefix=prefix,
    )
    nodes.patch_labelmap = make_patch_labelmap(
        scene, result, ct_node, node=previous.patch_labelmap if previous is not None else None,
        name=prefix + "BMD patches", color_table=colors,
    )
    for node in (nodes.labelmap, nodes.segmentation, nodes.table, nodes.patch_labelmap):
        if node is not None:
            node.SetAttribute(ATTR_OUTPUT_DIR, output_dir)
    return nodes
