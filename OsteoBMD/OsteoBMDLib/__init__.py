"""What the OsteoBMD panel does, without Qt: tested outside Slicer on slicer-core scenes.

session      the reader's measurement session: runs, results in the scene, mask edits,
             ground truth, the case list (builds on osteobmd.scene)
worker       `osteobmd run` in a background process, with progress and cancel
panel_state  what the panel's widgets show and allow; texts: its words
case_list, ground_truth, masks, views, installation: one concern each

Submodules that need Slicer's MRML (``import slicer``) are imported on use, so that
``worker`` and ``case_list`` can be used without slicer-core.
"""
