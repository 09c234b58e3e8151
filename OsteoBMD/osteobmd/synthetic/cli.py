"""`osteobmd synth OUT --n N --vendor A`: a synthetic lumbar CT cohort in the ground-truth format.

Besides the case folders (ct.nrrd, labels.nrrd, levels.nrrd, bmd.csv, case.json) it writes
OUT/reference.csv (case_id, vertebra, bmd_ref), the reference `osteobmd evaluate` reads.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import InputError
from .cohort import make_cohort
from .constants import VENDORS
from .params import COHORT_PROBABILITIES

REFERENCE_CSV = "reference.csv"


def write_reference_csv(case_dirs, path: Path) -> int:
    """Collect every case's bmd.csv into one reference table; returns the row count."""
    rows = []
    for folder in case_dirs:
        bmd_csv = Path(folder) / "bmd.csv"
        if not bmd_csv.exists():
            continue
        with open(bmd_csv, newline="") as f:
            for row in csv.DictReader(f):
                rows.append({"case_id": Path(folder).name, "vertebra": row["vertebra"], "bmd_ref": row["bmd_mg_cm3"]})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["case_id", "vertebra", "bmd_ref"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _synth(args) -> int:
    if args.n < 1:
        raise InputError("--n must be at least 1.")
    if args.vendor not in VENDORS:
        raise InputError(f"Unknown vendor {args.vendor!r}; choose from {', '.join(sorted(VENDORS))}.")
    overrides = {k: getattr(args, k) for k in COHORT_PROBABILITIES if getattr(args, k) is not None}
    if args.lateral_mm is not None:
        overrides["lateral_mm"] = args.lateral_mm
    dirs = make_cohort(args.out, args.n, seed0=args.seed0, vendor=args.vendor, workers=args.workers, **overrides)
    n_rows = write_reference_csv(dirs, Path(args.out) / REFERENCE_CSV)
    print(f"{len(dirs)} cases in {args.out} (vendor {args.vendor}, seeds {args.seed0}..{args.seed0 + args.n - 1}); "
          f"{n_rows} reference BMDs in {Path(args.out) / REFERENCE_CSV}")
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("synth", help="make a synthetic lumbar CT cohort (CT, labels, true BMD)")
    p.add_argument("out", type=Path, help="output folder (one sub-folder per case; resumable)")
    p.add_argument("--n", type=int, default=10, help="number of cases")
    p.add_argument("--seed0", type=int, default=0, help="seed of the first case (case i uses seed0 + i)")
    p.add_argument("--vendor", default="A", help="scanner calibration: A (training), B (reads low), C (reads high)")
    p.add_argument("--workers", type=int, default=1, help="cases generated in parallel (each needs about 2 GB)")
    p.add_argument("--lateral-mm", type=float, default=None,
                   help="left-right field of view in mm (smaller: faster and smaller training data)")
    for key, value in COHORT_PROBABILITIES.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=float, default=None,
                       help=f"share of cases with this feature (default {value})")
    p.set_defaults(handler=_synth)
