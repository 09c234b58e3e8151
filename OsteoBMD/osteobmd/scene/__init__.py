"""The MRML scene of a measured case (Qt-free; needs slicer-core, the optional extra ``slicer``).

What both ``scene.mrb`` (``osteobmd run``) and the Slicer panel build: a bare scene's
application logic (``setup``), the CT and label maps (``volumes``), the L1-L4 segmentation
with its terminology (``segmentation``), the BMD table (``table``), the patch boxes and
voxels (``patches``), a whole output folder (``output_folder``) and the bundle (``mrb``).

Importing this package imports ``slicer``: the rest of ``osteobmd`` imports it only inside
the function that writes the scene, so the pipeline runs without slicer-core.
"""

from .mrb import write_scene_mrb

__all__ = ["write_scene_mrb"]
