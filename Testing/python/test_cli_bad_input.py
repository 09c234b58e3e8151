"""The command line on bad input: one clear line, the right exit code, never a traceback."""

import json
import subprocess
import sys

import pytest
import SimpleITK as sitk

from osteobmd.cli import SAMPLE_CT
from toy_ct import make_toy_ct


def osteobmd(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "osteobmd", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_missing_path_exits_2_with_one_line(tmp_path):
    proc = osteobmd("run", tmp_path / "missing.nii.gz", "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert len([l for l in proc.stderr.splitlines() if l.startswith("osteobmd:")]) == 1


def test_not_an_image_exits_2(tmp_path):
    p = tmp_path / "report.nrrd"
    p.write_text("NRRD0004\ngarbage")
    proc = osteobmd("run", p, "--out", tmp_path / "out")
    assert proc.returncode == 2 and "could not be read as an image" in proc.stderr


def test_2d_image_exits_2(tmp_path):
    p = tmp_path / "xray.nrrd"
    sitk.WriteImage(sitk.Image(128, 128, sitk.sitkInt16), str(p))
    proc = osteobmd("run", p, "--out", tmp_path / "out")
    assert proc.returncode == 2 and "2D image" in proc.stderr


def test_not_ct_exits_2(tmp_path):
    ct, _ = make_toy_ct((3.0, 3.0, 3.0))
    sitk.WriteImage(sitk.RescaleIntensity(ct, 0, 255), str(tmp_path / "mr.nii.gz"))
    proc = osteobmd("run", tmp_path / "mr.nii.gz", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "Hounsfield" in proc.stderr


def test_no_trained_weights_is_said_plainly(tmp_path):
    empty = tmp_path / "weights"
    empty.mkdir()
    proc = osteobmd("run", SAMPLE_CT, "--out", tmp_path / "out", "--weights", empty)
    assert proc.returncode == 2
    assert "trained" in proc.stderr.lower()
    assert not (tmp_path / "out" / "results.json").exists()  # no numbers from random weights


def test_unknown_vertebra_name_exits_2(tmp_path):
    proc = osteobmd("run", SAMPLE_CT, "--out", tmp_path / "out", "--vertebrae", "L1,L7")
    assert proc.returncode == 2 and "L7" in proc.stderr


def test_existing_results_are_never_overwritten_without_asking(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"keep": "me"}))
    proc = osteobmd("run", SAMPLE_CT, "--out", out)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert json.loads((out / "results.json").read_text(encoding="utf-8")) == {"keep": "me"}


def test_mask_on_another_grid_exits_2(tmp_path):
    ct, labels = make_toy_ct((3.0, 3.0, 3.0))
    sitk.WriteImage(labels, str(tmp_path / "labels.nrrd"))
    proc = osteobmd("run", SAMPLE_CT, "--out", tmp_path / "out", "--mask", tmp_path / "labels.nrrd")
    assert proc.returncode == 2 and "grid" in proc.stderr


def test_help_lists_the_commands():
    proc = osteobmd("--help")
    assert proc.returncode == 0
    for command in ("run", "batch", "demo"):
        assert command in proc.stdout


@pytest.mark.parametrize("option, word", [
    (("--calibration", "linear:5,0"), "slope"),
    (("--device", "gpu"), "gpu"),
    (("--vertebrae", "L0"), "L0"),
    (("--mask", "/no/such/mask.nrrd"), "mask"),
])
def test_bad_options_fail_before_the_ct_is_read(tmp_path, option, word):
    # The CT does not exist either: the option's message comes first, so it was checked first.
    proc = osteobmd("run", tmp_path / "missing.nii.gz", "--out", tmp_path / "out", *option)
    assert proc.returncode == 2 and word in proc.stderr and "missing.nii.gz" not in proc.stderr


def test_version():
    from osteobmd import __version__

    proc = osteobmd("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"osteobmd {__version__}"



def _undocumented(parser) -> list:
    """Arguments without help in `parser` and every sub-command below it."""
    import argparse

    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                missing += [f"{name} {m}" for m in _undocumented(child)]
        elif not action.help:
            missing.append(str(action.option_strings or action.dest))
    return missing


@pytest.mark.parametrize("command", ["run", "batch", "demo", "train", "evaluate", "synth"])
def test_every_argument_has_help(command):
    import argparse

    from osteobmd.cli import build_parser

    sub = next(a for a in build_parser(chosen=command)._actions if isinstance(a, argparse._SubParsersAction))
    assert _undocumented(sub.choices[command]) == []


@pytest.mark.parametrize("args", [("--help",), ("run", "--help"), ("batch", "--help")])
def test_help_documents_every_exit_code(args):
    proc = osteobmd(*args)
    assert proc.returncode == 0
    epilog = proc.stdout.split("exit codes:")[1]
    for code, word in [(0, "done"), (1, "internal error"), (2, "bad input"), (3, "no valid"), (130, "cancelled")]:
        assert f"  {code} " in epilog and word in epilog


def test_out_that_is_a_file_exits_2(tmp_path, capsys):
    from osteobmd.cli import main

    existing = tmp_path / "results.txt"
    existing.write_text("someone's notes")
    assert main(["run", str(SAMPLE_CT), "--out", str(existing), "--progress", "none"]) == 2
    assert main(["batch", str(tmp_path), "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert err.count("is a file") == 2 and "internal error" not in err
    assert existing.read_text(encoding="utf-8") == "someone's notes"


def test_empty_folder_speaks_in_the_tools_words_only(tmp_path, capfd):
    from osteobmd.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["run", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--progress", "none"]) == 2
    err = capfd.readouterr().err
    assert "no DICOM series" in err and "WARNING" not in err and "itk" not in err.lower()
    assert not (tmp_path / "out").exists()


def test_out_that_is_the_current_folder_exits_2(tmp_path, monkeypatch, capsys):
    """A run replaces its folder as a whole: never the one the user stands in."""
    from osteobmd.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", str(SAMPLE_CT), "--out", ".", "--progress", "none"]) == 2
    assert "current folder" in capsys.readouterr().err and tmp_path.is_dir()


@pytest.mark.parametrize("command", ["train", "evaluate", "synth"])
def test_a_sub_command_has_one_help_line_loaded_or_not(command):
    # `osteobmd --help` lists train/evaluate/synth without importing them; the line must be
    # the one their own package gives when they are loaded.
    import argparse

    from osteobmd.cli import build_parser

    def help_of(parser):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return next(a.help for a in sub._choices_actions if a.dest == command)

    assert help_of(build_parser()) == help_of(build_parser(chosen=command))
