"""Are L1-L4 named right? Check the names against anatomy the network also sees.

A network trained on sagittal images can name levels by where they sit in the image
rather than by counting; when the top or bottom of the spine is out of view it may call
L2 "L1". When the segmentation network also outputs the anchors (T12 above L1; L5 and
the sacrum below L4), the chain T12 | L1 L2 L3 L4 | L5 | sacrum must be contiguous and
in order. The verdict travels with the result: an anchor seen and consistent, an anchor
contradicting the names, or no anchor in view (named without an anchor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from .config import ANCHOR_CLASSES, LABEL_OF

# Neighbouring bodies' centres lie one vertebra apart: at most this many times the
# median L1-L4 step (a missing body in between doubles it).
MAX_STEP_RATIO = 1.6
# Fewer pixels than this share of a lumbar body is noise, not an anchor.
MIN_ANCHOR_SHARE = 0.25


@dataclass
class LevelCheck:
    anchor: str  # "sacrum", "T12", "sacrum+T12" or "none"
    consistent: Optional[bool]  # None when no anchor is in view
    messages: List[str] = field(default_factory=list)


def _centres(labels2d: np.ndarray, spacing_zy: Tuple[float, float]) -> Dict[int, Tuple[float, int]]:
    """z centre (mm) and pixel count of the largest component of each class."""
    out = {}
    for value in np.unique(labels2d):
        if value == 0:
            continue
        comps, n = ndimage.label(labels2d == value)
        sizes = np.bincount(comps.ravel())
        sizes[0] = 0
        big = comps == int(np.argmax(sizes))
        z = np.nonzero(big)[0]
        out[int(value)] = (float(z.mean()) * spacing_zy[0], int(big.sum()))
    return out


def check_levels(labels2d: np.ndarray, spacing_zy: Tuple[float, float]) -> LevelCheck:
    """Judge the names of a fused sagittal map with classes 1..4 and the anchor classes."""
    c = _centres(labels2d, spacing_zy)
    lumbar = [LABEL_OF[n] for n in ("L1", "L2", "L3", "L4") if LABEL_OF[n] in c]
    if len(lumbar) < 2:
        return LevelCheck("none", None, ["Too few lumbar levels segmented to check their names."])
    zs = [c[v][0] for v in lumbar]
    steps = np.abs(np.diff(zs)) / np.diff(lumbar)
    step = float(np.median(steps))
    body = float(np.median([c[v][1] for v in lumbar]))
    anchors = {name: c[v] for name, v in ANCHOR_CLASSES.items() if v in c and c[v][1] >= MIN_ANCHOR_SHARE * body}

    def follows(z_upper: float, z_lower: float, n_steps: int = 1) -> bool:
        gap = z_upper - z_lower  # z grows superior: the upper one has the larger z
        return 0 < gap <= MAX_STEP_RATIO * step * n_steps

    seen, problems = [], []
    if steps.max() > MAX_STEP_RATIO * steps.min():
        problems.append("the L1-L4 labels are not evenly spaced (a level between them is unlabelled or misnamed)")
    z_l4 = c.get(LABEL_OF["L4"], (None,))[0]
    if "sacrum" in anchors:
        seen.append("sacrum")
        zs_sac = anchors["sacrum"][0]
        if z_l4 is None:
            problems.append("the sacrum is in view but L4 was not found above it")
        elif "L5" in anchors:
            if not (follows(z_l4, anchors["L5"][0]) and anchors["L5"][0] > zs_sac):
                problems.append("L5 does not lie between L4 and the sacrum")
        elif follows(z_l4, zs_sac):
            problems.append(
                "the body named L4 sits directly on the sacrum (no L5 between): the names may be shifted "
                "by one level, or this spine has four lumbar vertebrae"
            )
    z_l1 = c.get(LABEL_OF["L1"], (None,))[0]
    if "T12" in anchors:
        seen.append("T12")
        if z_l1 is None:
            problems.append("T12 is in view but L1 was not found below it")
        elif not follows(anchors["T12"][0], z_l1):
            problems.append("T12 does not lie directly above L1")
    anchor = "+".join(seen) if seen else "none"
    if not seen and not problems:
        return LevelCheck(anchor, None, [
            "Neither the sacrum nor T12 is in view: the levels are named without an anatomical anchor; "
            "confirm L1-L4 on the sagittal view."
        ])
    if problems:
        return LevelCheck(anchor, False, ["Level names doubtful: " + "; ".join(problems) + "."])
    return LevelCheck(anchor, True, [f"Level names consistent with the {' and '.join(seen)} in view."])
