"""Synthetic lumbar CT cohort generator (deterministic by seed).

    from osteobmd.synthetic import make_case, write_case, make_cohort, SyntheticCase
    case = make_case(seed, vendor="A", **overrides)   # SyntheticCase(ct, labels, levels, bmd, meta)
    write_case(case, folder)                           # ct.nrrd, labels.nrrd, levels.nrrd, bmd.csv, case.json
    make_cohort(out_dir, n, seed0=0, vendor="A", workers=1, **overrides)

What a case contains and how it is built: anatomy.py (spine curve, vertebrae, organs),
spine.py (bone rendering), softtissue.py (body, organs), texture.py, scanner.py
(HU scale, noise, metal streaks). Overrides: params.OVERRIDES.
"""

from .case import GENERATOR_VERSION, SyntheticCase, make_case, write_case
from .cohort import make_cohort
from .constants import LEVEL_CODES, LEVEL_NAMES, VENDORS
from .params import CASE_PROBABILITIES, COHORT_PROBABILITIES, OVERRIDES

__all__ = [
    "make_case", "write_case", "make_cohort", "SyntheticCase", "LEVEL_CODES", "LEVEL_NAMES", "VENDORS",
    "OVERRIDES", "CASE_PROBABILITIES", "COHORT_PROBABILITIES", "GENERATOR_VERSION",
]
