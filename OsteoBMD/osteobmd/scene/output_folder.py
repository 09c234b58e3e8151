"""A pipeline output folder (results.json, labels.nrrd) read into an MRML scene.

What ``load_results`` puts in the scene:
- the CT (given as a node, or read from a file),
- ``labels.nrrd`` as a label map node with an L1-L4 colour table,
- a segmentation node with segments named L1..L4 (SNOMED CT terminology, fixed colours),
  the CT as its reference geometry,
- the BMD table node (one row per vertebra and a last row for the mean),
- one markups ROI box per trabecular patch and a label map of the exact CT voxels the
  patches were sampled from.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, Optional

from osteobmd.results import LABELS_NRRD, RESULTS_JSON, CaseResult

from .conventions import ATTR_OUTPUT_DIR
from .patches import add_patch_rois, make_patch_labelmap
from .segmentation import labelmap_to_segmentation
from .table import make_bmd_table
from .volumes import load_ct, load_labelmap, vertebra_color_table


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
