"""Export the (possibly reader-edited) vertebra segmentation as the pipeline's --mask input.

The label map is written in the CT's grid with values 1..4 chosen by segment NAME
(L1..L4; "L1 vertebra", "vertebrae_L1" also match), never by segment order, so a reader who
deletes, re-creates or re-orders segments still gets the right labels.
"""

import os
import re
from typing import Dict, Optional

import numpy as np
import vtk

import slicer
from osteobmd.config import LABEL_OF, VERTEBRA_NAMES
from osteobmd.scene.volumes import vertebra_color_table

_NAME_RE = re.compile(r"(?<![A-Z0-9])L([1-4])(?![0-9])")


class MaskExportError(ValueError):
    """The segmentation cannot be turned into an L1-L4 label map; the text says why."""


def vertebra_of_segment_name(name: str) -> Optional[str]:
    """'L2', 'L2 vertebra', 'vertebrae_L2' -> 'L2'; anything else -> None."""
    found = _NAME_RE.findall((name or "").strip().upper())
    if len(set(found)) != 1:
        return None
    return "L" + found[0]


def vertebra_segments(segmentation_node) -> Dict[str, str]:
    """Map vertebra name -> segment ID, by segment name. Refuses ambiguous names."""
    segmentation = segmentation_node.GetSegmentation()
    mapping: Dict[str, str] = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        name = segmentation.GetSegment(segment_id).GetName()
        vertebra = vertebra_of_segment_name(name)
        if vertebra is None:
            continue
        if vertebra in mapping:
            other = segmentation.GetSegment(mapping[vertebra]).GetName()
            raise MaskExportError(
                f"Two segments are named as {vertebra} ('{other}' and '{name}'). "
                "Rename or delete one of them so that each of L1-L4 has one segment."
            )
        mapping[vertebra] = segment_id
    if not mapping:
        raise MaskExportError(
            "The segmentation has no segment named L1, L2, L3 or L4. Name the vertebra segments "
            "L1 to L4 (the names OsteoBMD gave them) and try again."
        )
    return mapping


def _array_of(volume_node) -> np.ndarray:
    from vtk.util import numpy_support

    image = volume_node.GetImageData()
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])


def _node_ids(scene) -> set:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def export_vertebra_labelmap(scene, segmentation_node, reference_volume_node, labelmap_node=None, name: str = "mask"):
    """A label map node in the reference volume's grid: 0 background, 1..4 = L1..L4 by name."""
    mapping = vertebra_segments(segmentation_node)
    order = [v for v in VERTEBRA_NAMES if v in mapping]
    segment_ids = vtk.vtkStringArray()
    for v in order:
        segment_ids.InsertNextValue(mapping[v])
    created = labelmap_node is None
    if created:
        labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    before = _node_ids(scene)
    ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentation_node, segment_ids, labelmap_node, reference_volume_node
    )
    # The export makes a colour table named after the segments' order; ours is by name.
    for node_id in _node_ids(scene) - before:
        node = scene.GetNodeByID(node_id)
        if node is not None and node.IsA("vtkMRMLColorTableNode"):
            scene.RemoveNode(node)
    if labelmap_node.GetDisplayNode() is not None:
        labelmap_node.GetDisplayNode().SetAndObserveColorNodeID(vertebra_color_table(scene).GetID())
    if not ok:
        if created:
            scene.RemoveNode(labelmap_node)
        raise MaskExportError("The segmentation could not be exported to a label map on the CT's grid.")
    # The export numbers segments 1..n in list order: map them to the vertebra's label value.
    lut = np.zeros(256, np.uint8)
    for index, v in enumerate(order, start=1):
        lut[index] = LABEL_OF[v]
    values = _array_of(labelmap_node)
    remapped = lut[np.clip(values, 0, 255).astype(np.intp)]
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(labelmap_node.GetImageData().GetDimensions())
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().SetScalars(
        numpy_support.numpy_to_vtk(remapped.ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    )
    labelmap_node.SetAndObserveImageData(image)
    return labelmap_node


def write_volume(scene, volume_node, path: str, compress: bool = True) -> str:
    """Write a volume node to a file with a temporary storage node (the node's own storage
    node, e.g. one pointing at the pipeline's output, is left untouched)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    storage = scene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    try:
        storage.SetFileName(str(path))
        storage.SetUseCompression(1 if compress else 0)
        if not storage.WriteData(volume_node):
            raise OSError(f"Could not write '{path}'. Check that the folder is writable and has free space.")
    finally:
        storage.UnRegister(None)
    return str(path)


def export_mask_file(scene, segmentation_node, reference_volume_node, path: str) -> str:
    """Write the segmentation as an L1-L4 label map file for ``osteobmd run --mask``."""
    before = _node_ids(scene)
    try:
        labelmap_node = export_vertebra_labelmap(
            scene, segmentation_node, reference_volume_node, name="OsteoBMD mask export"
        )
        return write_volume(scene, labelmap_node, path)
    finally:
        # Leave the scene as it was: remove the temporary label map and what came with it.
        for node_id in _node_ids(scene) - before:
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)


def labelmap_array(volume_node) -> np.ndarray:
    """Voxel values of a volume node as a (k, j, i) numpy array (a copy)."""
    return _array_of(volume_node).copy()
