"""METHOD section 5: evaluation of BMD and segmentation against a reference.

Python API
    evaluate_bmd_table(rows, vertebrae=None, failures=None) -> dict
    evaluate_segmentation(pred_dir, ref_dir) -> dict
    write_report(report, out_dir) -> {"json", "md", "plots"}
    evaluate(input=None, out_dir=None, reference=None, labels_pred=None, labels_ref=None, vertebrae=None) -> dict
CLI
    add_cli(subparsers) registers `osteobmd evaluate` (handler `run_cli(args) -> int`).
"""

from .cli import add_cli, evaluate, parse_vertebrae, run_cli
from .report import PAPER_TEST_SETS, write_report
from .segmentation import evaluate_segmentation, overlap_metrics
from .stats import (
    bland_altman,
    cohen_kappa,
    confusion_matrix,
    evaluate_bmd_table,
    interpret_kappa,
)

__all__ = [
    "add_cli", "run_cli", "evaluate", "parse_vertebrae",
    "evaluate_bmd_table", "evaluate_segmentation", "write_report",
    "bland_altman", "cohen_kappa", "confusion_matrix", "interpret_kappa", "overlap_metrics",
    "PAPER_TEST_SETS",
]
