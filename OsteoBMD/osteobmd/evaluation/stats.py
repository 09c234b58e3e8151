"""METHOD section 5: the statistics the paper reports, on paired predicted / reference BMD.

Everything here is plain numpy plus `scipy.stats` for the p-values (Pearson, Wilcoxon,
chi-square). Cohen's kappa (unweighted and linearly weighted) and the confusion matrix
are written out from their definitions (no scikit-learn).

Conventions
- The confusion matrix has rows = reference class, columns = predicted class, in the
  order of `config.CLASSES` (osteoporosis, osteopenia, normal), as the paper's Table 3.
- SDs are sample SDs (ddof = 1).
- A statistic that cannot be computed (fewer cases than it can support, zero variance, a
  0/0 kappa) is None in the report, `not_computed[key]` holds the reason and `notes` the
  sentence ("Pearson r: not computed (n = 2; at least 10 paired cases needed)."); nothing
  raises on such data.
- Reproducing the paper: its kappas (0.888 / 0.868 / 0.879) are the *linearly weighted*
  kappas of its Table 3 (the unweighted ones are 0.854 / 0.834 / 0.836), so compare the
  paper's kappa with our `kappa_linear`.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as sps

from ..config import CLASSES, classify_bmd
from ..errors import InputError

# The least paired cases each statistic is reported for; below it: None and the reason.
MIN_CASES = {
    # r is +-1 by construction at n = 2, and its Fisher-z SE 1/sqrt(n - 3) is still 0.38 at
    # n = 10 (95 % interval for r = 0.9: 0.62-0.98); r², its p and the fit line go with it.
    "pearson": 10,
    # Below 6 pairs the smallest exact two-sided p is 2/2^n >= 0.0625: it can never reject.
    "wilcoxon": 6,
    # 2 x k table of n + n cases: a class's expected count is its total / 2, and counts >= 5
    # in two classes need n >= 10 (Cochran's rule); Bowker's paired test is chi-square too.
    "chi_square": 10,
    # About 2k² cases before kappa's large-sample SE holds (Cicchetti & Fleiss 1977): 18 for 3 classes.
    "kappa": 18,
}

# Report keys each statistic fills, and its name in the sentence saying why it is missing.
STATISTIC_KEYS = {
    "pearson": ("Pearson r", ("pearson_r", "pearson_p", "r2", "regression")),
    "wilcoxon": ("Wilcoxon signed-rank test", ("wilcoxon_p", "wilcoxon_statistic")),
    "chi_square": ("Chi-square test of class frequencies", ("chi_square",)),
    "bowker": ("Bowker symmetry test", ("bowker_symmetry",)),
    "kappa": ("Cohen's kappa", ("kappa", "kappa_linear")),
}

# METHOD 5 (Landis & Koch 1977, as the paper reads it).
KAPPA_SCALE = (
    (0.20, "slight"),
    (0.40, "fair"),
    (0.60, "moderate"),
    (0.80, "substantial"),
    (1.00, "almost perfect"),
)


# --------------------------------------------------------------------------- helpers
def _f(x) -> Optional[float]:
    """A JSON-safe float: None for None/NaN/inf."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def mean_sd(values: Sequence[float]) -> Dict[str, Optional[float]]:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"mean": None, "sd": None, "n": 0}
    return {
        "mean": _f(v.mean()),
        "sd": _f(v.std(ddof=1)) if v.size >= 2 else None,
        "n": int(v.size),
    }


def too_few_cases(n: int, statistic: str) -> Optional[str]:
    """The reason a statistic is not computed on n paired cases, or None when n suffices."""
    least = MIN_CASES["chi_square" if statistic == "bowker" else statistic]
    return f"n = {n}; at least {least} paired cases needed" if n < least else None


def not_computed_sentence(statistic: str, reason: str) -> str:
    return f"{STATISTIC_KEYS[statistic][0]}: not computed ({reason})."


def normalize_vertebra(name) -> str:
    """'l1', ' L1 ', '1' -> 'L1'; other names (T12, L5) are kept, upper-cased."""
    s = str(name).strip().upper()
    if s.isdigit():
        return f"L{int(s)}"
    return s


# --------------------------------------------------------------------------- classes
def confusion_matrix(ref_classes: Sequence[str], pred_classes: Sequence[str],
                     classes: Sequence[str] = CLASSES) -> np.ndarray:
    """Counts, rows = reference class, columns = predicted class."""
    if len(ref_classes) != len(pred_classes):
        raise ValueError("reference and prediction must have the same length")
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for r, p in zip(ref_classes, pred_classes):
        m[index[r], index[p]] += 1
    return m


def cohen_kappa(confusion, weights: str = "none") -> Optional[float]:
    """Cohen's kappa of a square count table (rows one rater, columns the other).

    weights: "none" (unweighted, disagreement weight 1 off the diagonal) or "linear"
    (disagreement weight |i - j| / (k - 1) for ordered classes).
    kappa = 1 - sum(w * observed) / sum(w * expected), expected = row x column totals / n,
    which for unweighted kappa equals (p_o - p_e) / (1 - p_e).
    Returns None when undefined (no cases, or both raters used a single class: 0/0).
    """
    c = np.asarray(confusion, dtype=float)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError("kappa needs a square table")
    n = c.sum()
    if n <= 0:
        return None
    k = c.shape[0]
    i, j = np.indices(c.shape)
    if weights == "none":
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j) / max(k - 1, 1)
    else:
        raise ValueError(f"unknown kappa weights {weights!r}")
    expected = np.outer(c.sum(axis=1), c.sum(axis=0)) / n
    denominator = (w * expected).sum()
    if denominator <= 0:
        return None
    return float(1.0 - (w * c).sum() / denominator)


def interpret_kappa(kappa: Optional[float]) -> str:
    """METHOD 5 scale: 0-0.20 slight, 0.21-0.40 fair, 0.41-0.60 moderate,
    0.61-0.80 substantial, 0.81-1 almost perfect (negative: poor, below chance)."""
    if kappa is None or not math.isfinite(kappa):
        return "undefined"
    if kappa < 0:
        return "poor (below chance agreement)"
    for upper, word in KAPPA_SCALE:
        if kappa <= upper + 1e-12:
            return word
    return KAPPA_SCALE[-1][1]


def chi_square_class_frequencies(pred_counts: Sequence[int], ref_counts: Sequence[int],
                                 notes: List[str]) -> Tuple[Optional[dict], Optional[str]]:
    """METHOD 5: chi-square test of the class frequencies, predicted vs reference (2 x k
    contingency table, as the paper compares categorical variables). Classes absent from
    both rows are dropped (their expected count would be zero).
    Returns (result, None) or (None, the reason it is not computed)."""
    table = np.array([pred_counts, ref_counts], dtype=float)
    reason = too_few_cases(int(table[0].sum()), "chi_square")
    if reason:
        return None, reason
    keep = table.sum(axis=0) > 0
    table = table[:, keep]
    if table.shape[1] < 2:
        return None, "fewer than two classes occur"
    chi2, p, dof, expected = sps.chi2_contingency(table, correction=False)
    if (expected < 5).any():
        notes.append("Chi-square test: some expected counts are below 5, so its p-value is approximate.")
    return {"statistic": _f(chi2), "p": _f(p), "dof": int(dof), "classes_used": int(table.shape[1])}, None


def bowker_symmetry(confusion) -> Tuple[Optional[dict], Optional[str]]:
    """Bowker's test of symmetry of the paired table (McNemar for k classes): the paired
    counterpart of the chi-square above (the same cases are classified twice).
    Returns (result, None) or (None, the reason it is not computed)."""
    c = np.asarray(confusion, dtype=float)
    reason = too_few_cases(int(c.sum()), "bowker")
    if reason:
        return None, reason
    stat, dof = 0.0, 0
    for a in range(c.shape[0]):
        for b in range(a + 1, c.shape[0]):
            s = c[a, b] + c[b, a]
            if s > 0:
                stat += (c[a, b] - c[b, a]) ** 2 / s
                dof += 1
    if dof == 0:
        return None, "no off-diagonal (disagreeing) cases"
    return {"statistic": _f(stat), "p": _f(sps.chi2.sf(stat, dof)), "dof": dof}, None


# --------------------------------------------------------------------------- continuous
def bland_altman(pred: Sequence[float], ref: Sequence[float]) -> Dict[str, Optional[float]]:
    """Bias = mean(pred - ref); 95 % limits of agreement = bias -/+ 1.96 SD (ddof 1)."""
    d = np.asarray(pred, dtype=float) - np.asarray(ref, dtype=float)
    if d.size == 0:
        return {"bias": None, "sd": None, "loa_low": None, "loa_high": None, "n": 0}
    bias = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size >= 2 else None
    return {
        "bias": _f(bias),
        "sd": _f(sd),
        "loa_low": _f(bias - 1.96 * sd) if sd is not None else None,
        "loa_high": _f(bias + 1.96 * sd) if sd is not None else None,
        "n": int(d.size),
    }


def pearson(pred: Sequence[float], ref: Sequence[float]) -> dict:
    """{"r", "p", "why_not"}: r and its two-sided p, or None for both and the reason."""
    x = np.asarray(pred, dtype=float)
    y = np.asarray(ref, dtype=float)
    reason = too_few_cases(int(x.size), "pearson")
    if reason is None and (np.ptp(x) == 0 or np.ptp(y) == 0):
        reason = f"the {'predicted' if np.ptp(x) == 0 else 'reference'} BMD has zero variance"
    if reason:
        return {"r": None, "p": None, "why_not": reason}
    r, p = sps.pearsonr(x, y)
    return {"r": _f(r), "p": _f(p), "why_not": None}


def linear_fit(pred: Sequence[float], ref: Sequence[float]) -> Optional[dict]:
    """Least-squares line pred = slope * ref + intercept (the scatter plot's line)."""
    x = np.asarray(ref, dtype=float)
    y = np.asarray(pred, dtype=float)
    if x.size < 2 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return {"slope": _f(slope), "intercept": _f(intercept)}


def wilcoxon_signed_rank(pred: Sequence[float], ref: Sequence[float]) -> dict:
    """{"statistic", "p", "why_not"} of the paired signed-rank test of pred - ref."""
    d = np.asarray(pred, dtype=float) - np.asarray(ref, dtype=float)
    reason = too_few_cases(int(d.size), "wilcoxon")
    if reason is None and np.all(d == 0):
        reason = "every paired difference is zero"
    if reason:
        return {"statistic": None, "p": None, "why_not": reason}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.wilcoxon(d)
    return {"statistic": _f(res.statistic), "p": _f(res.pvalue), "why_not": None}


# --------------------------------------------------------------------------- the table
def _to_float(x) -> Optional[float]:
    if x is None:
        return None
    if isinstance(x, str):
        x = x.strip()
        if x == "" or x.lower() in ("nan", "na", "none", "null"):
            return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise InputError(f"'{x}' is not a number; BMD columns must hold numbers in mg/cm3 (or be empty).") from None
    return v if math.isfinite(v) else None


def evaluate_bmd_table(rows: Iterable[dict], vertebrae: Optional[Sequence[str]] = None,
                       failures: Optional[List[dict]] = None,
                       notes: Optional[List[str]] = None) -> dict:
    """All METHOD 5 BMD statistics from per-vertebra rows.

    rows: dicts with `case_id`, `vertebra`, `bmd_pred`, `bmd_ref` (numbers, or None/"" when
    missing) and optionally `in_mean` (bool: whether the run counted this vertebra in its
    mean; used when `vertebrae` is None). A case's mean BMD is the mean over its rows that
    have both values, restricted to `vertebrae` if given (else to rows with in_mean, else all);
    pred and ref means use the same vertebrae, so they are paired. The class follows from
    the mean via `config.classify_bmd`.
    failures: cases already known to have failed (e.g. no valid vertebra), as
    {"case": ..., "reason": ...}; cases of `rows` with no usable vertebra are added.
    Raises InputError when no case has a paired mean.
    """
    notes = list(notes or [])
    failures = list(failures or [])
    wanted = [normalize_vertebra(v) for v in vertebrae] if vertebrae else None

    by_case: "OrderedDict[str, Dict[str, dict]]" = OrderedDict()
    n_incomplete = 0
    for row in rows:
        case = str(row.get("case_id", "")).strip()
        if not case:
            raise InputError("A row has no case_id; every row needs case_id, vertebra, bmd_pred and bmd_ref.")
        vert = normalize_vertebra(row.get("vertebra", ""))
        if not vert:
            raise InputError(f"A row of case '{case}' has no vertebra name (L1..L4).")
        per_case = by_case.setdefault(case, OrderedDict())
        if vert in per_case:
            raise InputError(f"Case '{case}' has two rows for {vert}; keep one row per case and vertebra.")
        pred = _to_float(row.get("bmd_pred"))
        ref = _to_float(row.get("bmd_ref"))
        if pred is None or ref is None:
            n_incomplete += 1
        per_case[vert] = {"pred": pred, "ref": ref, "in_mean": row.get("in_mean")}
    if n_incomplete:
        notes.append(f"{n_incomplete} vertebra row(s) lack a predicted or a reference BMD and are not counted.")

    cases = []
    per_vertebra: Dict[str, Dict[str, list]] = OrderedDict()
    for case, verts in by_case.items():
        used = []
        for vert, v in verts.items():
            if v["pred"] is None or v["ref"] is None:
                continue
            pv = per_vertebra.setdefault(vert, {"pred": [], "ref": []})
            pv["pred"].append(v["pred"])
            pv["ref"].append(v["ref"])
            if wanted is not None:
                take = vert in wanted
            elif v["in_mean"] is not None:
                take = bool(v["in_mean"])
            else:
                take = True
            if take:
                used.append(vert)
        if not used:
            if any(v["pred"] is not None and v["ref"] is not None for v in verts.values()):
                among = ",".join(wanted) if wanted else "the vertebrae the run averaged"
                reason = f"no vertebra among {among} has both a predicted and a reference BMD"
            else:
                reason = "no vertebra has both a predicted and a reference BMD"
            failures.append({"case": case, "reason": reason})
            continue
        pred_mean = float(np.mean([verts[v]["pred"] for v in used]))
        ref_mean = float(np.mean([verts[v]["ref"] for v in used]))
        cases.append({
            "case": case,
            "bmd_pred": pred_mean,
            "bmd_ref": ref_mean,
            "class_pred": classify_bmd(pred_mean),
            "class_ref": classify_bmd(ref_mean),
            "vertebrae": used,
        })

    if not cases:
        raise InputError(
            "No case has both a predicted and a reference BMD"
            + (f" on {','.join(wanted)}" if wanted else "")
            + "; check the case ids, the vertebra names (L1..L4) and the BMD columns."
        )
    n = len(cases)
    pred = np.array([c["bmd_pred"] for c in cases])
    ref = np.array([c["bmd_ref"] for c in cases])
    diff = pred - ref
    not_computed: Dict[str, str] = OrderedDict()

    def why_not(statistic: str, reason: Optional[str]) -> None:
        if reason:
            for key in STATISTIC_KEYS[statistic][1]:
                not_computed[key] = reason
            notes.append(not_computed_sentence(statistic, reason))

    pr = pearson(pred, ref)
    why_not("pearson", pr["why_not"])
    conf = confusion_matrix([c["class_ref"] for c in cases], [c["class_pred"] for c in cases])
    kappa_reason = too_few_cases(n, "kappa")
    kappa = kappa_lin = None
    if kappa_reason is None:
        kappa = cohen_kappa(conf, "none")
        kappa_lin = cohen_kappa(conf, "linear")
        if kappa is None:
            kappa_reason = ("both the prediction and the reference put every case in the same "
                            "single class (0/0)")
    why_not("kappa", kappa_reason)
    pred_counts = conf.sum(axis=0)
    ref_counts = conf.sum(axis=1)
    absent = [c for i, c in enumerate(CLASSES) if ref_counts[i] == 0]
    if absent:
        notes.append("Class(es) absent from the reference: " + ", ".join(absent) + ".")

    chi, chi_reason = chi_square_class_frequencies(pred_counts, ref_counts, notes)
    why_not("chi_square", chi_reason)
    bowker, bowker_reason = bowker_symmetry(conf)
    why_not("bowker", bowker_reason)
    wil = wilcoxon_signed_rank(pred, ref)
    why_not("wilcoxon", wil["why_not"])

    pv_report = OrderedDict()
    for vert in sorted(per_vertebra):
        p = np.array(per_vertebra[vert]["pred"])
        r = np.array(per_vertebra[vert]["ref"])
        vr = pearson(p, r)
        pv_report[vert] = {
            "n": int(p.size),
            "mae": _f(np.abs(p - r).mean()),
            "bias": _f((p - r).mean()),
            "pearson_r": vr["r"],
            "not_computed": {"pearson_r": vr["why_not"]} if vr["why_not"] else {},
        }

    return {
        "n_cases": n,
        "vertebrae": wanted if wanted is not None else "as measured",
        "pearson_r": pr["r"],
        "pearson_p": pr["p"],
        "r2": _f(pr["r"] ** 2) if pr["r"] is not None else None,
        # The fit line says no more than r does (through 2 points it is exact).
        "regression": linear_fit(pred, ref) if pr["r"] is not None else None,
        "mae": _f(np.abs(diff).mean()),
        "rmse": _f(np.sqrt((diff ** 2).mean())),
        "bland_altman": bland_altman(pred, ref),
        "wilcoxon_p": wil["p"],
        "wilcoxon_statistic": wil["statistic"],
        "pred": mean_sd(pred),
        "ref": mean_sd(ref),
        "classes": list(CLASSES),
        "confusion": conf.tolist(),
        "confusion_orientation": "rows = reference, columns = prediction",
        "accuracy": _f(np.trace(conf) / conf.sum()),
        "kappa": kappa,
        "kappa_interpretation": interpret_kappa(kappa) if kappa_reason is None else "not computed",
        "kappa_linear": kappa_lin,
        "kappa_linear_interpretation": interpret_kappa(kappa_lin) if kappa_reason is None else "not computed",
        "class_counts": {
            "pred": {c: int(pred_counts[i]) for i, c in enumerate(CLASSES)},
            "ref": {c: int(ref_counts[i]) for i, c in enumerate(CLASSES)},
        },
        "chi_square": chi,
        "bowker_symmetry": bowker,
        "per_vertebra": pv_report,
        "not_computed": not_computed,
        "n_failed": len(failures),
        "failures": failures,
        "cases": cases,
        "notes": notes,
    }
