"""The wheel works on its own, away from the checkout.

Built the way `python -m build` does it (the sdist first, then the wheel from the unpacked
sdist, so the sdist is shown to carry the weights and the sample too), installed into a fresh venv, and run from a
folder outside the checkout: `osteobmd --version` and `osteobmd demo --synthetic` with the
weights the wheel carries.

Offline: the build uses this environment's setuptools (no build isolation) and the install
takes only the wheel (--no-index --no-deps). The dependencies (torch, MONAI, ...) come from
this environment's site-packages through a path line in a .pth file: a folder added that way
does not have its own .pth files run, so the checkout's editable install of osteobmd (a .pth
there) stays invisible. Slow (about a minute); CI runs it (`make test` runs every test).
The other places data_files knows (the checkout, an installed Slicer extension) are checked
here too, quickly.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = "osteobmd/shipped/"


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel path, the build's output) built from the checkout, offline."""
    out = tmp_path_factory.mktemp("build")
    sdist = _run([sys.executable, "-c",
                  "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))",
                  out / "sdist"], cwd=REPO)
    assert sdist.returncode == 0, sdist.stderr[-3000:]
    (sdist_path,) = (out / "sdist").glob("osteobmd-*.tar.gz")
    wheel = _run([sys.executable, "-m", "pip", "wheel", sdist_path, "--no-deps", "--no-build-isolation",
                  "--no-index", "--verbose", "-w", out / "wheel"])
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    (wheel_path,) = (out / "wheel").glob("osteobmd-*.whl")
    return wheel_path, sdist.stdout + sdist.stderr + wheel.stdout + wheel.stderr


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory):
    """A fresh venv holding the wheel, with this environment's packages as its dependencies."""
    wheel_path, _ = built
    root = tmp_path_factory.mktemp("venv")
    made = _run([sys.executable, "-m", "venv", "--without-pip", root])
    assert made.returncode == 0, made.stderr
    python = root / "bin" / "python"
    # Without PYTHONPATH: a checkout on it would look like an installed osteobmd and pip would skip the wheel.
    installed = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--no-deps",
                      wheel_path], env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert installed.returncode == 0, installed.stderr[-3000:]
    # Added after the install, so pip saw an empty environment.
    own_site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(own_site) / "test_dependencies.pth").write_text("".join(p + "\n" for p in ours))
    return root


@pytest.fixture()
def outside(tmp_path):
    """A working folder and environment with no checkout in sight."""
    assert REPO not in tmp_path.parents
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "OSTEOBMD_WEIGHTS_DIR")}
    env["PYTHONNOUSERSITE"] = "1"
    return dict(cwd=tmp_path, env=env)


@pytest.mark.slow
def test_wheel_holds_the_package_its_weights_sample_and_licences(built):
    wheel_path, _ = built
    with zipfile.ZipFile(wheel_path) as wheel:
        sizes = {info.filename: info.file_size for info in wheel.infolist()}
    weights = REPO / "model_weights"
    expected = sorted(weights.glob("*.safetensors")) + sorted(weights.glob("*.json")) + [weights / "MODEL_CARD.md"]
    expected += [REPO / "samples" / name for name in ("ct.nii.gz", "README.md", "LICENSE-TotalSegmentator-Apache-2.0.txt")]
    for path in expected:
        packed = SHIPPED + path.relative_to(REPO).as_posix()
        assert sizes.get(packed) == path.stat().st_size, f"{packed} missing or not a copy of {path}"
    assert "osteobmd/cli.py" in sizes and "osteobmd/data_files.py" in sizes
    assert not [n for n in sizes if n.startswith("OsteoBMDLib/")], "the Slicer module's OsteoBMDLib is not the wheel's"
    licences = {n.split("/licenses/", 1)[1] for n in sizes if ".dist-info/licenses/" in n}
    assert {"LICENSE", "NOTICE", "samples/LICENSE-TotalSegmentator-Apache-2.0.txt"} <= licences


@pytest.mark.slow
def test_build_emits_no_warnings_of_its_own(built):
    _, log = built
    assert not re.findall(r".*(?:Deprecat|\w+Warning\b).*", log)


@pytest.mark.slow
def test_installed_package_is_the_wheel_not_the_checkout(venv, outside):
    probe = ("import importlib.util, json, osteobmd\n"
             "from osteobmd import data_files\n"
             "from osteobmd.io import read_ct\n"
             "ct = read_ct(data_files.sample_ct())\n"
             "print(json.dumps({'package': osteobmd.__file__, 'weights': str(data_files.weights_dir()),\n"
             "    'sample': str(data_files.sample_ct()), 'ct_size': list(ct.GetSize()),\n"
             "    'slicer_module_visible': importlib.util.find_spec('OsteoBMDLib') is not None}))\n")
    result = _run([venv / "bin" / "python", "-c", probe], **outside)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    venv_dir = venv.resolve()
    for key in ("package", "weights", "sample"):
        assert venv_dir in Path(found[key]).resolve().parents, f"{key} comes from {found[key]}, not the venv"
    assert found["ct_size"] == [122, 101, 112]  # samples/README.md
    assert not found["slicer_module_visible"]


@pytest.mark.slow
def test_version_answers(built, venv, outside):
    result = _run([venv / "bin" / "osteobmd", "--version"], **outside)
    assert result.returncode == 0, result.stderr[-3000:]
    version = built[0].name.split("-")[1]
    assert version in result.stdout + result.stderr


@pytest.mark.slow
def test_synthetic_demo_runs_from_the_wheel(built, venv, outside):
    out = outside["cwd"] / "demo"
    result = _run([venv / "bin" / "osteobmd", "demo", "--synthetic", "--out", out], **outside)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert found["versions"]["osteobmd"] == built[0].name.split("-")[1]
    assert [v["name"] for v in found["vertebrae"]] == ["L1", "L2", "L3", "L4"]
    # Every level has its number or the reasons it has none (seed 0 is a view with no anchor in it).
    assert all(v["bmd_mg_cm3"] is not None or v["reasons"] for v in found["vertebrae"])
    # The scene too: the package builds it without the Slicer module's OsteoBMDLib.
    assert (out / "scene.mrb").stat().st_size > 0, found["messages"]


def test_a_checkout_uses_its_top_level_folders():
    from osteobmd import data_files

    assert data_files.weights_dir() == REPO / "model_weights"
    assert data_files.sample_ct() == REPO / "samples" / "ct.nii.gz"


def test_an_installed_slicer_extension_uses_its_resources(tmp_path):
    # The layout OsteoBMD/CMakeLists.txt installs: qt-scripted-modules/{osteobmd, Resources}.
    modules = tmp_path / "qt-scripted-modules"
    (modules / "osteobmd").mkdir(parents=True)
    (modules / "osteobmd" / "__init__.py").write_text("")
    shutil.copy(REPO / "OsteoBMD" / "osteobmd" / "data_files.py", modules / "osteobmd")
    (modules / "Resources" / "model_weights").mkdir(parents=True)
    (modules / "Resources" / "Samples").mkdir()
    shutil.copy(REPO / "samples" / "ct.nii.gz", modules / "Resources" / "Samples")
    probe = "from osteobmd import data_files as d; print(d.weights_dir()); print(d.sample_ct())"
    result = _run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(modules)!r}); {probe}"],
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(modules / "Resources" / "model_weights"),
                                     str(modules / "Resources" / "Samples" / "ct.nii.gz")]
