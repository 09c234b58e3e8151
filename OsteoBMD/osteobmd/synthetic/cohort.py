"""A cohort of synthetic cases on disk: one folder per case, deterministic and resumable."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import List

from .case import make_case, write_case
from .params import COHORT_PROBABILITIES

_FILES = ("ct.nrrd", "labels.nrrd", "bmd.csv", "case.json")


def _json_safe(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def _complete(folder: Path, seed: int, vendor: str, overrides: dict) -> bool:
    if not all((folder / f).is_file() for f in _FILES):
        return False
    try:
        meta = json.loads((folder / "case.json").read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("seed") == seed and meta.get("vendor") == vendor
            and meta.get("overrides", {}) == _json_safe(overrides))


def _one(args) -> str:
    folder, seed, vendor, overrides = args
    folder = Path(folder)
    if _complete(folder, seed, vendor, overrides):
        return str(folder)
    case = make_case(seed, vendor, **overrides)
    write_case(case, folder)
    return str(folder)


def make_cohort(out_dir, n: int, seed0: int = 0, vendor: str = "A", workers: int = 1, **overrides) -> List[Path]:
    """Generate cases seed0 .. seed0+n-1 into out_dir/case_0000 ... (index i -> seed seed0+i).

    Hard cases appear at the small rates of `params.COHORT_PROBABILITIES` unless the
    p_* overrides say otherwise. Complete folders made with the same seed, vendor and
    overrides are skipped, so an interrupted run resumes where it stopped."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ov = dict(COHORT_PROBABILITIES)
    ov.update(overrides)
    jobs = [(str(out_dir / f"case_{i:04d}"), int(seed0) + i, vendor, ov) for i in range(int(n))]
    if workers <= 1:
        done = [_one(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=int(workers)) as ex:
            done = list(ex.map(_one, jobs, chunksize=1))
    return [Path(d) for d in done]
