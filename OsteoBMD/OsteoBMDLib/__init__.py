"""OsteoBMD's MRML logic: Qt-free, every function takes the scene as an argument.

Submodules that need Slicer's MRML (``import slicer``) are imported on use, so that
``worker`` and ``case_list`` can be used without slicer-core.
"""
