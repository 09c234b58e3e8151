"""Shared fixtures. Keep small: fixtures used by one test file live in that file."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "OsteoBMD"  # holds the pipeline package `osteobmd` and `OsteoBMDLib`
SAMPLE_CT = REPO / "samples" / "ct.nii.gz"

for _path in (MODULE_DIR, Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@pytest.fixture(scope="session")
def pipeline_output(tmp_path_factory):
    """A REAL pipeline output folder: `run_case` on the bundled sample CT with the shipped
    weights (model_weights/). Returns (output folder, CaseResult)."""
    from osteobmd.pipeline import run_case

    out_dir = tmp_path_factory.mktemp("sample_output")
    # Tests write scene.mrb themselves.
    result = run_case(SAMPLE_CT, out_dir, overwrite=True, write_scene=False)
    return out_dir, result
