"""What every node OsteoBMD puts in a scene follows: role attributes, RAS millimetres, level colours."""

from typing import List, Sequence, Tuple

from osteobmd.config import LABEL_COLORS

# Node attributes that let the panel find its results again after a scene reload.
ATTR_ROLE = "OsteoBMD.Role"
ATTR_OUTPUT_DIR = "OsteoBMD.OutputDir"
ATTR_MEAN = "OsteoBMD.MeanBMD"
ATTR_CLASS = "OsteoBMD.Classification"
ATTR_MASK_SOURCE = "OsteoBMD.MaskSource"
ATTR_VERTEBRA = "OsteoBMD.Vertebra"


def lps_to_ras(p: Sequence[float]) -> List[float]:
    """The pipeline's LPS point in the scene's RAS coordinates."""
    return [-float(p[0]), -float(p[1]), float(p[2])]


def vertebra_color(name: str) -> Tuple[float, float, float]:
    """The level's colour: the same as the pipeline's figures (overview.png, patches.png)."""
    r, g, b = LABEL_COLORS[name]
    return (float(r), float(g), float(b))
