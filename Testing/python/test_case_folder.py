"""A case folder is whole or untouched: bad input, a crash, Ctrl-C/SIGTERM or SIGKILL at each
output stage, --overwrite, a user's own files, batch resume; and the case's name.

Runs measure a small toy CT with its own label map (--mask), so no segmentation is run.
"""

import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import zipfile

import pytest
import SimpleITK as sitk

from osteobmd import case_folder, cli
from osteobmd.batch import batch_exit_code, run_batch
from osteobmd.pipeline import run_case
from osteobmd.results import CaseResult
from toy_ct import make_toy_ct

# The output stages, each named by the file its progress message names.
OUTPUT_STAGES = ("results.csv", "labels.nrrd", "patches.npz", "overview.png", "scene.mrb")
# A child that is `osteobmd run`, except that its progress sink signals the process itself as
# the chosen output stage starts: the kill lands at that stage every time, not by a race.
KILLED_AT_STAGE = """
import os, sys
from osteobmd import cli, progress
stage, signum = sys.argv[1], int(sys.argv[2])
report = progress.JsonLinesProgress.__call__
def report_then_signal(self, name, fraction, message=""):
    report(self, name, fraction, message)
    if name == "outputs" and stage in message:
        os.kill(os.getpid(), signum)
progress.JsonLinesProgress.__call__ = report_then_signal
sys.exit(cli.main(sys.argv[3:]))
"""


def write_toy_case(folder, vertebrae=("L1", "L2", "L3", "L4")):
    ct, labels = make_toy_ct((2.0, 2.0, 2.5), vertebrae=vertebrae)
    folder.mkdir(parents=True)
    sitk.WriteImage(sitk.Cast(ct, sitk.sitkInt16), str(folder / "ct.nrrd"))
    sitk.WriteImage(labels, str(folder / "labels.nrrd"))
    return folder / "ct.nrrd", folder / "labels.nrrd"


def snapshot(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def hidden_beside(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("." + folder.name))


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(ct, mask, old): a toy case and a complete earlier result of it (no scene)."""
    root = tmp_path_factory.mktemp("toy")
    ct, mask = write_toy_case(root / "case_0001")
    old = root / "old"
    run_case(ct, old, mask_path=mask, write_scene=False)
    return ct, mask, old


@pytest.fixture
def out(toy, tmp_path):
    """A copy of the complete earlier result, to be replaced (or not)."""
    return shutil.copytree(toy[2], tmp_path / "out")


def run_cli(*args):
    return cli.main(["run", *map(str, args), "--progress", "none"])


def test_case_named_after_its_folder_when_the_file_name_is_generic(toy):
    assert case_folder.case_name("/data/case_0001/ct.nrrd") == "case_0001"
    assert case_folder.case_name("/data/case_0002/Volume.nii.gz") == "case_0002"
    assert case_folder.case_name("/data/cases/subject-12.nii.gz") == "subject-12"
    assert CaseResult.read_json(toy[2] / "results.json").case == "case_0001"  # run on case_0001/ct.nrrd


def test_a_run_leaves_a_whole_folder_and_nothing_beside_it(toy):
    assert case_folder.is_complete(toy[2])
    assert set(os.listdir(toy[2])) == set(case_folder.REQUIRED_FILES)
    assert hidden_beside(toy[2]) == []


def test_overwrite_replaces_the_whole_folder_on_success(toy, out):
    (out / "scene.mrb").write_bytes(b"case A's scene")  # the wrong patient's scene must not stay
    assert run_cli(toy[0], "--out", out, "--mask", toy[1], "--overwrite", "--no-scene", "--case-id", "B") == 0
    assert CaseResult.read_json(out / "results.json").case == "B"
    assert not (out / "scene.mrb").exists()
    assert case_folder.is_complete(out) and hidden_beside(out) == []


def test_a_run_writes_the_scene_only_when_asked(toy, tmp_path):
    pytest.importorskip("slicer", reason="slicer-core (the 'slicer' extra) is not installed")
    plain, with_scene = tmp_path / "plain", tmp_path / "with_scene"
    assert run_cli(toy[0], "--out", plain, "--mask", toy[1]) == 0
    assert set(os.listdir(plain)) == set(case_folder.REQUIRED_FILES)  # no scene.mrb by default
    assert run_cli(toy[0], "--out", with_scene, "--mask", toy[1], "--scene") == 0
    assert set(os.listdir(with_scene)) == set(case_folder.REQUIRED_FILES) | {"scene.mrb"}
    assert zipfile.is_zipfile(with_scene / "scene.mrb")


def test_overwrite_by_two_renames_where_no_atomic_exchange_exists(toy, out, monkeypatch):
    monkeypatch.setattr(case_folder, "exchange", lambda a, b: False)
    assert run_cli(toy[0], "--out", out, "--mask", toy[1], "--overwrite", "--no-scene", "--case-id", "B") == 0
    assert CaseResult.read_json(out / "results.json").case == "B"
    assert case_folder.is_complete(out) and hidden_beside(out) == []


def test_a_failed_overwrite_leaves_the_old_folder_exactly(toy, out, tmp_path, capsys):
    before = snapshot(out)
    empty = sitk.ReadImage(str(toy[1])) * 0  # an empty label map: refused after the CT was read
    sitk.WriteImage(empty, str(tmp_path / "empty.nrrd"))
    assert run_cli(toy[0], "--out", out, "--mask", tmp_path / "empty.nrrd", "--overwrite", "--no-scene") == 2
    assert "empty" in capsys.readouterr().err
    assert snapshot(out) == before and hidden_beside(out) == []


def test_a_crash_while_writing_leaves_the_old_folder_and_logs_beside_it(toy, out, tmp_path, monkeypatch, capsys):
    from osteobmd import outputs

    def broken_overview(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(outputs, "draw_overview_png", broken_overview)  # after csv, labels, npz were written
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = snapshot(out)
    assert run_cli(toy[0], "--out", out, "--mask", toy[1], "--overwrite", "--no-scene") == 1
    err = capsys.readouterr().err
    log = out.parent / "out.error.log"
    assert "internal error" in err and str(log) in err
    assert "drawing failed" in log.read_text(encoding="utf-8") and os.listdir(cwd) == []
    assert snapshot(out) == before and hidden_beside(out) == []


def test_files_the_tool_did_not_write_are_never_replaced(toy, out, capsys):
    (out / "edited_mask.nrrd").write_bytes(b"a reader's corrected mask")
    before = snapshot(out)
    assert run_cli(toy[0], "--out", out, "--mask", toy[1], "--overwrite", "--no-scene") == 2
    err = capsys.readouterr().err
    assert "edited_mask.nrrd" in err and "did not write" in err
    assert snapshot(out) == before


def test_without_overwrite_a_complete_result_is_kept(toy, out, capsys):
    before = snapshot(out)
    assert run_cli(toy[0], "--out", out, "--mask", toy[1], "--no-scene") == 2
    assert "--overwrite" in capsys.readouterr().err and snapshot(out) == before


@pytest.mark.parametrize("stage", ["results.csv", "scene.mrb"])
def test_a_cancel_with_no_earlier_result_leaves_no_folder(toy, tmp_path, stage):
    def cancel_at_stage(name, fraction, message=""):
        if name == "outputs" and stage in message:
            raise KeyboardInterrupt  # what Ctrl-C (or SIGTERM, in the CLI) raises

    target = tmp_path / "new"
    with pytest.raises(KeyboardInterrupt):
        run_case(toy[0], target, mask_path=toy[1], write_scene=True, progress=cancel_at_stage)
    assert not target.exists() and hidden_beside(target) == []


def test_a_swap_cut_between_its_two_renames_is_undone_by_the_next_run(toy, out, capsys):
    """SIGKILL after the old result was moved aside and before the new one was moved in."""
    before, pid = snapshot(out), dead_pid()
    os.rename(out, case_folder.hidden_path(out, case_folder.OLD, pid))
    partial = case_folder.hidden_path(out, case_folder.NEW, pid)
    partial.mkdir()
    (partial / "results.csv").write_text("half")
    assert run_cli(toy[0], "--out", out, "--mask", toy[1], "--no-scene") == 2  # refused: results exist again
    assert snapshot(out) == before and hidden_beside(out) == []


def test_a_folder_of_a_live_run_is_left_alone(out):
    """Two runs on one target: the second never removes the first one's hidden folder."""
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            busy = case_folder.hidden_path(out, case_folder.NEW, other.pid)
            busy.mkdir()
            case_folder.recover(out)
            assert busy.exists()
        finally:
            other.kill()
    case_folder.recover(out)
    assert not busy.exists()


@pytest.fixture(scope="module")
def killed_runs(toy, tmp_path_factory):
    """Every output stage x (SIGTERM, SIGKILL), all started at once: {(stage, signal): (target, rc, stderr)}."""
    ct, mask, old = toy
    root = tmp_path_factory.mktemp("killed")
    runs = {}
    for stage in OUTPUT_STAGES:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            target = shutil.copytree(old, root / f"{stage}-{sig.name}")
            args = ["run", ct, "--out", target, "--mask", mask, "--overwrite", "--progress", "json"]
            args += ["--scene"] if stage == "scene.mrb" else ["--no-scene"]
            proc = subprocess.Popen([sys.executable, "-c", KILLED_AT_STAGE, stage, str(int(sig)), *map(str, args)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            runs[stage, sig] = (target, proc)
    return {key: (target, proc.wait(timeout=1800), proc.stderr.read()) for key, (target, proc) in runs.items()}


@pytest.mark.parametrize("stage", OUTPUT_STAGES)
def test_sigterm_at_an_output_stage_cancels_cleanly(killed_runs, toy, stage):
    target, rc, err = killed_runs[stage, signal.SIGTERM]
    assert f'"message": "writing {stage}' in err or f"drawing patches.png and {stage}" in err  # it got there
    assert rc == 130 and "cancelled" in err and "Traceback" not in err, err[-2000:]
    assert snapshot(target) == snapshot(toy[2]) and hidden_beside(target) == []


@pytest.mark.parametrize("stage", OUTPUT_STAGES)
def test_sigkill_at_an_output_stage_leaves_the_old_result_and_the_next_run_clears_up(killed_runs, toy, stage):
    target, rc, err = killed_runs[stage, signal.SIGKILL]
    assert rc == -signal.SIGKILL and stage in err
    assert snapshot(target) == snapshot(toy[2])
    assert len(hidden_beside(target)) == 1  # the killed run's hidden folder ...
    run_case(toy[0], target, mask_path=toy[1], write_scene=False, overwrite=True, case_id="next")
    assert hidden_beside(target) == [] and case_folder.is_complete(target)  # ... gone after the next run
    assert CaseResult.read_json(target / "results.json").case == "next"


def write_list(tmp_path, cases):
    listing = tmp_path / "list.csv"
    listing.write_text("path,mask\n" + "".join(f"{c}/ct.nrrd,{c}/labels.nrrd\n" for c in cases))
    return listing


def test_batch_resume_measures_again_what_is_short_of_complete(tmp_path):
    for name in ("case_0001", "case_0002"):
        write_toy_case(tmp_path / name)
    listing, out = write_list(tmp_path, ("case_0001", "case_0002")), tmp_path / "out"
    rows = run_batch(listing, out, options=None, report=lambda line: None)
    assert {r["case_id"]: r["status"] for r in rows} == {"case_0001": "done", "case_0002": "done"}  # not "ct", "ct_2"
    (out / "case_0002" / "overview.png").unlink()  # e.g. what an older version left when stopped
    stale = case_folder.hidden_path(out / "case_0001", case_folder.NEW, dead_pid())
    stale.mkdir()
    kept = snapshot(out / "case_0001")
    rows = run_batch(listing, out, report=lambda line: None)
    assert {r["case_id"]: r["status"] for r in rows} == {"case_0001": "skipped_done", "case_0002": "done"}
    assert case_folder.is_complete(out / "case_0002") and snapshot(out / "case_0001") == kept
    assert sorted(p.name for p in out.iterdir()) == ["case_0001", "case_0002", "summary.csv"]


def test_batch_exit_code_says_whether_any_case_failed(tmp_path, capsys):
    write_toy_case(tmp_path / "case_0001")
    write_toy_case(tmp_path / "case_0002", vertebrae=("L4",))  # L1-L3 absent: no valid mean
    out = tmp_path / "out"
    args = ["batch", str(write_list(tmp_path, ("case_0001", "case_0002"))), "--out", str(out), "--no-scene"]
    assert cli.main(args) == 3
    assert "summary:" in capsys.readouterr().out
    (tmp_path / "case_0003").mkdir()
    (tmp_path / "case_0003" / "ct.nrrd").write_text("not an image")
    (tmp_path / "case_0003" / "labels.nrrd").write_text("not an image either")
    args[1] = str(write_list(tmp_path, ("case_0001", "case_0002", "case_0003")))
    assert cli.main(args) == 2  # resumed: 1 skipped, 2 skipped with no valid result, 3 bad input
    with open(out / "summary.csv") as f:
        status = {r["case_id"]: r["status"] for r in csv.DictReader(f)}
    assert status == {"case_0001": "skipped_done", "case_0002": "skipped_done", "case_0003": "bad_input"}
    assert batch_exit_code([{"status": "done"}, {"status": "error"}, {"status": "bad_input"}]) == 1
    assert batch_exit_code([{"status": "done"}, {"status": "skipped_done", "exit_code": 0}]) == 0


def test_a_batch_case_that_crashes_leaves_its_traceback_beside_its_folder(tmp_path, monkeypatch):
    # One broken case must not stop a batch; its row points at the log, as `run` does.
    import osteobmd.pipeline
    from osteobmd.batch import BatchItem, _run_one
    from osteobmd.options import RunOptions

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(osteobmd.pipeline, "run_case", crash)
    (tmp_path / "out").mkdir()  # the batch's output folder, made before any case runs
    row = _run_one(BatchItem("case_7", tmp_path / "ct.nii.gz"), str(tmp_path / "out"), RunOptions.parse(), 1)
    log = tmp_path / "out" / "case_7.error.log"
    assert row["status"] == "error" and f"details in {log}" in row["message"] and "simulated crash" in row["message"]
    assert "RuntimeError: simulated crash" in log.read_text(encoding="utf-8")
