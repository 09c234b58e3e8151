"""`osteobmd evaluate`: compare OsteoBMD's output with a reference (METHOD section 5).

    osteobmd evaluate PRED.csv --out DIR                       # case_id, vertebra, bmd_pred, bmd_ref
    osteobmd evaluate RUNS/ --reference REF.csv --out DIR      # folders of results.json
    osteobmd evaluate --labels-pred P/ --labels-ref R/ --out DIR   # segmentation only
    (options combine: BMD and segmentation in one report)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Union

from ..errors import InputError, OutputExistsError
from ..options import parse_vertebrae
from .inputs import read_prediction_csv, read_reference_csv, rows_from_run_folders, _read_csv
from .report import REPORT_JSON, console_summary, write_report
from .segmentation import evaluate_segmentation
from .stats import evaluate_bmd_table, normalize_vertebra

PathLike = Union[str, Path]


def _bmd_rows_from_csv(path: Path, reference: Optional[Path]):
    """The prediction CSV; with --reference its bmd_ref values come from there."""
    if reference is None:
        return read_prediction_csv(path), []
    rows = _read_csv(path, ("case_id", "vertebra", "bmd_pred"))
    ref = read_reference_csv(reference)
    for row in rows:
        row["bmd_ref"] = ref.get((row["case_id"], normalize_vertebra(row["vertebra"])), "")
    return rows, ["bmd_ref taken from the --reference CSV."]


def evaluate(input: Optional[PathLike] = None, out_dir: Optional[PathLike] = None,
             reference: Optional[PathLike] = None, labels_pred: Optional[PathLike] = None,
             labels_ref: Optional[PathLike] = None, vertebrae: Optional[Sequence[str]] = None,
             seg_plane: str = "sagittal") -> dict:
    """The whole evaluation: BMD (CSV or run folders) and/or segmentation; writes the
    report into `out_dir` when given and returns the report dict."""
    if input is None and labels_pred is None and labels_ref is None:
        raise InputError("Nothing to evaluate: give a CSV or a folder of runs, and/or --labels-pred with --labels-ref.")
    if (labels_pred is None) != (labels_ref is None):
        raise InputError("Segmentation needs both --labels-pred and --labels-ref (two folders of label maps).")
    report: dict = {}
    notes: List[str] = []
    if input is not None:
        path = Path(input)
        ref_path = Path(reference) if reference is not None else None
        if not path.exists():
            raise InputError(f"'{path}' does not exist; give a CSV file or a folder of `osteobmd run` outputs.")
        failures: List[dict] = []
        if path.is_dir():
            if ref_path is None:
                raise InputError("A folder of runs needs --reference REF.csv (columns case_id, vertebra, bmd_ref).")
            rows, failures, notes = rows_from_run_folders(path, ref_path)
            if not rows and failures:
                raise InputError(f"None of the {len(failures)} run(s) with a reference has a valid vertebra with a "
                                 "reference BMD; nothing to compare.")
            source = "run folders"
        else:
            rows, notes = _bmd_rows_from_csv(path, ref_path)
            source = "csv"
        report = evaluate_bmd_table(rows, vertebrae=vertebrae, failures=failures, notes=notes)
        report["source"] = source
    if labels_pred is not None:
        seg = evaluate_segmentation(labels_pred, labels_ref, plane=seg_plane)
        seg_notes = seg.pop("notes", [])
        report.update(seg)
        report["notes"] = list(report.get("notes", [])) + seg_notes
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `evaluate` on the main parser's sub-parsers; `args.handler(args)` returns the exit code."""
    p = subparsers.add_parser(
        "evaluate",
        help="compare predicted BMD / segmentations with a reference (METHOD 5 statistics and report)",
        description=(
            "Compare OsteoBMD's output with reference values: Pearson r, Bland-Altman, Wilcoxon, "
            "Cohen's kappa (unweighted and linear), the 3x3 confusion matrix, chi-square; and for "
            "segmentations DSC, PPV, sensitivity and the share of valid cases. Writes report.json, "
            "report.md and plots into --out."
        ),
    )
    p.add_argument("input", nargs="?", default=None,
                   help="a CSV of case_id,vertebra,bmd_pred,bmd_ref, or a folder of `osteobmd run`/`batch` outputs")
    p.add_argument("--out", required=True, help="folder for report.json, report.md and the plots")
    p.add_argument("--reference", default=None,
                   help="CSV of case_id,vertebra,bmd_ref (required with a folder of runs)")
    p.add_argument("--labels-pred", default=None, help="folder of predicted label maps")
    p.add_argument("--seg-plane", choices=("sagittal", "3d"), default="sagittal",
                   help="score the prediction's sagittal slab (as the paper) or the whole volumes")
    p.add_argument("--labels-ref", default=None, help="folder of reference label maps (same file names)")
    p.add_argument("--vertebrae", default=None,
                   help="vertebrae in the patient mean, e.g. L1,L2,L3 (default: every row of the CSV; "
                        "for runs, the vertebrae each run averaged)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report in --out")
    # The main CLI dispatches on `handler`; `func` is the argparse idiom, kept as an alias.
    p.set_defaults(handler=run_cli, func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / REPORT_JSON).exists() and not getattr(args, "overwrite", False):
        raise OutputExistsError(f"'{out}' already holds a report.json; choose another --out or add --overwrite.")
    report = evaluate(
        input=args.input, out_dir=out, reference=args.reference,
        labels_pred=args.labels_pred, labels_ref=args.labels_ref, seg_plane=args.seg_plane,
        vertebrae=parse_vertebrae(args.vertebrae),
    )
    # Each statistic, or why it is not computed for this many cases (never "r = 1.000" for n = 2).
    lines = [f"Report written to {out / 'report.md'}"] + console_summary(report)
    if report.get("seg_cases") is not None and "dice" in report:
        vs = report["valid_share"]
        lines.append(f"Segmentation: n = {report['n_seg_cases']}, valid = "
                     + ("n/a" if vs is None else f"{100 * vs:.1f} %"))
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    """`python -m osteobmd.evaluation ...`: the same as `osteobmd evaluate ...` (one error handling)."""
    from ..cli import main as osteobmd_main

    return osteobmd_main(["evaluate"] + list(sys.argv[1:] if argv is None else argv))

