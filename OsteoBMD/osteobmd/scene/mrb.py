"""Write ``scene.mrb`` (CT, segmentation L1-L4, BMD table, patches) from an output folder.

Used outside Slicer by ``osteobmd run`` when slicer-core is installed (optional extra
``slicer``): the bundle opens in 3D Slicer by drag and drop.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import vtk

from osteobmd.results import SCENE_MRB

from .bare_scene import new_scene
from .output_folder import load_results
from .volumes import load_ct


def write_scene_mrb(out_dir, ct_path=None, mrb_path: Optional[str] = None, ct_image=None) -> Path:
    """Build a scene from ``out_dir`` and the CT and write it as a Medical Reality Bundle.

    The CT is ``ct_path`` (a file Slicer reads: NRRD, NIfTI, MHA) or ``ct_image`` (a
    SimpleITK image, e.g. the pipeline's LPS copy). A DICOM folder needs ``ct_image``.
    """
    out_dir = Path(out_dir)
    mrb_path = Path(mrb_path) if mrb_path else out_dir / SCENE_MRB
    if ct_path is None and ct_image is None:
        raise ValueError("write_scene_mrb needs the CT: pass ct_path or ct_image.")
    context = new_scene()
    try:
        scene = context.scene
        if ct_image is not None or Path(ct_path).is_dir():
            if ct_image is None:
                from osteobmd.io import read_ct

                ct_image = read_ct(ct_path)
            import SimpleITK as sitk

            ct_file = os.path.join(context.work_dir, "ct.nrrd")
            sitk.WriteImage(ct_image, ct_file, False)
            ct_path = ct_file
        ct_node = load_ct(scene, str(ct_path), name="CT")
        nodes = load_results(scene, str(out_dir), ct_node=ct_node, name_prefix="")
        # The label map duplicates the segmentation; the bundle keeps the segmentation.
        if nodes.labelmap is not None:
            scene.RemoveNode(nodes.labelmap)
        _give_storage_nodes(scene)
        scene.SetRootDirectory(str(out_dir))
        # Write beside the target under the final name (the bundle's inner folder is named
        # after the file), then move it into place: a failed write leaves no broken bundle.
        scratch = tempfile.mkdtemp(prefix=".scene-", dir=str(mrb_path.parent))
        try:
            tmp = Path(scratch) / mrb_path.name
            # The zip writer reports every file it adds: collect its messages instead.
            previous_window = vtk.vtkOutputWindow.GetInstance()
            messages = vtk.vtkStringOutputWindow()
            vtk.vtkOutputWindow.SetInstance(messages)
            try:
                ok = scene.WriteToMRB(str(tmp))
            finally:
                vtk.vtkOutputWindow.SetInstance(previous_window)
            if not ok or not tmp.exists():
                detail = messages.GetOutput().strip().splitlines()[-1:] or [""]
                raise OSError(f"Could not write '{mrb_path}'. Check that the folder is writable. {detail[0]}")
            os.replace(tmp, mrb_path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return mrb_path
    finally:
        context.close()


def _give_storage_nodes(scene) -> None:
    """Every storable node needs a storage node and file name for WriteToMRB."""
    names = {
        "vtkMRMLSegmentationNode": ".seg.nrrd",
        "vtkMRMLTableNode": ".tsv",
        "vtkMRMLMarkupsROINode": ".mrk.json",
        "vtkMRMLLabelMapVolumeNode": ".nrrd",
        "vtkMRMLScalarVolumeNode": ".nrrd",
    }
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLStorableNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLStorableNode")
        if node.GetHideFromEditors() or node.IsA("vtkMRMLColorTableNode") and node.GetType() != node.User:
            continue
        storage = node.GetStorageNode()
        if storage is None:
            if not node.AddDefaultStorageNode():
                continue
            storage = node.GetStorageNode()
            if storage is None:
                continue
        if not storage.GetFileName():
            ext = next((e for cls, e in names.items() if node.IsA(cls)), None)
            if ext is None:
                ext = storage.GetDefaultWriteFileExtension()
                ext = "." + ext if ext else ".dat"
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in node.GetName()) or node.GetID()
            storage.SetFileName(safe + ext)
