"""Where the shipped model weights and the sample CT are, however the package was installed.

The repository keeps them at its top level (model_weights/, samples/). A wheel carries
copies inside the package (osteobmd/shipped/, made by setup.py at build time), and the
Slicer extension installs them beside the package (Resources/model_weights,
Resources/Samples; OsteoBMD/CMakeLists.txt). The first of these places that exists wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

PACKAGE_DIR = Path(__file__).resolve().parent
# Filled only in a built wheel; its folder names are setup.py's SHIPPED_* constants.
SHIPPED_DIR = PACKAGE_DIR / "shipped"
# A checkout: the package lives at OsteoBMD/osteobmd/.
CHECKOUT_DIR = PACKAGE_DIR.parent.parent
# An installed Slicer extension: the package sits beside the module's Resources/.
SLICER_RESOURCES_DIR = PACKAGE_DIR.parent / "Resources"

SAMPLE_CT_NAME = "ct.nii.gz"


def weights_dir_candidates() -> List[Path]:
    return [SHIPPED_DIR / "model_weights", CHECKOUT_DIR / "model_weights", SLICER_RESOURCES_DIR / "model_weights"]


def sample_ct_candidates() -> List[Path]:
    return [SHIPPED_DIR / "samples" / SAMPLE_CT_NAME, CHECKOUT_DIR / "samples" / SAMPLE_CT_NAME,
            SLICER_RESOURCES_DIR / "Samples" / SAMPLE_CT_NAME]


def _first_existing(candidates: List[Path]) -> Path:
    # None found: name the checkout's place, which the error messages refer to.
    return next((p for p in candidates if p.exists()), candidates[1])


def weights_dir() -> Path:
    """The folder of the shipped model weights (safetensors + JSON, MODEL_CARD.md)."""
    return _first_existing(weights_dir_candidates())


def sample_ct() -> Path:
    """The bundled real sample CT (TotalSegmentator's example case, Apache-2.0; NOTICE)."""
    return _first_existing(sample_ct_candidates())
