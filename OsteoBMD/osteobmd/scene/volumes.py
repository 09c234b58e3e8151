"""CT and label-map volume nodes (read from files, or made from the pipeline's CT), and the L1-L4 colour table."""

import os
from typing import Optional

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from osteobmd.config import LABEL_OF, VERTEBRA_NAMES

from .conventions import ATTR_ROLE, lps_to_ras, vertebra_color


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
    if method_window and node.GetDisplayNode() is not None:
        _show_in_method_window(node.GetDisplayNode())
    return node


def add_ct_image(scene, image, name: str = "CT"):
    """A scalar volume node holding a SimpleITK CT (any orientation, e.g. the pipeline's LPS copy),
    shown in the method's window. Whole-number HU are stored as int16 (see ``_voxels``)."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("add_ct_image needs a 3D single-component image.")
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    # The display node first, in the method's window: CreateDefaultDisplayNodes would
    # compute an automatic window from all voxels (1.4 s on a 512 x 512 x 400 CT) and drop it.
    display = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    display.SetDefaultColorMap()
    _show_in_method_window(display)
    node.SetAndObserveDisplayNodeID(display.GetID())
    node.SetAndObserveImageData(_voxels(image))
    node.SetIJKToRASMatrix(ijk_to_ras_matrix(image))
    return node


def ijk_to_ras_matrix(image) -> "vtk.vtkMatrix4x4":
    """ITK's index-to-LPS geometry of a SimpleITK image (spacing, direction, origin) as
    Slicer's IJK-to-RAS matrix."""
    axes_lps = np.reshape(image.GetDirection(), (3, 3)) * np.asarray(image.GetSpacing())
    axes_ras = np.diag([-1.0, -1.0, 1.0]) @ axes_lps
    origin_ras = lps_to_ras(image.GetOrigin())
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(axes_ras[r, c]))
        matrix.SetElement(r, 3, origin_ras[r])
    return matrix


def _voxels(image) -> "vtk.vtkImageData":
    """The image's voxels in a vtkImageData (x fastest, as ITK stores them).

    The pipeline holds the CT as float32, but a CT's HU are whole numbers: stored as int16
    they take half the bytes, and the scene's gzip (most of its writing time) has half the
    work. Anything else (fractions, values outside int16, NaN) keeps its own type."""
    values = sitk.GetArrayViewFromImage(image).reshape(-1)
    data = vtk.vtkImageData()
    data.SetDimensions(*image.GetSize())
    if values.dtype.kind == "f":
        data.AllocateScalars(vtk.VTK_SHORT, 1)
        if _copied_exactly(values, numpy_support.vtk_to_numpy(data.GetPointData().GetScalars())):
            return data
    data.AllocateScalars(numpy_support.get_vtk_array_type(values.dtype), 1)
    np.copyto(numpy_support.vtk_to_numpy(data.GetPointData().GetScalars()), values)
    return data


def _copied_exactly(values: np.ndarray, target: np.ndarray, chunk: int = 1 << 20) -> bool:
    """Cast ``values`` into ``target``; True when every value came through unchanged.

    Chunk by chunk, so each cast and its check stay in the cache (ten times faster than
    two passes over a 512 x 512 x 400 CT). A value that does not fit casts to something else
    and fails the check, hence no range test first."""
    with np.errstate(invalid="ignore"):
        for start in range(0, values.size, chunk):
            source, copy = values[start:start + chunk], target[start:start + chunk]
            np.copyto(copy, source, casting="unsafe")
            if not np.array_equal(copy, source):
                return False
    return True


def _show_in_method_window(display) -> None:
    display.AutoWindowLevelOff()
    display.SetWindowLevel(1000, 350)  # the method's window: WL 350 / WW 1000


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
