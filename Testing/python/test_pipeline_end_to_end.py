"""The whole pipeline with the shipped weights: the sample CT, the --mask path, batch, progress.

These run real inference with `model_weights/`; they assert what must hold for any CT
(outputs agree with each other, geometry in millimetres, bad input refused) and how well
the shipped networks do where a reference exists.
"""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from osteobmd import io as ctio
from osteobmd.cli import SAMPLE_CT
from osteobmd.config import classify_bmd
from osteobmd.pipeline import run_case
from osteobmd.results import CaseResult
from test_io import SHARED, THORAX_DICOM

TS_BODIES = SHARED / "vertebral_bodies.nii.gz"  # TotalSegmentator: 20..23 = L1..L4


def osteobmd(*args):
    proc = subprocess.run([sys.executable, "-m", "osteobmd", *map(str, args)], capture_output=True, text=True,
                          timeout=900)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    proc = osteobmd("run", SAMPLE_CT, "--out", out, "--overwrite", "--progress", "json", "--scene")
    return out, proc


@pytest.fixture(scope="module")
def sample_reference_labels(tmp_path_factory):
    """TotalSegmentator's L1-L4 bodies of the sample as a 1..4 label map on the CT's grid."""
    if not TS_BODIES.exists():
        pytest.skip("shared TotalSegmentator labels not present")
    ct = ctio.read_ct(SAMPLE_CT)
    ts = sitk.GetArrayFromImage(ctio.to_lps(sitk.ReadImage(str(TS_BODIES))))
    lab = np.zeros(ts.shape, np.uint8)
    for n in range(4):
        lab[ts == 20 + n] = n + 1
    image = sitk.GetImageFromArray(lab)
    image.CopyInformation(ct)
    path = tmp_path_factory.mktemp("ref") / "labels.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def test_sample_run_writes_consistent_outputs(sample_run):
    out, proc = sample_run
    assert proc.returncode in (0, 3), proc.stderr
    result = CaseResult.read_json(out / "results.json")
    for name in ("results.csv", "labels.nrrd", "patches.npz", "patches.png", "overview.png", "scene.mrb"):
        assert (out / name).stat().st_size > 0, name
    # The mean is the mean of the valid chosen vertebrae, and the class follows from it.
    used = [v.bmd_mg_cm3 for v in result.vertebrae if v.valid and v.name in result.mean_vertebrae]
    if used:
        assert result.mean_bmd_mg_cm3 == pytest.approx(np.mean(used), abs=0.01)
        assert result.classification == classify_bmd(result.mean_bmd_mg_cm3)
    else:
        assert proc.returncode == 3 and result.mean_bmd_mg_cm3 is None
    assert all(v.reasons for v in result.vertebrae if not v.valid)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["vertebra"] for r in rows] == ["L1", "L2", "L3", "L4"]
    # labels.nrrd lies on the CT's grid (as read from disk: RAS-stored NIfTI).
    ct = sitk.ReadImage(str(SAMPLE_CT))
    labels = sitk.ReadImage(str(out / "labels.nrrd"))
    assert ctio.to_lps(labels).GetSize() == ctio.to_lps(ct).GetSize()
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) <= {0, 1, 2, 3, 4}
    # Progress came as JSON lines, ending at 1.0.
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert records and records[-1]["fraction"] == pytest.approx(1.0)
    assert [r["fraction"] for r in records] == sorted(r["fraction"] for r in records)


def test_sample_levels_that_disagree_with_totalsegmentator_are_never_valid(sample_run, sample_reference_labels):
    """On a real scan (TotalSegmentator as reference): every level the network got wrong is flagged.

    The shipped R2U-Net is trained on synthetic CT only; what it must guarantee on any scan
    is that a wrongly placed or named level never passes as valid (no silently wrong BMD).
    """
    from osteobmd.evaluation.segmentation import overlap_metrics, sagittal_slab

    out, _ = sample_run
    result = CaseResult.read_json(out / "results.json")
    pred = sitk.GetArrayFromImage(ctio.to_lps(sitk.ReadImage(str(out / "labels.nrrd"))))
    ref = sitk.GetArrayFromImage(ctio.to_lps(sitk.ReadImage(str(sample_reference_labels))))
    metrics = overlap_metrics(*sagittal_slab(pred, ref))
    dice = {name: metrics[name]["dice"] or 0.0 for name in ("L1", "L2", "L3", "L4")}
    print("sample Dice vs TotalSegmentator:", dice)
    for v in result.vertebrae:
        if dice[v.name] < 0.5:
            assert not v.valid, (v.name, dice[v.name])


def test_mask_path_measures_the_given_labels_and_marks_them(tmp_path, sample_reference_labels):
    result = run_case(SAMPLE_CT, tmp_path / "out", mask_path=sample_reference_labels, write_scene=False)
    assert result.mask_source == "user" and result.level_anchor == "user"
    assert all(v.from_corrected_mask for v in result.vertebrae)
    assert all(v.valid for v in result.vertebrae), [v.reasons for v in result.vertebrae]
    # The vertebra centres are the labels' centroids (TotalSegmentator L2 at z ~ 352 mm).
    assert result.vertebra("L2").center_lps_mm[2] == pytest.approx(351.9, abs=2.0)


def test_same_body_at_another_spacing_gives_the_same_bmd(tmp_path, sample_reference_labels):
    """3 mm and 1.5 mm versions of one scan: patches are cut in millimetres, so BMD agrees."""
    ct = ctio.read_ct(SAMPLE_CT)
    labels = ctio.read_labelmap(sample_reference_labels, ct)
    fine_spacing = (1.5, 1.5, 1.5)
    size = [int(round(n * s / f)) for n, s, f in zip(ct.GetSize(), ct.GetSpacing(), fine_spacing)]
    fine_ct = sitk.Resample(ct, size, sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), fine_spacing,
                            ct.GetDirection(), -1024.0, sitk.sitkFloat32)
    fine_lab = sitk.Resample(labels, fine_ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    sitk.WriteImage(sitk.Cast(fine_ct, sitk.sitkInt16), str(tmp_path / "fine.nrrd"))
    sitk.WriteImage(fine_lab, str(tmp_path / "fine_labels.nrrd"))
    coarse = run_case(SAMPLE_CT, tmp_path / "coarse", mask_path=sample_reference_labels, write_scene=False)
    fine = run_case(tmp_path / "fine.nrrd", tmp_path / "fine", mask_path=tmp_path / "fine_labels.nrrd",
                    write_scene=False)
    for a, b in zip(coarse.vertebrae, fine.vertebrae):
        assert a.patch.mean_hu == pytest.approx(b.patch.mean_hu, abs=6.0)
        assert a.bmd_mg_cm3 == pytest.approx(b.bmd_mg_cm3, abs=8.0)


def test_regression_reads_synthetic_bmd_from_true_masks(tmp_path):
    """On held-apart synthetic cases (seeds never trained on) with their true masks."""
    from osteobmd.synthetic import make_case, write_case

    errors = []
    for seed in (900001, 900002):
        case = make_case(seed)
        write_case(case, tmp_path / str(seed))
        result = run_case(tmp_path / str(seed) / "ct.nrrd", tmp_path / f"out{seed}",
                          mask_path=tmp_path / str(seed) / "labels.nrrd", write_scene=False)
        errors += [v.bmd_mg_cm3 - case.bmd[v.name] for v in result.vertebrae if v.valid]
    assert len(errors) >= 6
    assert np.mean(np.abs(errors)) < 15.0, errors


def test_thorax_without_lumbar_spine_is_bad_input(tmp_path):
    if not THORAX_DICOM.exists():
        pytest.skip("shared real DICOM series not present")
    proc = osteobmd("run", THORAX_DICOM, "--out", tmp_path / "out")
    assert proc.returncode in (2, 3), proc.stderr
    assert "lumbar" in proc.stderr.lower() or "no valid measurement" in proc.stderr.lower()


def test_batch_is_resumable_and_survives_a_bad_case(tmp_path, sample_reference_labels):
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(SAMPLE_CT, cases / "good.nii.gz")
    shutil.copy(sample_reference_labels, tmp_path / "good_labels.nrrd")
    (cases / "broken.nii.gz").write_text("not an image")
    listing = tmp_path / "list.csv"
    listing.write_text("path,mask\ncases/good.nii.gz,good_labels.nrrd\ncases/broken.nii.gz,\n")
    out = tmp_path / "out"
    proc = osteobmd("batch", listing, "--out", out, "--no-scene")
    assert proc.returncode == 2, proc.stderr  # a case was refused: the batch says so
    assert "summary:" in proc.stdout
    with open(out / "summary.csv") as f:
        status = {r["case_id"]: r["status"] for r in csv.DictReader(f)}
    assert status == {"good": "done", "broken": "bad_input"}
    mtime = (out / "good" / "results.json").stat().st_mtime
    proc = osteobmd("batch", listing, "--out", out, "--no-scene")
    with open(out / "summary.csv") as f:
        status = {r["case_id"]: r["status"] for r in csv.DictReader(f)}
    assert status["good"] == "skipped_done" and (out / "good" / "results.json").stat().st_mtime == mtime

