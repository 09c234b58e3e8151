"""report.json, report.md (our figures beside the paper's, METHOD section 6) and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from .. import __version__
from ..config import VERTEBRA_NAMES
from .plots import write_plots
from .stats import cohen_kappa

PathLike = Union[str, Path]
REPORT_JSON = "report.json"
REPORT_MD = "report.md"

# METHOD section 6. Table 3 of the paper (rows = reference, columns = prediction, order
# osteoporosis / osteopenia / normal) lets us recompute its accuracy and unweighted kappa;
# its printed kappas equal the linearly weighted kappas of these tables.
PAPER_TEST_SETS = (
    {"name": "paper test 1", "n": 463, "vendor": "same as training",
     "dice": (0.823, 0.825, 0.862, 0.899), "valid_share": 0.86, "n_valid": 398,
     "share_all_dsc_ge_090": 0.58, "share_three_dsc_gt_090": 0.69,
     "pearson_r": 0.992, "loa": (-11.84, 13.64), "wilcoxon": "p > 0.3", "kappa_linear": 0.888,
     "confusion": ((77, 5, 1), (7, 97, 14), (0, 9, 188))},
    {"name": "paper test 2", "n": 200, "vendor": "vendor B",
     "dice": (0.786, 0.793, 0.813, 0.883), "valid_share": 0.815, "n_valid": 163,
     "share_all_dsc_ge_090": 0.50, "share_three_dsc_gt_090": 0.635,
     "pearson_r": 0.986, "loa": (-16.8, 12.6), "wilcoxon": "p < 0.001 (under)", "kappa_linear": 0.868,
     "confusion": ((26, 0, 0), (6, 51, 6), (0, 5, 69))},
    {"name": "paper test 3", "n": 200, "vendor": "vendor C",
     "dice": (0.789, 0.786, 0.801, 0.782), "valid_share": 0.655, "n_valid": 131,
     "share_all_dsc_ge_090": 0.30, "share_three_dsc_gt_090": 0.44,
     "pearson_r": 0.980, "loa": (-8.3, 29.3), "wilcoxon": "p < 0.001 (over)", "kappa_linear": 0.879,
     "confusion": ((18, 7, 0), (0, 25, 4), (0, 1, 76))},
)


def _jsonable(x):
    """numpy scalars/arrays -> Python; NaN/inf -> None (report.json is strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _p(x) -> str:
    if x is None:
        return "—"
    return "< 0.0001" if x < 1e-4 else f"{x:.4f}"


def _or_why(r: dict, key: str, text: str) -> str:
    """The formatted statistic, or "not computed (reason)" when the report left it out."""
    reason = (r.get("not_computed") or {}).get(key)
    return f"not computed ({reason})" if r.get(key) is None and reason else text


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def _msd(d: Optional[dict], digits: int = 1) -> str:
    if not d or d.get("mean") is None:
        return "—"
    sd = d.get("sd")
    return f"{d['mean']:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{d['mean']:.{digits}f}"


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _paper_cols(fn) -> List[str]:
    return [fn(t) for t in PAPER_TEST_SETS]


def _bmd_section(r: dict) -> List[str]:
    out = ["## BMD agreement (patient mean BMD, mg/cm³)", ""]
    verts = r.get("vertebrae")
    out.append("Mean over " + (", ".join(verts) if isinstance(verts, list) else "the vertebrae each case measured")
               + "; pred and reference averaged over the same vertebrae.")
    out.append("")
    ba = r["bland_altman"]
    header = ["", "ours"] + [f"{t['name']} (n={t['n']}, {t['vendor']})" for t in PAPER_TEST_SETS]

    def paper_acc(t):
        c = np.array(t["confusion"])
        return f"{np.trace(c) / c.sum():.3f}*"

    rows = [
        ["cases compared", str(r["n_cases"])] + _paper_cols(lambda t: str(t["n_valid"])),
        ["failed cases (no valid vertebra)", str(r.get("n_failed", 0))]
        + _paper_cols(lambda t: f"{t['n'] - t['n_valid']}*"),
        ["Pearson r", _or_why(r, "pearson_r", _fmt(r["pearson_r"]))]
        + _paper_cols(lambda t: f"{t['pearson_r']:.3f}"),
        ["r²", _or_why(r, "r2", _fmt(r["r2"]))] + _paper_cols(lambda t: f"{t['pearson_r'] ** 2:.3f}*"),
        ["Pearson p", _or_why(r, "pearson_p", _p(r["pearson_p"]))]
        + _paper_cols(lambda t: "< 0.001"),
        ["bias (pred − ref)", _fmt(ba["bias"], 2)] + _paper_cols(lambda t: f"{(t['loa'][0] + t['loa'][1]) / 2:.2f}*"),
        ["95 % limits of agreement", f"{_fmt(ba['loa_low'], 2)} … {_fmt(ba['loa_high'], 2)}"]
        + _paper_cols(lambda t: f"{t['loa'][0]} … {t['loa'][1]}"),
        ["Wilcoxon signed-rank p", _or_why(r, "wilcoxon_p", _p(r["wilcoxon_p"]))]
        + _paper_cols(lambda t: t["wilcoxon"]),
        ["MAE", _fmt(r["mae"], 2)] + _paper_cols(lambda t: "—"),
        ["RMSE", _fmt(r["rmse"], 2)] + _paper_cols(lambda t: "—"),
        ["kappa, linearly weighted", _or_why(r, "kappa_linear", _fmt(r["kappa_linear"]))]
        + _paper_cols(lambda t: f"{t['kappa_linear']:.3f}"),
        ["kappa, unweighted", _or_why(r, "kappa", _fmt(r["kappa"]))]
        + _paper_cols(lambda t: f"{cohen_kappa(np.array(t['confusion'])):.3f}*"),
        ["class accuracy", _fmt(r["accuracy"])] + _paper_cols(paper_acc),
        ["predicted BMD, mean ± SD", _msd(r["pred"])] + _paper_cols(lambda t: "—"),
        ["reference BMD, mean ± SD", _msd(r["ref"])] + _paper_cols(lambda t: "—"),
    ]
    out += _table(header, rows)
    out += ["", "\\* derived here from the paper's printed numbers: failed = n − valid segmentations; r² = r²; bias = midpoint of its limits of "
            "agreement; accuracy and unweighted kappa from its Table 3. The paper's printed kappas equal the "
            "linearly weighted kappa of its Table 3.", ""]
    if r["kappa"] is None:
        out.append(f"Agreement of classes: Cohen's kappa {_or_why(r, 'kappa', 'not computed')}.")
    else:
        out.append(f"Agreement of classes: kappa {_fmt(r['kappa'])} ({r['kappa_interpretation']}), linearly "
                   f"weighted {_fmt(r['kappa_linear'])} ({r['kappa_linear_interpretation']}).")
    out.append("")
    return out


def _class_section(r: dict) -> List[str]:
    classes = r["classes"]
    out = ["## Classes (ACR: < 80 osteoporosis, 80–120 osteopenia, > 120 normal)", "",
           "Confusion matrix, rows = reference, columns = prediction:", ""]
    conf = r["confusion"]
    rows = [[f"**{c}** (ref)"] + [str(v) for v in conf[i]] + [str(sum(conf[i]))] for i, c in enumerate(classes)]
    rows.append(["total (pred)"] + [str(sum(conf[i][j] for i in range(len(classes)))) for j in range(len(classes))]
                + [str(r["n_cases"])])
    out += _table(["", *classes, "total"], rows)
    out.append("")
    chi = r.get("chi_square")
    chi_text = (f"χ² = {chi['statistic']:.3f}, dof = {chi['dof']}, p = {_p(chi['p'])}" if chi else "—")
    out.append(f"Chi-square test of class frequencies (pred vs ref): {_or_why(r, 'chi_square', chi_text)}.")
    bow = r.get("bowker_symmetry")
    bow_text = (f"statistic = {bow['statistic']:.3f}, dof = {bow['dof']}, p = {_p(bow['p'])}" if bow else "—")
    out.append(f"Bowker symmetry test (paired): {_or_why(r, 'bowker_symmetry', bow_text)}.")
    out.append("")
    return out


def _vertebra_section(r: dict) -> List[str]:
    pv = r.get("per_vertebra") or {}
    if not pv:
        return []
    out = ["## Per vertebra (every paired vertebra, whether or not in the mean)", ""]
    rows = [[v, str(d["n"]), _fmt(d["mae"], 2), _fmt(d["bias"], 2), _or_why(d, "pearson_r", _fmt(d["pearson_r"]))]
            for v, d in pv.items()]
    out += _table(["vertebra", "n", "MAE (mg/cm³)", "bias", "Pearson r"], rows)
    out.append("")
    return out


def _seg_section(r: dict) -> List[str]:
    out = ["## Segmentation (DSC = 2TP/(2TP+FP+FN), PPV, sensitivity: mean ± SD)", ""]
    header = ["vertebra", "DSC (ours)", "PPV (ours)", "sensitivity (ours)"] + [f"DSC {t['name']}" for t in PAPER_TEST_SETS]
    rows = []
    for i, v in enumerate(VERTEBRA_NAMES):
        rows.append([v, _msd(r["dice"].get(v), 3), _msd(r["ppv"].get(v), 3), _msd(r["sensitivity"].get(v), 3)]
                    + [f"{t['dice'][i]:.3f}" for t in PAPER_TEST_SETS])
    out += _table(header, rows)
    out.append("")
    denominator = r["n_seg_cases"] + r.get("n_seg_missing", 0)
    rows = [
        ["valid cases (all four DSC > 0.5)", f"{_pct(r['valid_share'])} ({r['n_valid']}/{denominator})"]
        + _paper_cols(lambda t: f"{100 * t['valid_share']:.1f} % ({t['n_valid']}/{t['n']})"),
        ["all four DSC ≥ 0.90", _pct(r.get("share_all_dsc_ge_090"))]
        + _paper_cols(lambda t: f"{100 * t['share_all_dsc_ge_090']:.1f} %"),
        ["at least three DSC > 0.90", _pct(r.get("share_three_dsc_gt_090"))]
        + _paper_cols(lambda t: f"{100 * t['share_three_dsc_gt_090']:.1f} %"),
    ]
    out += _table(["", "ours"] + [t["name"] for t in PAPER_TEST_SETS], rows)
    out.append("")
    invalid = [c for c in r.get("seg_cases", []) if c["valid"] is False]
    if invalid:
        out += ["Invalid segmentations:", ""]
        out += [f"- {c['case']}: {c['reason']}" for c in invalid[:50]]
        if len(invalid) > 50:
            out.append(f"- … and {len(invalid) - 50} more (see report.json)")
        out.append("")
    return out


def console_summary(report: dict) -> List[str]:
    """The BMD lines `osteobmd evaluate` prints: each statistic, or why it is not computed."""
    if not report.get("cases"):
        return []
    ba = report["bland_altman"]
    lines = [f"BMD: n = {report['n_cases']} paired case(s)"
             + (f", {report['n_failed']} failed case(s)" if report.get("n_failed") else "")
             + (f", bias = {ba['bias']:+.2f} mg/cm³" if ba["bias"] is not None else "")]
    for label, key, text in (
        ("Pearson r", "pearson_r", lambda x: f"{x:.3f}"),
        ("r²", "r2", lambda x: f"{x:.3f}"),
        ("Wilcoxon signed-rank p", "wilcoxon_p", _p),
        ("kappa (linear)", "kappa_linear", lambda x: f"{x:.3f}"),
        ("chi-square p (class frequencies)", "chi_square", lambda x: _p(x["p"])),
    ):
        value = report.get(key)
        lines.append(f"{label}: " + _or_why(report, key, "—" if value is None else text(value)))
    return lines


def render_markdown(report: dict, plots: List[str]) -> str:
    lines = ["# OsteoBMD evaluation", "",
             f"osteobmd {report.get('version', __version__)}. Reference figures: the paper's three test sets "
             "(METHOD.md section 6).", ""]
    if report.get("cases"):
        lines += _bmd_section(report) + _class_section(report) + _vertebra_section(report)
        if report.get("failures"):
            lines += [f"## Failed cases ({report['n_failed']})", ""]
            lines += [f"- {f['case']}: {f['reason']}" for f in report["failures"][:100]]
            lines.append("")
    if report.get("seg_cases") is not None and "dice" in report:
        lines += _seg_section(report)
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def write_report(report: dict, out_dir: PathLike) -> Dict[str, Path]:
    """Write report.json, report.md and the plots into `out_dir` (created if needed).
    Returns {"json": ..., "md": ..., "plots": [...]} paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = dict(report)
    report.setdefault("version", __version__)
    notes = list(report.get("notes", []))
    plots = write_plots(report, out_dir, notes)
    report["notes"] = notes
    report["plots"] = plots
    json_path = out_dir / REPORT_JSON
    json_path.write_text(json.dumps(_jsonable(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path = out_dir / REPORT_MD
    md_path.write_text(render_markdown(report, plots) + "\n", encoding="utf-8")
    return {"json": json_path, "md": md_path, "plots": [out_dir / p for p in plots]}
