"""Application-logic set-up for a bare MRML scene in plain Python (slicer-core).

Inside 3D Slicer the application already owns the scene and all module logic: never call
this there. Outside Slicer (the tests, and the command line writing ``scene.mrb``) a bare
``vtkMRMLScene`` lacks the logic that ``ReadFromMRB``, closed-surface conversion and
segment export rely on; ``new_scene()`` adds it.
"""

import os
import shutil
import tempfile
from typing import Optional

import slicer


class SceneContext:
    """A scene and the logic objects that must stay alive as long as the scene is used."""

    def __init__(self, scene, app_logic, color_logic, segmentations_logic, remote_io, data_io_logic, work_dir):
        self.scene = scene
        self.app_logic = app_logic
        self.color_logic = color_logic
        self.segmentations_logic = segmentations_logic
        self.remote_io = remote_io
        self.data_io_logic = data_io_logic
        self.work_dir = work_dir

    def close(self) -> None:
        """Clear the scene, release the logic and remove the scratch folder."""
        self.scene.Clear(1)
        self.color_logic.SetMRMLScene(None)
        self.remote_io.SetMRMLScene(None)
        self.app_logic.SetMRMLScene(None)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> "SceneContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def setup_scene(scene, work_dir: Optional[str] = None) -> SceneContext:
    """Attach the application logic a bare slicer-core scene needs and return it."""
    if work_dir is None:
        work_dir = tempfile.mkdtemp(prefix="osteobmd-mrml-")
    home = os.path.join(work_dir, "home")
    # The colour logic looks for optional colour files under <home>/<share>/ColorFiles.
    os.makedirs(os.path.join(home, "share", "ColorFiles"), exist_ok=True)
    cache_dir = os.path.join(work_dir, "cache")
    os.makedirs(cache_dir, exist_ok=True)

    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetHomeDirectory(home)
    app_logic.SetShareDirectory("share")
    app_logic.SetTemporaryPath(work_dir)
    app_logic.SetMRMLScene(scene)

    color_logic = slicer.vtkSlicerColorLogic()
    color_logic.SetMRMLApplicationLogic(app_logic)
    color_logic.SetMRMLScene(scene)  # adds the default colour tables (Labels, Grey, ...)
    app_logic.SetColorLogic(color_logic)

    segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations_logic.SetMRMLApplicationLogic(app_logic)
    segmentations_logic.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Segmentations", segmentations_logic)

    remote_io = slicer.vtkMRMLRemoteIOLogic()
    remote_io.SetMRMLScene(scene)
    data_io_logic = slicer.vtkDataIOManagerLogic()
    data_io_logic.SetMRMLApplicationLogic(app_logic)
    data_io_logic.SetAndObserveDataIOManager(remote_io.GetDataIOManager())
    remote_io.GetCacheManager().SetRemoteCacheDirectory(cache_dir)
    remote_io.AddDataIOToScene()

    return SceneContext(scene, app_logic, color_logic, segmentations_logic, remote_io, data_io_logic, work_dir)


def new_scene(work_dir: Optional[str] = None) -> SceneContext:
    """A fresh scene with its application logic, for use outside Slicer."""
    return setup_scene(slicer.vtkMRMLScene(), work_dir)
