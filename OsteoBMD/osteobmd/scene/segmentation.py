"""The L1-L4 segmentation node: segments named by level, with SNOMED CT terminology and fixed colours.

Slicer's shipped terminology has no recommended colour for single lumbar vertebrae: the
pipeline's figure colours (config.LABEL_COLORS) are used, so panel and overview.png agree.
"""

from typing import Optional

import vtk

import slicer
from osteobmd.config import VERTEBRA_NAMES

from .conventions import ATTR_ROLE, vertebra_color

# SNOMED CT codes of the lumbar vertebrae (the codes DICOM SEG and Slicer's terminology use).
SNOMED_VERTEBRA = {
    "L1": ("66794005", "L1 vertebra"),
    "L2": ("14293000", "L2 vertebra"),
    "L3": ("36470004", "L3 vertebra"),
    "L4": ("11994002", "L4 vertebra"),
}
ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")


def terminology_entry(name: str) -> str:
    """Slicer terminology entry string of a lumbar vertebra (DICOM/SNOMED CT codes)."""
    code, meaning = SNOMED_VERTEBRA[name]
    category = "^".join(ANATOMICAL_STRUCTURE)
    return (
        "Segmentation category and type - DICOM master list"
        f"~{category}~SCT^{code}^{meaning}~^^"
        "~Anatomic codes - DICOM master list~^^~^^"
    )


def set_segment_terminology(segment, name: str) -> None:
    segment.SetName(name)
    segment.SetColor(*vertebra_color(name))
    segment.SetTag(segment.GetTerminologyEntryTagName(), terminology_entry(name))


def labelmap_to_segmentation(scene, labelmap_node, ct_node, segmentation_node=None, name: Optional[str] = None):
    """Make (or refill) a segmentation with segments L1..L4 from a 0..4 label map.

    The segment IDs are the vertebra names, label value k goes to segment VERTEBRA_NAMES[k-1],
    and the CT is the reference geometry (so DICOM SEG export and the Segment Editor work).
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
