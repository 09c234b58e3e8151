"""osteobmd.evaluation: METHOD 5 statistics, segmentation metrics, inputs, report, CLI."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from osteobmd.errors import InputError, OutputExistsError
from osteobmd.evaluation import (
    add_cli,
    bland_altman,
    cohen_kappa,
    confusion_matrix,
    evaluate,
    evaluate_bmd_table,
    evaluate_segmentation,
    interpret_kappa,
    overlap_metrics,
    parse_vertebrae,
    write_report,
)
from osteobmd.evaluation.plots import (
    DISCLAIMER, bland_altman_figure, confusion_figure, dice_figure, scatter_figure,
)
from osteobmd.evaluation.report import PAPER_TEST_SETS, console_summary
from osteobmd.results import CaseResult, VertebraResult


# ----------------------------------------------------------------------------- kappa
def test_kappa_perfect_agreement_is_one():
    table = [[5, 0, 0], [0, 7, 0], [0, 0, 3]]
    assert cohen_kappa(table) == pytest.approx(1.0)
    assert cohen_kappa(table, "linear") == pytest.approx(1.0)
    assert interpret_kappa(1.0) == "almost perfect"


def test_kappa_hand_computed_3x3():
    table = [[10, 2, 0], [3, 15, 2], [0, 1, 7]]  # rows 12, 20, 8; columns 13, 18, 9; n = 40
    # Unweighted, by hand: p_o = 32/40; p_e = (12*13 + 20*18 + 8*9) / 40^2 = 588/1600.
    p_o, p_e = 32 / 40, 588 / 1600
    assert cohen_kappa(table) == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-12)
    # Linear weights 0, 1/2, 1. Observed weighted disagreement: adjacent cells 2+3+2+1 = 8
    # times 1/2, far cells 0 -> 4/40. Expected: adjacent 12*18/40 + 20*13/40 + 20*9/40 +
    # 8*18/40 = 20 times 1/2 = 10, far 12*9/40 + 8*13/40 = 5.3 -> 15.3/40.
    assert cohen_kappa(table, "linear") == pytest.approx(1 - (4 / 40) / (15.3 / 40), abs=1e-12)
    assert cohen_kappa(table) == pytest.approx(0.683794, abs=1e-6)


@pytest.mark.parametrize("test_set", PAPER_TEST_SETS, ids=lambda t: t["name"])
def test_paper_kappas_are_the_linear_weighted_kappas_of_its_table_3(test_set):
    table = np.array(test_set["confusion"])
    assert table.sum() == test_set["n_valid"]
    assert round(cohen_kappa(table, "linear"), 3) == pytest.approx(test_set["kappa_linear"])


def test_kappa_undefined_and_scale():
    assert cohen_kappa([[4, 0, 0], [0, 0, 0], [0, 0, 0]]) is None  # both raters: one class only
    assert interpret_kappa(None) == "undefined"
    assert interpret_kappa(0.10) == "slight"
    assert interpret_kappa(0.20) == "slight"
    assert interpret_kappa(0.30) == "fair"
    assert interpret_kappa(0.55) == "moderate"
    assert interpret_kappa(0.70) == "substantial"
    assert interpret_kappa(0.81) == "almost perfect"
    assert interpret_kappa(-0.2).startswith("poor")


def test_confusion_rows_are_reference():
    m = confusion_matrix(["osteoporosis"], ["normal"])
    assert m[0, 2] == 1 and m[2, 0] == 0
    r = evaluate_bmd_table([{"case_id": "a", "vertebra": "L1", "bmd_pred": 130.0, "bmd_ref": 70.0}])
    assert r["confusion"][0][2] == 1  # row osteoporosis (reference), column normal (prediction)
    assert r["class_counts"]["ref"]["osteoporosis"] == 1
    assert r["class_counts"]["pred"]["normal"] == 1


# ----------------------------------------------------------------------------- BMD table
def _rows(pred, ref, vertebra="L1"):
    return [{"case_id": f"c{i}", "vertebra": vertebra, "bmd_pred": p, "bmd_ref": r}
            for i, (p, r) in enumerate(zip(pred, ref))]


def test_bland_altman_planted_bias():
    rng = np.random.default_rng(0)
    ref = rng.uniform(40, 200, 200)
    pred = ref + 5.0 + rng.normal(0, 2.0, ref.size)
    d = pred - ref
    ba = bland_altman(pred, ref)
    assert ba["bias"] == pytest.approx(d.mean())
    assert ba["bias"] == pytest.approx(5.0, abs=0.5)
    assert ba["sd"] == pytest.approx(d.std(ddof=1))
    assert ba["loa_low"] == pytest.approx(d.mean() - 1.96 * d.std(ddof=1))
    assert ba["loa_high"] == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))

    r = evaluate_bmd_table(_rows(pred, ref))
    assert r["n_cases"] == 200
    assert r["bland_altman"]["bias"] == pytest.approx(ba["bias"])
    assert r["wilcoxon_p"] < 1e-6  # a 5 mg/cm3 bias over 200 cases is significant
    assert r["pearson_r"] > 0.99 and r["r2"] == pytest.approx(r["pearson_r"] ** 2)
    assert r["mae"] == pytest.approx(np.abs(d).mean())
    assert r["pred"]["mean"] == pytest.approx(pred.mean())
    assert r["ref"]["sd"] == pytest.approx(ref.std(ddof=1))
    assert r["chi_square"] is not None and 0 <= r["chi_square"]["p"] <= 1
    assert sum(map(sum, r["confusion"])) == 200
    assert r["accuracy"] == pytest.approx(np.trace(np.array(r["confusion"])) / 200)


def test_case_mean_uses_selected_vertebrae():
    rows = [
        {"case_id": "a", "vertebra": "L1", "bmd_pred": 100, "bmd_ref": 90},
        {"case_id": "a", "vertebra": "l2", "bmd_pred": 110, "bmd_ref": 100},
        {"case_id": "a", "vertebra": "3", "bmd_pred": 120, "bmd_ref": 110},
        {"case_id": "a", "vertebra": "L4", "bmd_pred": 400, "bmd_ref": 0},
    ]
    r = evaluate_bmd_table(rows, vertebrae=["L1", "L2", "L3"])
    case = r["cases"][0]
    assert case["bmd_pred"] == pytest.approx(110) and case["bmd_ref"] == pytest.approx(100)
    assert case["class_pred"] == "osteopenia"
    assert r["per_vertebra"]["L4"]["mae"] == pytest.approx(400)  # per-vertebra keeps every row
    r_all = evaluate_bmd_table(rows)
    assert r_all["cases"][0]["bmd_pred"] == pytest.approx(182.5)


def test_two_cases_give_no_correlation_or_test_and_say_why(tmp_path):
    report = evaluate_bmd_table(_rows([100.0, 60.0], [95.0, 70.0]))
    assert report["n_cases"] == 2
    for key in ("pearson_r", "pearson_p", "r2", "regression", "wilcoxon_p", "kappa", "kappa_linear",
                "chi_square", "bowker_symmetry"):
        assert report[key] is None, key
        assert report["not_computed"][key].startswith("n = 2; at least "), key
    assert "Pearson r: not computed (n = 2; at least 10 paired cases needed)." in report["notes"]
    assert report["per_vertebra"]["L1"]["pearson_r"] is None
    assert report["bland_altman"]["bias"] == pytest.approx(-2.5)  # what n = 2 does support

    paths = write_report(report, tmp_path)
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["pearson_r"] is None and data["kappa"] is None and data["wilcoxon_p"] is None
    assert data["not_computed"]["pearson_r"] == "n = 2; at least 10 paired cases needed"
    md = paths["md"].read_text(encoding="utf-8")
    assert "| Pearson r | not computed (n = 2; at least 10 paired cases needed) |" in md
    assert "Cohen's kappa not computed (n = 2; at least 18 paired cases needed)" in md
    assert "Chi-square test of class frequencies (pred vs ref): not computed (n = 2;" in md
    summary = "\n".join(console_summary(report))
    assert "Pearson r: not computed (n = 2; at least 10 paired cases needed)" in summary
    assert "1.000" not in summary


@pytest.mark.parametrize("key, least", [("pearson_r", 10), ("wilcoxon_p", 6), ("kappa_linear", 18),
                                        ("chi_square", 10)])
def test_each_statistic_appears_at_its_minimum_case_count(key, least):
    rng = np.random.default_rng(least)
    ref = rng.uniform(40, 200, least)  # spans all three classes
    pred = ref + rng.normal(3, 8, least)
    below = evaluate_bmd_table(_rows(pred[:-1], ref[:-1]))
    assert below[key] is None and below["not_computed"][key] == f"n = {least - 1}; at least {least} paired cases needed"
    enough = evaluate_bmd_table(_rows(pred, ref))
    assert enough[key] is not None and key not in enough["not_computed"]


def test_degenerate_inputs_say_why():
    # Zero variance in the prediction: Pearson undefined, the rest still computed.
    r = evaluate_bmd_table(_rows([100.0] * 12, np.linspace(90, 110, 12)))
    assert r["pearson_r"] is None and r["r2"] is None
    assert r["not_computed"]["pearson_r"] == "the predicted BMD has zero variance"
    assert r["bland_altman"]["bias"] == pytest.approx(0.0)

    # Everyone normal in both: kappa 0/0, a class absent, no crash.
    r = evaluate_bmd_table(_rows(np.linspace(150, 170, 20), np.linspace(151, 172, 20)))
    assert r["kappa"] is None and "(0/0)" in r["not_computed"]["kappa"]
    assert r["kappa_interpretation"] == "not computed"
    assert any("absent" in n for n in r["notes"])
    assert r["accuracy"] == 1.0

    # Identical pred and ref: Wilcoxon skipped with a reason, not an exception.
    same = np.linspace(50, 190, 20)
    r = evaluate_bmd_table(_rows(same, same))
    assert r["wilcoxon_p"] is None and r["not_computed"]["wilcoxon_p"] == "every paired difference is zero"
    assert r["kappa"] == pytest.approx(1.0)


def test_bland_altman_legend_leaves_the_limit_lines_free():
    rng = np.random.default_rng(5)
    ref = rng.uniform(40, 200, 60)
    # Differences spread right up to the limits, so any legend inside the axes would sit on data or a line.
    report = evaluate_bmd_table(_rows(ref + rng.normal(0, 10, 60), ref))
    fig = bland_altman_figure(report)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    limits = [line for line in ax.get_lines() if line.get_gid() in ("loa_low", "loa_high")]
    assert len(limits) == 2
    for line in limits:
        box = line.get_window_extent(renderer)
        assert box.width > 0.9 * ax.bbox.width  # the drawn line spans the axes
        assert not legend.overlaps(box), line.get_gid()
    assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)


def test_every_evaluation_plot_carries_the_disclaimer(tmp_path):
    csv_path = tmp_path / "pred.csv"
    _write_pred_csv(csv_path, n=12)
    pred_dir, ref_dir = _segmentation_folders(tmp_path)
    report = evaluate(csv_path, labels_pred=pred_dir, labels_ref=ref_dir)
    for draw in (bland_altman_figure, scatter_figure, confusion_figure, dice_figure):
        fig = draw(report)
        renderer = fig.canvas.get_renderer()
        notes = [t for t in fig.texts if t.get_text() == DISCLAIMER]
        assert len(notes) == 1, draw.__name__
        box = notes[0].get_window_extent(renderer)
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
        for ax in fig.axes:  # nothing drawn over it
            assert not ax.get_tightbbox(renderer).overlaps(box), draw.__name__


def test_missing_values_and_bad_rows():
    rows = [
        {"case_id": "a", "vertebra": "L1", "bmd_pred": "", "bmd_ref": "100"},
        {"case_id": "b", "vertebra": "L1", "bmd_pred": "90", "bmd_ref": "100"},
    ]
    r = evaluate_bmd_table(rows)
    assert r["n_cases"] == 1 and r["n_failed"] == 1 and r["failures"][0]["case"] == "a"
    with pytest.raises(InputError):
        evaluate_bmd_table([{"case_id": "a", "vertebra": "L1", "bmd_pred": "x", "bmd_ref": 1}])
    with pytest.raises(InputError):
        evaluate_bmd_table([{"case_id": "a", "vertebra": "L1", "bmd_pred": "", "bmd_ref": 1}])
    with pytest.raises(InputError):
        evaluate_bmd_table(_rows([1.0, 2.0], [1.0, 2.0]) * 2)  # duplicate case/vertebra


# ----------------------------------------------------------------------------- segmentation
def test_overlap_metrics_known_counts():
    ref = np.zeros((1, 10, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, 0, 0:10] = 1            # L1: 10 voxels
    pred[0, 0, 0:6] = 1            # 6 TP, 4 FN
    pred[0, 1, 0:2] = 1            # 2 FP
    ref[0, 5, 0:4] = 2             # L2: 4 voxels
    pred[0, 5, 0:4] = 3            # predicted as L3: L2 0 TP, 4 FN; L3 4 FP
    ref[0, 8, 0:5] = 4             # L4 perfect
    pred[0, 8, 0:5] = 4
    m = overlap_metrics(pred, ref)
    assert m["L1"]["dice"] == pytest.approx(2 * 6 / (2 * 6 + 2 + 4))
    assert m["L1"]["ppv"] == pytest.approx(6 / 8)
    assert m["L1"]["sensitivity"] == pytest.approx(6 / 10)
    assert m["L2"]["dice"] == 0 and m["L2"]["ppv"] is None and m["L2"]["sensitivity"] == 0
    assert m["L3"]["dice"] == 0 and m["L3"]["ppv"] == 0 and m["L3"]["sensitivity"] is None
    assert m["L4"]["dice"] == 1.0


def _write_labels(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))


def _four_blocks(shift: int = 0) -> np.ndarray:
    a = np.zeros((4, 40, 10), np.uint8)
    for k in range(4):
        a[:, 10 * k + shift: 10 * k + 8 + shift, 2:8] = k + 1  # 8 rows of each label
    return a


def _segmentation_folders(tmp_path: Path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    # good: exact; poor: L3 shifted away (DSC 0); missing: no prediction.
    _write_labels(ref_dir / "good" / "labels.nrrd", _four_blocks())
    _write_labels(pred_dir / "good.nrrd", _four_blocks())
    poor = _four_blocks()
    poor[poor == 3] = 0
    poor[:, 38:40, 2:8] = 3  # L3 put in an empty band below L4: DSC 0
    _write_labels(ref_dir / "poor" / "labels.nrrd", _four_blocks())
    _write_labels(pred_dir / "poor" / "labels.nrrd", poor)
    _write_labels(ref_dir / "missing.nii.gz", _four_blocks())
    return pred_dir, ref_dir


def test_evaluate_segmentation_valid_share(tmp_path):
    pred_dir, ref_dir = _segmentation_folders(tmp_path)
    r = evaluate_segmentation(pred_dir, ref_dir)
    assert r["n_seg_cases"] == 2 and r["n_seg_missing"] == 1
    assert r["n_valid"] == 1
    assert r["valid_share"] == pytest.approx(1 / 3)  # the missing prediction counts as invalid
    assert r["dice"]["L1"]["mean"] == pytest.approx(1.0) and r["dice"]["L1"]["sd"] == pytest.approx(0.0)
    assert r["dice"]["L3"]["mean"] == pytest.approx(0.5)  # 1.0 and 0.0
    assert r["dice"]["L3"]["sd"] == pytest.approx(np.std([1.0, 0.0], ddof=1))
    poor = next(c for c in r["seg_cases"] if c["case"] == "poor")
    assert poor["valid"] is False and "L3" in poor["reason"]
    for key in ("ppv", "sensitivity"):
        assert set(r[key]) == {"L1", "L2", "L3", "L4"}
        assert {"mean", "sd"} <= set(r[key]["L1"])


def test_segmentation_no_common_case(tmp_path):
    _write_labels(tmp_path / "p" / "a.nrrd", _four_blocks())
    _write_labels(tmp_path / "r" / "b.nrrd", _four_blocks())
    with pytest.raises(InputError):
        evaluate_segmentation(tmp_path / "p", tmp_path / "r")


# ----------------------------------------------------------------------------- run folders
def _result(case, bmds, valid=(True, True, True, True), mean_vertebrae=("L1", "L2", "L3")):
    verts = [VertebraResult(name=f"L{i + 1}", bmd_mg_cm3=b, center_lps_mm=None, patch=None, valid=v,
                            reasons=[] if v else ["implausible size"])
             for i, (b, v) in enumerate(zip(bmds, valid))]
    used = [b for b, v, vr in zip(bmds, valid, verts) if v and b is not None and vr.name in mean_vertebrae]
    mean = float(np.mean(used)) if used else None
    return CaseResult(case=case, vertebrae=verts, mean_bmd_mg_cm3=mean, mean_vertebrae=list(mean_vertebrae),
                      classification=None, valid=bool(used))


def _write_runs(tmp_path: Path) -> tuple:
    runs = tmp_path / "runs"
    for folder, res in (
        ("p1", _result("p1", [100.0, 104.0, 108.0, 300.0])),
        ("p2", _result("p2", [60.0, 62.0, 64.0, 66.0], valid=(True, False, True, True))),
        ("p3", _result("p3", [150.0, 150.0, 150.0, 150.0])),
        ("p4", _result("p4", [None, None, None, None], valid=(False, False, False, False))),
    ):
        (runs / folder).mkdir(parents=True)
        res.write_json(runs / folder / "results.json")
    ref = tmp_path / "ref.csv"
    with ref.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "vertebra", "bmd_ref"])
        for case, values in (("p1", (98, 100, 102, 104)), ("p2", (70, 72, 74, 76)),
                             ("p3", (140, 140, 140, 140)), ("p4", (90, 90, 90, 90))):
            for i, v in enumerate(values):
                w.writerow([case, f"L{i + 1}", v])
    return runs, ref


def test_run_folder_input(tmp_path):
    runs, ref = _write_runs(tmp_path)
    r = evaluate(runs, reference=ref)
    assert r["source"] == "run folders"
    assert r["n_cases"] == 3
    assert r["n_failed"] == 1 and r["failures"][0]["case"] == "p4"
    cases = {c["case"]: c for c in r["cases"]}
    # p1: the run averaged L1-L3 (L4 = 300 is outside its mean); p2: L2 invalid is skipped.
    assert cases["p1"]["bmd_pred"] == pytest.approx(104.0) and cases["p1"]["bmd_ref"] == pytest.approx(100.0)
    assert cases["p2"]["vertebrae"] == ["L1", "L3"]
    assert cases["p2"]["bmd_pred"] == pytest.approx(62.0) and cases["p2"]["bmd_ref"] == pytest.approx(72.0)
    assert cases["p2"]["class_ref"] == "osteoporosis"
    # --vertebrae overrides the runs' own choice.
    r = evaluate(runs, reference=ref, vertebrae=["L4"])
    assert {c["case"]: c["bmd_pred"] for c in r["cases"]}["p1"] == pytest.approx(300.0)
    with pytest.raises(InputError):
        evaluate(runs)  # a folder of runs needs --reference


# ----------------------------------------------------------------------------- report + CLI
def _write_pred_csv(path: Path, n: int = 30, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "vertebra", "bmd_pred", "bmd_ref"])
        for c in range(n):
            base = rng.uniform(40, 200)
            for v in ("L1", "L2", "L3", "L4"):
                ref = base + rng.normal(0, 6)
                w.writerow([f"c{c:02d}", v, f"{ref + 2 + rng.normal(0, 5):.1f}", f"{ref:.1f}"])


def test_write_report_files_parse(tmp_path):
    csv_path = tmp_path / "pred.csv"
    _write_pred_csv(csv_path)
    pred_dir, ref_dir = _segmentation_folders(tmp_path)
    out = tmp_path / "out"
    report = evaluate(csv_path, out_dir=out, labels_pred=pred_dir, labels_ref=ref_dir, vertebrae=["L1", "L2", "L3"])
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))  # strict JSON (no NaN)
    for key in ("n_cases", "pearson_r", "pearson_p", "r2", "bland_altman", "wilcoxon_p", "kappa", "kappa_linear",
                "kappa_interpretation", "confusion", "accuracy", "class_counts", "pred", "ref", "chi_square",
                "per_vertebra", "dice", "ppv", "sensitivity", "valid_share", "n_valid"):
        assert key in data, key
    assert set(data["bland_altman"]) >= {"bias", "sd", "loa_low", "loa_high"}
    assert data["n_cases"] == 30 == report["n_cases"]
    assert np.array(data["confusion"]).shape == (3, 3)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "paper test 1" in md and "0.888" in md and "| ours |" in md.replace("|  | ours |", "| ours |")
    assert "Segmentation" in md and "0.823" in md
    for name in ("bland_altman.png", "scatter.png", "confusion.png", "dice.png"):
        blob = (out / name).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 2000, name
    assert set(data["plots"]) == {"bland_altman.png", "scatter.png", "confusion.png", "dice.png"}


def test_single_case_report_still_written(tmp_path):
    report = evaluate_bmd_table([{"case_id": "a", "vertebra": "L1", "bmd_pred": 90, "bmd_ref": 85}])
    paths = write_report(report, tmp_path)
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["n_cases"] == 1 and data["bland_altman"]["sd"] is None
    assert "confusion.png" in data["plots"] and "scatter.png" not in data["plots"]


def _parser():
    parser = argparse.ArgumentParser(prog="osteobmd")
    add_cli(parser.add_subparsers(dest="command"))
    return parser


def test_cli_runs_and_refuses_overwrite(tmp_path, capsys):
    csv_path = tmp_path / "pred.csv"
    _write_pred_csv(csv_path, n=8)
    out = tmp_path / "out"
    args = _parser().parse_args(["evaluate", str(csv_path), "--out", str(out), "--vertebrae", "L1,L2,L3"])
    assert args.handler(args) == 0
    assert "n = 8" in capsys.readouterr().out
    with pytest.raises(OutputExistsError):
        args.handler(args)
    args = _parser().parse_args(["evaluate", str(csv_path), "--out", str(out), "--overwrite"])
    assert args.handler(args) == 0


def test_cli_input_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,vertebra,bmd\nx,L1,3\n")
    for argv in (
        ["evaluate", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o1")],
        ["evaluate", str(bad), "--out", str(tmp_path / "o2")],
        ["evaluate", "--out", str(tmp_path / "o3")],
        ["evaluate", "--labels-pred", str(tmp_path), "--out", str(tmp_path / "o4")],
    ):
        args = _parser().parse_args(argv)
        with pytest.raises(InputError) as err:
            args.handler(args)
        assert str(err.value).endswith(".")
    with pytest.raises(InputError):
        parse_vertebrae("L1,L9")
    assert parse_vertebrae("l1, L2,3") == ["L1", "L2", "L3"]
    assert parse_vertebrae(None) is None


def test_csv_with_separate_reference(tmp_path):
    pred = tmp_path / "pred.csv"
    pred.write_text("case;vertebra;bmd_pred\na;L1;100\na;L2;110\nb;L1;60\nb;L2;70\nc;L1;150\nc;L2;160\n")
    ref = tmp_path / "ref.csv"
    ref.write_text("case_id,vertebra,bmd_ref\na,L1,95\na,L2,105\nb,L1,65\nb,L2,75\nc,L1,150\nc,L2,150\n")
    r = evaluate(pred, reference=ref)
    assert r["n_cases"] == 3
    assert {c["case"]: c["bmd_ref"] for c in r["cases"]} == {"a": 100.0, "b": 70.0, "c": 150.0}


def test_main_cli_dispatches_evaluate(tmp_path, capsys):
    cli = pytest.importorskip("osteobmd.cli")
    csv_path = tmp_path / "pred.csv"
    _write_pred_csv(csv_path, n=5)
    assert cli.main(["evaluate", str(csv_path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.json").is_file()
    printed = capsys.readouterr().out
    assert "BMD: n = 5 paired case(s)" in printed
    assert "Pearson r: not computed (n = 5; at least 10 paired cases needed)" in printed
    assert cli.main(["evaluate", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_segmentation_is_scored_on_the_predicted_sagittal_slab(tmp_path):
    """A perfect mid-sagittal prediction of 3D reference bodies scores 1 on the slab, less in 3D."""
    from osteobmd.evaluation import evaluate_segmentation

    ref = np.zeros((40, 30, 20), np.uint8)
    for n, k0 in enumerate((30, 21, 12, 3)):
        ref[k0:k0 + 7, 8:20, 4:16] = n + 1  # bodies 12 voxels wide left-right
    pred = np.zeros_like(ref)
    pred[:, :, 9:11] = ref[:, :, 9:11]  # the network's slab: two sagittal slices
    for folder, array in (("pred", pred), ("ref", ref)):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / folder / "case1.nrrd"))
    slab = evaluate_segmentation(tmp_path / "pred", tmp_path / "ref")
    whole = evaluate_segmentation(tmp_path / "pred", tmp_path / "ref", plane="3d")
    assert slab["dice"]["L2"]["mean"] == pytest.approx(1.0)
    assert whole["dice"]["L2"]["mean"] == pytest.approx(2 * 2 / (2 + 12), rel=1e-3)
