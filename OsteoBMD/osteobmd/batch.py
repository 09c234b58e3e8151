"""`osteobmd batch`: many CTs, local parallel workers, resumable, one summary CSV.

A case already complete (case_folder.is_complete) is skipped; anything less is measured
again. A bad case is recorded with its message and does not stop the batch; the exit code
says whether any case failed (`batch_exit_code`).
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional

from . import io as ctio
from .case_folder import case_name, is_complete, recover, refuse_a_file
from .errors import InputError, OsteoBMDError, write_error_log
from .options import RunOptions
from .results import RESULTS_JSON, CaseResult

SUMMARY_CSV = "summary.csv"
SUMMARY_COLUMNS = ("case_id", "status", "mean_bmd_mg_cm3", "classification", "valid_vertebrae", "message")
# A case's outcome as `osteobmd run` would exit; the batch exits with the first of 1, 2, 3 any case gave.
EXIT_OF_STATUS = {"done": 0, "no_valid": 3, "bad_input": 2, "error": 1}


@dataclass
class BatchItem:
    case_id: str
    ct_path: Path
    mask_path: Optional[Path] = None


def _looks_like_image(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) for s in ctio.IMAGE_SUFFIXES)


def collect_inputs(inputs: Path) -> List[BatchItem]:
    """A folder (image files, case folders holding ct.*, DICOM series folders) or a CSV with a `path` column."""
    inputs = Path(inputs)
    if not inputs.exists():
        raise InputError(f"'{inputs}' does not exist. Give a folder of CTs or a CSV with a 'path' column.")
    items: List[BatchItem] = []
    if inputs.is_file():
        if inputs.suffix.lower() != ".csv":
            raise InputError(f"'{inputs.name}' is neither a folder nor a .csv list of CTs.")
        with open(inputs, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise InputError(f"'{inputs.name}' needs a 'path' column (optional: case_id, mask).")
            for row in reader:
                p = Path(row["path"])
                p = p if p.is_absolute() else inputs.parent / p
                mask = row.get("mask") or None
                items.append(BatchItem(row.get("case_id") or case_name(p), p,
                                       (inputs.parent / mask) if mask and not Path(mask).is_absolute() else (Path(mask) if mask else None)))
    else:
        for p in sorted(inputs.iterdir()):
            if _looks_like_image(p):
                items.append(BatchItem(case_name(p), p))
            elif p.is_dir():
                # A ground-truth case folder (ct.nrrd, labels.nrrd, ...) or a DICOM series folder.
                ct = next((c for c in sorted(p.iterdir()) if c.name.lower().startswith("ct.") and _looks_like_image(c)), None)
                if ct is not None or any(c.is_file() for c in p.iterdir()):
                    items.append(BatchItem(p.name, ct or p))
    if not items:
        raise InputError(f"No CT found in '{inputs}'. Put NIfTI/NRRD/MHA files or DICOM series folders in it.")
    seen = {}
    for item in items:  # the same stem twice (a.nii and a.nrrd) must not share a folder
        n = seen.get(item.case_id, 0)
        seen[item.case_id] = n + 1
        if n:
            item.case_id = f"{item.case_id}_{n + 1}"
    return items


def _run_one(item: BatchItem, out_root: str, options: RunOptions, threads: int) -> dict:
    import torch

    from .pipeline import run_case

    torch.set_num_threads(threads)
    out_dir = Path(out_root) / item.case_id
    row = {"case_id": item.case_id, "mean_bmd_mg_cm3": "", "classification": "", "valid_vertebrae": "", "message": ""}
    try:
        result = run_case(item.ct_path, out_dir, replace(options, mask_path=item.mask_path, case_id=item.case_id))
    except OsteoBMDError as err:
        row.update(status="bad_input" if err.exit_code == 2 else "error", message=str(err))
        return row
    except Exception as err:  # one broken case must not stop the batch; its details go beside its folder
        row.update(status="error", message=f"internal error: {type(err).__name__}: {err} ({write_error_log(out_dir)})")
        return row
    return _summary_row(result, row)


def _summary_row(result: CaseResult, row: dict) -> dict:
    row.update(
        status="done" if result.valid else "no_valid",
        exit_code=0 if result.valid else 3,
        mean_bmd_mg_cm3="" if result.mean_bmd_mg_cm3 is None else f"{result.mean_bmd_mg_cm3:.1f}",
        classification=result.classification or "",
        valid_vertebrae=",".join(v.name for v in result.vertebrae if v.valid),
        message=" ".join(m for m in result.messages if "mean" in m.lower() or "valid" in m.lower()),
    )
    return row


def run_batch(
    inputs: Path, out_root: Path, workers: int = 1, options: Optional[RunOptions] = None,
    report: Callable[[str], None] = print,
) -> List[dict]:
    out_root = refuse_a_file(out_root)
    items = collect_inputs(inputs)
    out_root.mkdir(parents=True, exist_ok=True)
    # A case short of complete is measured again, replacing what a stopped run left.
    options = replace(options or RunOptions(), overwrite=True)
    rows, todo = [], []
    for item in items:
        case_dir = out_root / item.case_id
        recover(case_dir)  # a swap cut by a kill puts the previous complete result back
        if is_complete(case_dir):
            rows.append(_summary_row(CaseResult.read_json(case_dir / RESULTS_JSON), {"case_id": item.case_id})
                        | {"status": "skipped_done"})
        else:
            todo.append(item)
    report(f"{len(items)} cases: {len(rows)} already done, {len(todo)} to run with {workers} worker(s).")
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    if workers <= 1:
        for n, item in enumerate(todo):
            rows.append(_run_one(item, str(out_root), options, threads))
            report(f"[{n + 1}/{len(todo)}] {item.case_id}: {rows[-1]['status']}")
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_run_one, item, str(out_root), options, threads): item for item in todo}
            for n, future in enumerate(as_completed(futures)):
                rows.append(future.result())
                report(f"[{n + 1}/{len(todo)}] {futures[future].case_id}: {rows[-1]['status']}")
    order = {item.case_id: n for n, item in enumerate(items)}
    rows.sort(key=lambda r: order.get(r["case_id"], 0))
    with open(out_root / SUMMARY_CSV, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def batch_exit_code(rows: List[dict]) -> int:
    """0 when every case is done (now or before); else 1 if any internal error, 2 if any bad
    input, 3 if any case gave no valid measurement."""
    codes = {r.get("exit_code", EXIT_OF_STATUS.get(r["status"], 0)) for r in rows}
    return next((code for code in (1, 2, 3) if code in codes), 0)
