"""Where the slice views look: centred on the spine or on one vertebra's patch, with the
case's CT, segmentation and patches shown (Qt-free: slice and composite nodes of the scene).

Choosing the layout and fitting the views need Slicer's layout manager: the module does that.
"""

from typing import List, Optional, Sequence

import numpy as np

from osteobmd.results import CaseResult
from osteobmd.scene.conventions import lps_to_ras
from osteobmd.scene.output_folder import ResultNodes


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
