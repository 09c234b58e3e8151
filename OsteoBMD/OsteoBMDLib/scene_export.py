"""Moved to ``osteobmd.scene``; kept until ``osteobmd.outputs`` imports it from there."""

from osteobmd.scene import write_scene_mrb  # noqa: F401
