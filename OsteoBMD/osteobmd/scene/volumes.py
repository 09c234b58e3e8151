"""CT and label-map volume nodes read from files, and the L1-L4 colour table."""

import os
from typing import Optional

from osteobmd.config import LABEL_OF, VERTEBRA_NAMES

from .conventions import ATTR_ROLE, vertebra_color


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
