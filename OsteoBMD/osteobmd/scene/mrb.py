"""Write ``scene.mrb`` (CT, segmentation L1-L4, BMD table, patches) from an output folder.

Used outside Slicer by ``osteobmd run`` when slicer-core is installed (optional extra
``slicer``): the bundle opens in 3D Slicer by drag and drop.
"""

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import vtk

from osteobmd.io import read_ct
from osteobmd.results import SCENE_MRB

from .bare_scene import new_scene
from .output_folder import load_results
from .volumes import add_ct_image


def write_scene_mrb(out_dir, ct_path=None, mrb_path: Optional[str] = None, ct_image=None,
                    timings: Optional[Dict[str, Tuple[float, float]]] = None) -> Path:
    """Build a scene from ``out_dir`` and the CT and write it as a Medical Reality Bundle.

    The CT is ``ct_image`` (a SimpleITK image, e.g. the pipeline's LPS copy) or ``ct_path``
    (any CT ``osteobmd run`` reads: NIfTI, NRRD, MHA, a DICOM folder). ``timings``, when
    given, receives (wall, CPU) seconds of each part (what benchmarks/benchmark_scene.py prints).
    """
    out_dir = Path(out_dir)
    mrb_path = Path(mrb_path) if mrb_path else out_dir / SCENE_MRB
    if ct_path is None and ct_image is None:
        raise ValueError("write_scene_mrb needs the CT: pass ct_path or ct_image.")
    clock = _Clock(timings)
    if ct_image is None:
        ct_image = read_ct(ct_path)
        clock.lap("CT file read")
    context = new_scene()
    try:
        scene = context.scene
        clock.lap("scene set-up")
        # Straight from the voxels in memory: no write and read back of a raw copy.
        ct_node = add_ct_image(scene, ct_image, name="CT")
        clock.lap("CT node")
        nodes = load_results(scene, str(out_dir), ct_node=ct_node, name_prefix="")
        # The label map duplicates the segmentation; the bundle keeps the segmentation.
        if nodes.labelmap is not None:
            scene.RemoveNode(nodes.labelmap)
        _give_storage_nodes(scene)
        scene.SetRootDirectory(str(out_dir))
        clock.lap("results nodes")
        _write_bundle(scene, mrb_path)
        clock.lap("WriteToMRB")
        return mrb_path
    finally:
        context.close()
        clock.lap("clean-up")


def _write_bundle(scene, mrb_path: Path) -> None:
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


class _Clock:
    """Wall and CPU seconds since the last lap, recorded under a name when a timings dict is given
    (CPU time too because on a shared machine the wall time says little)."""

    def __init__(self, timings: Optional[Dict[str, Tuple[float, float]]]):
        self.timings = timings
        self.last = (time.perf_counter(), time.process_time())

    def lap(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        if self.timings is not None:
            self.timings[name] = (now[0] - self.last[0], now[1] - self.last[1])
        self.last = now


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
        # Volumes and the segmentation are gzipped by their storage node (for the CT, ITK's
        # default level: a quarter of the time of Teem's "normal" preset for a 5 % larger file);
        # WriteToMRB's zip only stores them, so nothing is compressed twice.
        storage.SetUseCompression(1)
        if storage.IsA("vtkMRMLSegmentationStorageNode"):
            # Only the box around L1-L4, not the CT's whole grid: writing the full grid's
            # zeros took 16 s of the scene's 23 on a 512 x 512 x 400 CT. The segmentation
            # keeps the CT as its reference geometry, so Slicer still edits it on that grid.
            storage.SetCropToMinimumExtent(True)
        if not storage.GetFileName():
            ext = next((e for cls, e in names.items() if node.IsA(cls)), None)
            if ext is None:
                ext = storage.GetDefaultWriteFileExtension()
                ext = "." + ext if ext else ".dat"
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in node.GetName()) or node.GetID()
            storage.SetFileName(safe + ext)
