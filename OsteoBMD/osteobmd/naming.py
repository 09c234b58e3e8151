"""Name the vertebral bodies by counting, as a radiologist does.

Two anchors:
- the sacrum: the body directly above it is L5, the next one up L4, and so on;
- the ribs: the lowest vertebra that bears ribs is T12 (the body below it, with no rib, is
  L1), provided the rib evidence is consistent (rib-free bodies below, rib-bearing above);
  "ribs" beside the lowest bodies, below a lumbar stretch of rib-free ones, are the iliac
  crests and are set aside.
Counting runs only along an unbroken chain: across a missed body (a break) no name is given
from that anchor.

Verdict (travels with the result):
- both anchors agree -> named, anchor "sacrum+ribs";
- one anchor usable -> named from it, anchor "sacrum" or "ribs";
- anchors disagree (transitional anatomy: 11 or 13 rib pairs, a sacralised L5 or a
  lumbarised S1) -> named from the sacrum, flagged "levels may be off by one";
- no anchor -> no names, not valid, and the message says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .bodies import SpineFinding
from .config import LABEL_OF
from .ribs import CANNOT_TELL, NO_RIB, RIB, RibEvidence

LUMBAR = ["L1", "L2", "L3", "L4", "L5"]
THORACIC = [f"T{n}" for n in range(12, 0, -1)]
TRANSITIONAL_FLAG = "levels may be off by one (transitional anatomy)"
# Bodies above the lowest rib-bearing one that must not be rib-free.
CONSISTENT_ABOVE = 2
# The iliac crests lie beside L4-S1 and can pass for ribs. "Ribs" on at most this many lowest
# bodies in view, with at least LUMBAR_GAP rib-free bodies above them, are the pelvis.
PELVIS_BODIES = 2
LUMBAR_GAP = 3


@dataclass
class LevelNaming:
    """Names per body (same order as the SpineFinding's bodies; None = not named)."""

    names: List[Optional[str]]
    # "sacrum+ribs" (both agree), "sacrum", "ribs", "sacrum|ribs" (each names its own part of
    # a broken chain, not cross-checked), or None (no names).
    anchor: Optional[str]
    valid: bool
    message: str
    flags: List[str] = field(default_factory=list)
    sources: List[Optional[str]] = field(default_factory=list)  # which anchor named each body
    # Sagittal map of the class map's shape: 1..4 on the bodies named L1..L4, else 0.
    lumbar_labels: Optional[np.ndarray] = None
    sacrum_names: List[Optional[str]] = field(default_factory=list)
    rib_names: List[Optional[str]] = field(default_factory=list)

    @property
    def transitional(self) -> bool:
        return TRANSITIONAL_FLAG in self.flags

    @property
    def anchors_agree(self) -> Optional[bool]:
        if self.transitional:
            return False
        return True if self.anchor == "sacrum+ribs" else None

    def body_named(self, name: str) -> Optional[int]:
        return self.names.index(name) if name in self.names else None

    def to_dict(self) -> dict:
        return {
            "valid": self.valid,
            "anchor": self.anchor,
            "message": self.message,
            "flags": list(self.flags),
            # Whether counting from the sacrum and from the ribs were compared and agree
            # (None: only one anchor could be used, nothing to compare).
            "anchors_agree": self.anchors_agree,
            "bodies": [{"name": n, "named_from": s} for n, s in zip(self.names, self.sources)],
            "named_levels": [n for n in self.names if n is not None],
        }


def _name_upwards(index: int) -> str:
    """Name of the body `index` places above L5 (0 = L5)."""
    seq = LUMBAR[::-1] + THORACIC
    return seq[index] if index < len(seq) else f"body {index + 1} above the sacrum"


def _from_sacrum(finding: SpineFinding) -> tuple:
    """(names, reason it cannot be used or None)."""
    n = len(finding.bodies)
    names: List[Optional[str]] = [None] * n
    if finding.sacrum is None:
        return names, "no sacrum is in view"
    if n == 0:
        return names, "no vertebral body was found above the sacrum"
    if finding.sacrum_break:
        return names, "a body seems to be missing between the sacrum and the lowest body found"
    if finding.sacrum_unsure:
        return names, ("too little of the sacrum is in view to tell whether the lowest body is L5 or S1 "
                       "(the piece below it is smaller than a vertebral body)")
    for i in range(n):
        if not finding.connected(0, i):
            break
        names[i] = _name_upwards(i)
    return names, None


def _pelvis_set_aside(finding: SpineFinding, verdicts: List[str]) -> List[str]:
    """The rib verdicts with "ribs" beside the lowest bodies turned to "cannot tell" when a
    lumbar stretch of rib-free bodies lies above them: no rib lies below rib-free lumbar
    vertebrae, but the iliac crests do."""
    low = 0
    while low < min(PELVIS_BODIES, len(verdicts)) and verdicts[low] != NO_RIB:
        low += 1
    above = verdicts[low:low + LUMBAR_GAP]
    if (RIB in verdicts[:low] and len(above) == LUMBAR_GAP and all(v == NO_RIB for v in above)
            and finding.connected(0, low + LUMBAR_GAP - 1)):
        return [CANNOT_TELL] * low + list(verdicts[low:])
    return list(verdicts)


def _from_ribs(finding: SpineFinding, ribs: Optional[RibEvidence]) -> tuple:
    """(names, reason it cannot be used or None). T12 = the lowest rib-bearing body, which
    must have a rib-free body directly below it in the same unbroken chain."""
    n = len(finding.bodies)
    names: List[Optional[str]] = [None] * n
    if ribs is None or len(ribs.bodies) != n:
        return names, "no rib evidence was given"
    verdicts = _pelvis_set_aside(finding, ribs.verdicts)
    with_rib = [i for i, v in enumerate(verdicts) if v == RIB]
    if not with_rib:
        return names, "no rib was seen beside any body in view"
    t12 = with_rib[0]
    if t12 == 0:
        return names, "the lowest body in view already bears ribs, so the last rib-bearing vertebra cannot be told"
    if not finding.connected(t12 - 1, t12):
        return names, "a body seems to be missing just below the lowest rib-bearing one"
    if verdicts[t12 - 1] != NO_RIB:
        return names, ("the body below the lowest rib-bearing one cannot be judged "
                       f"({ribs.bodies[t12 - 1].reason})")
    # Just above T12 the ribs must go on (higher up, rib heads sit at the discs and are
    # lent between neighbours, so only the next two bodies are checked).
    if any(v == NO_RIB for v in verdicts[t12 + 1:t12 + 1 + CONSISTENT_ABOVE]):
        return names, "the rib evidence is inconsistent (a rib-free body above a rib-bearing one)"
    seq_up = THORACIC
    for i in range(t12, n):
        if not finding.connected(t12, i):
            break
        names[i] = seq_up[i - t12] if i - t12 < len(seq_up) else None
    for i in range(t12 - 1, -1, -1):
        if not finding.connected(i, t12):
            break
        k = t12 - 1 - i  # 0 -> L1
        names[i] = LUMBAR[k] if k < len(LUMBAR) else f"L{k + 1}"
    return names, None


def _lumbar_map(finding: SpineFinding, names: List[Optional[str]]) -> np.ndarray:
    out = np.zeros(finding.shape, np.uint8)
    for body, name in zip(finding.bodies, names):
        if name in LABEL_OF:
            out[body.mask] = LABEL_OF[name]
    return out


def name_levels(finding: SpineFinding, ribs: Optional[RibEvidence] = None) -> LevelNaming:
    """Name the bodies of `finding` from the sacrum and from the ribs.

    finding: bodies.find_bodies(...); ribs: ribs.detect_ribs(...) for the same finding
    (None: count from the sacrum only). Returns a LevelNaming whose `names` follow
    finding.bodies, with `lumbar_labels` (sagittal L1..L4 map) and `to_dict()`.
    """
    n = len(finding.bodies)
    s_names, s_why = _from_sacrum(finding)
    r_names, r_why = _from_ribs(finding, ribs)
    flags: List[str] = []

    def result(names, sources, anchor, valid, message):
        return LevelNaming(
            names=names, anchor=anchor, valid=valid, message=message, flags=flags, sources=sources,
            lumbar_labels=_lumbar_map(finding, names), sacrum_names=s_names, rib_names=r_names,
        )

    if s_why and r_why:
        return result([None] * n, [None] * n, None, False,
                      f"No level can be named: {s_why}, and {r_why}. Count the levels on the images.")
    if r_why:
        sources = ["sacrum" if x else None for x in s_names]
        return result(s_names, sources, "sacrum", True,
                      f"Levels counted up from the sacrum; the ribs could not be used ({r_why}).")
    if s_why:
        sources = ["ribs" if x else None for x in r_names]
        return result(r_names, sources, "ribs", True,
                      f"Levels counted down from the lowest rib-bearing vertebra (T12); {s_why}.")
    both = [i for i in range(n) if s_names[i] and r_names[i]]
    if not both:
        # The two anchors name separate runs of a broken chain: they cannot be checked
        # against each other.
        names = [s or r for s, r in zip(s_names, r_names)]
        sources = ["sacrum" if s else "ribs" if r else None for s, r in zip(s_names, r_names)]
        return result(names, sources, "sacrum|ribs", True,
                      "Levels below the gap in the chain are counted up from the sacrum, those above it "
                      "down from the lowest rib-bearing vertebra; a body is missing in between, so the two "
                      "counts could not be checked against each other.")
    if all(s_names[i] == r_names[i] for i in both):
        names = [s or r for s, r in zip(s_names, r_names)]
        sources = ["sacrum+ribs" if s and r else "sacrum" if s else "ribs" if r else None
                   for s, r in zip(s_names, r_names)]
        return result(names, sources, "sacrum+ribs", True,
                      "Levels counted up from the sacrum and down from the lowest rib-bearing vertebra (T12); "
                      "both counts agree.")
    flags.append(TRANSITIONAL_FLAG)
    t12 = r_names.index("T12")
    lumbar_type = t12  # rib-free bodies between the sacrum and the lowest rib-bearing one
    sources = ["sacrum" if x else None for x in s_names]
    return result(s_names, sources, "sacrum", True,
                  f"Counting up from the sacrum and down from the ribs disagree: {lumbar_type} rib-free "
                  f"bodies lie between the sacrum and the lowest rib-bearing vertebra instead of 5 "
                  f"(transitional anatomy, or {11 if lumbar_type > 5 else 13} rib pairs). Levels are named "
                  f"from the sacrum and may be off by one; check them on the images.")

