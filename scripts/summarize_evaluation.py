"""Print one Markdown table of the test cohorts' report.json files (docs/evaluation/README.md).

    python scripts/summarize_evaluation.py docs/evaluation > docs/evaluation/README.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAPER = {  # METHOD.md section 6: test set -> (DSC L1..L4, valid share, r, LoA, kappa)
    "A": ("0.823 / 0.825 / 0.862 / 0.899", "86 %", "0.992", "-11.8 ... 13.6", "0.888"),
    "B": ("0.786 / 0.793 / 0.813 / 0.883", "81.5 %", "0.986", "-16.8 ... 12.6", "0.868"),
    "C": ("0.789 / 0.786 / 0.801 / 0.782", "65.5 %", "0.980", "-8.3 ... 29.3", "0.879"),
}


def fmt(value, pattern="{:.3f}"):
    return "-" if value is None else pattern.format(value)


def row(name: str, r: dict) -> str:
    dice = r.get("dice") or {}
    dsc = " / ".join(fmt((dice.get(v) or {}).get("mean"), "{:.3f}") for v in ("L1", "L2", "L3", "L4"))
    ba = r.get("bland_altman") or {}
    loa = f"{fmt(ba.get('loa_low'), '{:.1f}')} ... {fmt(ba.get('loa_high'), '{:.1f}')}"
    valid = fmt(r.get("valid_share"), "{:.0%}")
    return (f"| {name} | {r.get('n_cases', '-')} | {r.get('n_failed', 0)} | {dsc} | {valid} | {fmt(r.get('pearson_r'))} | "
            f"{fmt(ba.get('bias'), '{:+.1f}')} | {loa} | {fmt(r.get('kappa_linear'))} | {fmt(r.get('accuracy'), '{:.0%}')} |")


def main(folder: Path) -> None:
    print("# Evaluation on the synthetic test cohorts\n")
    print("Made by `scripts/reproduce_weights_and_report.sh`; each folder beside this file holds the full "
          "`report.json`, `report.md` and plots. Test cohorts are held apart from training (other seeds); "
          "vendor A is the training scanner, B reads low and C reads high. `internal` = the patient's air and "
          "fat calibrate HU before the regression.\n")
    print("| cohort | cases measured | no valid result | DSC L1 / L2 / L3 / L4 (sagittal slab) | valid cases (all DSC > 0.5) | "
          "mean-BMD r | bias (mg/cm³) | LoA (mg/cm³) | kappa (linear) | class accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for report in sorted(folder.glob("test_*/report.json")):
        print(row(report.parent.name, json.loads(report.read_text())))
    print("\nThe paper (METHOD.md section 6), on patients:\n")
    print("| test set | DSC L1 / L2 / L3 / L4 | valid cases | r | LoA | kappa |")
    print("|---|---|---|---|---|---|")
    for vendor, (dsc, valid, r, loa, kappa) in PAPER.items():
        print(f"| vendor {vendor} | {dsc} | {valid} | {r} | {loa} | {kappa} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/evaluation"))
