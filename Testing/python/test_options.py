"""osteobmd.options: one run's choices parsed once, refused early, and written back as argv."""

from pathlib import Path

import pytest

from osteobmd.config import DEFAULT_MEAN_VERTEBRAE
from osteobmd.errors import InputError
from osteobmd.options import RunOptions, parse_vertebrae


def test_defaults_are_the_documented_ones():
    options = RunOptions.parse()
    assert options == RunOptions()
    assert options.mean_vertebrae == DEFAULT_MEAN_VERTEBRAE == ("L1", "L2", "L3")
    assert options.calibration.kind == "none" and options.device == "auto"
    assert not options.write_scene and not options.overwrite  # scene.mrb is opt-in (--scene)
    assert options.mask_path is None and options.weights_dir is None and options.case_id is None


def test_raw_strings_from_a_panel_or_csv_are_parsed(tmp_path):
    mask = tmp_path / "labels.nrrd"
    mask.write_bytes(b"x")
    options = RunOptions.parse(device=" CUDA:1 ", vertebrae="l4, 2", calibration="linear:1.02,-3.5",
                               mask=str(mask), weights=str(tmp_path), write_scene="false", overwrite="1",
                               case_id="case 7")
    assert options.device == "cuda:1"
    assert options.mean_vertebrae == ("L2", "L4")  # anatomical order
    assert (options.calibration.kind, options.calibration.slope, options.calibration.intercept) == \
        ("linear", 1.02, -3.5)
    assert options.mask_path == mask and options.weights_dir == tmp_path
    assert options.write_scene is False and options.overwrite is True and options.case_id == "case 7"
    # "internal" is a request: it is estimated per case, not at parse time.
    assert RunOptions.parse(calibration="internal").calibration.pending


@pytest.mark.parametrize("raw, word", [
    (dict(vertebrae="L1,L7"), "L7"),
    (dict(vertebrae="T12"), "T12"),
    (dict(calibration="linear:1.02"), "linear:SLOPE,INTERCEPT"),
    (dict(calibration="phantom"), "phantom"),
    (dict(device="gpu"), "gpu"),
    (dict(device="cuda:x"), "cuda:x"),
    (dict(mask="/no/such/labels.nrrd"), "does not exist"),
    (dict(weights="/no/such/weights"), "does not exist"),
    (dict(write_scene="maybe"), "maybe"),
])
def test_bad_values_are_refused_with_what_is_wrong(raw, word):
    with pytest.raises(InputError) as err:
        RunOptions.parse(**raw)
    assert word in str(err.value)


@pytest.mark.parametrize("raw", [
    dict(),
    dict(device="cpu", vertebrae="L2,L3,L4", calibration="internal", overwrite=True, case_id="a b"),
    dict(calibration="linear:0.9731,12.125", write_scene=False, device="cuda:0"),
    dict(calibration=" Linear: 1.1 , -10 ", vertebrae=["L1"]),
    dict(write_scene=True),
])
def test_to_argv_round_trips(tmp_path, raw):
    mask = tmp_path / "m.nrrd"
    mask.write_bytes(b"x")
    options = RunOptions.parse(mask=mask, weights=tmp_path, **raw)
    argv = options.to_argv()
    assert RunOptions.from_argv(argv) == options
    assert "--out" not in argv and str(mask) in argv


def test_the_cli_parser_reads_to_argv_the_same_way(tmp_path):
    from osteobmd.cli import build_parser

    options = RunOptions.parse(vertebrae="L3", calibration="internal", write_scene=False, case_id="x")
    args = build_parser().parse_args(["run", "ct.nii.gz", "--out", str(tmp_path), *options.to_argv()])
    assert RunOptions.from_args(args) == options


@pytest.mark.parametrize("flags, write_scene", [
    ([], False),
    (["--scene"], True),
    (["--no-scene"], False),  # what older scripts pass: still accepted, and the default anyway
    (["--scene", "--no-scene"], False),  # the last one given wins
    (["--no-scene", "--scene"], True),
])
def test_the_scene_is_written_only_when_asked(tmp_path, flags, write_scene):
    from osteobmd.cli import build_parser

    for command in (["run", "ct.nii.gz"], ["batch", "cases.csv"]):
        args = build_parser().parse_args([*command, "--out", str(tmp_path), *flags])
        assert RunOptions.from_args(args).write_scene is write_scene, (command, flags)
    assert RunOptions.from_argv(flags).write_scene is write_scene
    assert ("--scene" if write_scene else "--no-scene") in RunOptions.parse(write_scene=write_scene).to_argv()


def test_keyword_changes_keep_the_types(tmp_path):
    options = RunOptions()
    from dataclasses import replace

    changed = replace(options, mask_path=str(tmp_path), mean_vertebrae=["L1"])
    assert changed.mask_path == Path(tmp_path) and changed.mean_vertebrae == ("L1",)
    with pytest.raises(Exception):
        options.device = "cpu"  # frozen


def test_parse_vertebrae_is_the_one_parser():
    assert parse_vertebrae(None) is None and parse_vertebrae(" , ") is None
    assert parse_vertebrae("l1, L2,3") == ["L1", "L2", "L3"]
    assert parse_vertebrae(("L3", "L1", "L3")) == ["L1", "L3"]
    with pytest.raises(InputError):
        parse_vertebrae("L1,L9")
