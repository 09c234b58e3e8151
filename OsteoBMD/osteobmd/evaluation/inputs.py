"""Reading what `osteobmd evaluate` compares: a prediction/reference CSV, or a folder of
`osteobmd run`/`batch` outputs (results.json) plus a reference CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from ..errors import InputError
from ..results import RESULTS_JSON, CaseResult
from .stats import normalize_vertebra

PathLike = Union[str, Path]

# Accepted spellings of each column (first one is the documented name).
COLUMN_ALIASES = {
    "case_id": ("case_id", "case", "id"),
    "vertebra": ("vertebra", "level"),
    "bmd_pred": ("bmd_pred", "pred", "predicted"),
    "bmd_ref": ("bmd_ref", "ref", "reference", "bmd_qct", "qct"),
}


def _read_csv(path: PathLike, required: Sequence[str]) -> List[dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"'{path}' does not exist or is not a file; give a CSV file.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError):
        raise InputError(f"'{path.name}' could not be read as a text CSV file.") from None
    sample = text[:4096]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    if not reader.fieldnames:
        raise InputError(f"'{path.name}' is empty; it needs a header row with {', '.join(required)}.")
    header = {name.strip().lower(): name for name in reader.fieldnames if name is not None}
    mapping = {}
    for column in required:
        for alias in COLUMN_ALIASES[column]:
            if alias in header:
                mapping[column] = header[alias]
                break
        else:
            raise InputError(
                f"'{path.name}' has no '{column}' column (its columns: {', '.join(reader.fieldnames)}); "
                f"it needs the columns {', '.join(required)}."
            )
    rows = []
    for raw in reader:
        if not any((v or "").strip() for v in raw.values() if isinstance(v, str)):
            continue  # blank line
        rows.append({column: (raw.get(src) or "").strip() for column, src in mapping.items()})
    if not rows:
        raise InputError(f"'{path.name}' has a header but no data rows.")
    return rows


def read_prediction_csv(path: PathLike) -> List[dict]:
    """Rows of case_id, vertebra, bmd_pred, bmd_ref (one per vertebra)."""
    return _read_csv(path, ("case_id", "vertebra", "bmd_pred", "bmd_ref"))


def read_reference_csv(path: PathLike) -> Dict[Tuple[str, str], str]:
    """(case_id, vertebra) -> bmd_ref text."""
    out: Dict[Tuple[str, str], str] = {}
    for row in _read_csv(path, ("case_id", "vertebra", "bmd_ref")):
        key = (row["case_id"], normalize_vertebra(row["vertebra"]))
        if key in out:
            raise InputError(f"The reference CSV has two rows for case '{key[0]}' {key[1]}; keep one.")
        out[key] = row["bmd_ref"]
    return out


def find_results(folder: PathLike) -> Dict[str, Path]:
    """case -> results.json path, for every results.json under `folder` (any depth)."""
    folder = Path(folder)
    found: Dict[str, Path] = {}
    for path in sorted(folder.rglob(RESULTS_JSON)):
        try:
            result = CaseResult.read_json(path)
        except (ValueError, TypeError, KeyError, json.JSONDecodeError):
            raise InputError(f"'{path}' is not a valid OsteoBMD results.json; re-run the case or remove it.") from None
        if result.case in found:
            raise InputError(
                f"Two results.json files are for the same case '{result.case}' ('{found[result.case].parent.name}' "
                f"and '{path.parent.name}'); keep one run per case in the folder."
            )
        found[result.case] = path
    if not found:
        raise InputError(f"The folder '{folder}' holds no results.json; point at the output folder(s) of "
                         "`osteobmd run` or `osteobmd batch`, or at a CSV of case_id, vertebra, bmd_pred, bmd_ref.")
    return found


def rows_from_run_folders(folder: PathLike, reference_csv: PathLike) -> Tuple[List[dict], List[dict], List[str]]:
    """Pair each run's valid vertebrae with the reference.

    Returns (rows, failures, notes). Rows carry `in_mean` = the vertebra was among the
    run's mean_vertebrae. A run with no valid vertebra (with a BMD and a reference value)
    is a failure; reference cases without any run and runs without reference are noted.
    """
    reference = read_reference_csv(reference_csv)
    ref_cases = {case for case, _ in reference}
    results = find_results(folder)
    rows: List[dict] = []
    failures: List[dict] = []
    notes: List[str] = []
    unmatched = [case for case in results if case not in ref_cases]
    if unmatched:
        notes.append(f"{len(unmatched)} run(s) have no reference BMD in the reference CSV and are ignored.")
    missing = sorted(ref_cases - set(results))
    if missing:
        notes.append(f"{len(missing)} reference case(s) have no results.json in the input folder: "
                     + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "") + ".")
    for case, path in results.items():
        if case not in ref_cases:
            continue
        result = CaseResult.read_json(path)
        valid = [v for v in result.vertebrae if v.valid and v.bmd_mg_cm3 is not None]
        if not valid:
            reasons = sorted({r for v in result.vertebrae for r in v.reasons})
            failures.append({"case": case, "reason": "no valid vertebra"
                             + (f" ({'; '.join(reasons[:3])})" if reasons else "")})
            continue
        paired = 0
        for v in valid:
            name = normalize_vertebra(v.name)
            ref = reference.get((case, name))
            if ref is None or ref == "":
                continue
            paired += 1
            rows.append({"case_id": case, "vertebra": name, "bmd_pred": v.bmd_mg_cm3, "bmd_ref": ref,
                         "in_mean": name in [normalize_vertebra(m) for m in result.mean_vertebrae]})
        if not paired:
            failures.append({"case": case, "reason": "no valid vertebra has a reference BMD"})
    return rows, failures, notes
