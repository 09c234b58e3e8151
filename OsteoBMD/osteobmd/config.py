"""Every number of the method in one place (docs/METHOD.md sections 1-4).

Defaults follow the paper where it is explicit; where the project decided (marked
"Decision" in METHOD.md) the paper's value stays reachable through a field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Tuple

VERTEBRA_NAMES: Tuple[str, ...] = ("L1", "L2", "L3", "L4")
LABEL_OF = {name: i + 1 for i, name in enumerate(VERTEBRA_NAMES)}  # L1 -> 1 ... L4 -> 4
# The segmentation network may also segment the neighbours that anchor the level names
# (Decision: the label map keeps only 1..4; these classes serve the naming check).
ANCHOR_CLASSES = {"L5": 5, "sacrum": 6, "T12": 7}

# One colour per level (RGB 0-1), shared by the figures and the Slicer segments.
LABEL_COLORS = {
    "L1": (0.90, 0.30, 0.24),
    "L2": (0.98, 0.75, 0.18),
    "L3": (0.30, 0.75, 0.36),
    "L4": (0.25, 0.55, 0.90),
}

# ACR / ISCD thresholds on trabecular BMD in mg/cm3.
OSTEOPOROSIS_BELOW = 80.0
NORMAL_ABOVE = 120.0
CLASSES = ("osteoporosis", "osteopenia", "normal")
# One colour per class (and None: no valid measurement), shared by the figures and the panel.
CLASS_COLORS = {"osteoporosis": "#c0392b", "osteopenia": "#e67e22", "normal": "#27ae60", None: "#7f8c8d"}

# Decision: the paper's QCT averaged three vertebrae; the mean is over L1-L3 unless asked otherwise.
DEFAULT_MEAN_VERTEBRAE: Tuple[str, ...] = ("L1", "L2", "L3")


@dataclass
class CanalConfig:
    """Spinal-canal detection (paper 3.1)."""

    bone_threshold_hu: float = 150.0
    # Decision: work on a coarser copy of the axial slices; the canal is ~15 mm wide.
    working_spacing_mm: float = 1.5
    closing_radius_mm: float = 3.0
    # A canal cross-section is 1-4 cm2; holes outside this area are not the canal.
    min_area_mm2: float = 40.0
    max_area_mm2: float = 600.0
    # 3D denoising: the canal's pieces, chained along z, span at least this much.
    min_length_mm: float = 20.0
    # Paper: 10 consecutive sagittal images (~0.7 mm each); Decision: in millimetres.
    slab_width_mm: float = 7.0


@dataclass
class SegmentationConfig:
    """Sagittal preprocessing and R2U-Net inference (paper 3.2)."""

    window_level: float = 350.0
    window_width: float = 1000.0
    # Decision: resample the sagittal image to this spacing before the network.
    spacing_mm: float = 1.5
    # None: run the fully convolutional network on the whole (padded) image.
    # 512: the paper's centre crop / zero pad.
    crop_size: int | None = None


@dataclass
class PatchConfig:
    """Trabecular patch extraction (paper 3.3)."""

    size_px: int = 32
    # Decision: the patch is sampled on this grid, so 32 px is always ~22 mm of bone,
    # whatever the scan's spacing (paper scans: ~0.7 mm in plane, 1 mm reconstruction).
    spacing_mm: float = 0.7
    slice_step_mm: float = 1.0
    strip_threshold_hu: float = 150.0
    cortex_margin_mm: float = 2.5
    metal_hu: float = 1500.0


@dataclass
class PipelineConfig:
    """The method's settings; what the user chooses per run is options.RunOptions."""

    canal: CanalConfig = field(default_factory=CanalConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def classify_bmd(bmd: float) -> str:
    """ACR class of a (mean) trabecular BMD in mg/cm3."""
    if bmd < OSTEOPOROSIS_BELOW:
        return "osteoporosis"
    if bmd <= NORMAL_ABOVE:
        return "osteopenia"
    return "normal"
