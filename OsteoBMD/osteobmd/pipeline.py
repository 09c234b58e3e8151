"""One case, end to end: the single code path for the CLI, batch, tests and the Slicer worker.

`run_case` only orders the stages (stages.py) and times them; what each stage does, and
takes and gives, is written there.
"""

from __future__ import annotations

import platform
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Dict, Optional

from . import __version__, stages
from .case_folder import case_name, check_target, writing
from .config import PipelineConfig
from .options import RunOptions
from .outputs import write_outputs
from .progress import ProgressCallback, silent
from .results import RESULTS_JSON, CaseResult
from .weights import load_models, trained_patch_config


class StageTimer:
    """Seconds per stage, for results.json's timings_s."""

    def __init__(self):
        self.timings: Dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)

    def with_total(self) -> Dict[str, float]:
        return {**self.timings, "total": round(sum(self.timings.values()), 3)}


def versions() -> Dict[str, str]:
    import numpy as np
    import SimpleITK as sitk
    import torch

    return {
        "osteobmd": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "SimpleITK": sitk.Version.VersionString(),
        "numpy": np.__version__,
    }


def run_case(ct_path, out_dir, options: Optional[RunOptions] = None, progress: ProgressCallback = silent,
             **changes) -> CaseResult:
    """Measure one CT and write every output into `out_dir`; returns the result.

    `changes` replace fields of `options` (e.g. mask_path=..., write_scene=False). With a
    mask the segmentation is skipped and the given (e.g. hand-corrected) label map is
    measured. An invalid result is still written, with its reasons; the caller decides the
    exit code from `result.valid`. `out_dir` is whole or untouched (case_folder.py): the
    outputs are written beside it and replace it only when all of them are written.
    """
    options = replace(options or RunOptions(), **changes)
    out_dir, config, timer = check_target(out_dir, options.overwrite), PipelineConfig(), StageTimer()
    with timer.stage("load_models"):
        models = load_models(options.weights_dir, options.device, segmentation=options.mask_path is None)
    with timer.stage("read"):
        case = stages.read(ct_path, options.mask_path, progress)
    if case.user_labels is None:
        with timer.stage("canal"):
            canal = stages.find_spine(case.ct, config.canal, progress)
        with timer.stage("segmentation"):
            segmentation = stages.segment(case.ct, canal, models, config.segmentation, progress)
            labelling = stages.name_levels(case.ct, canal, segmentation)
    else:
        labelling = stages.user_labelling(case.user_labels)
    with timer.stage("calibration"):
        calibration = stages.calibrate(case.ct, options.calibration, labelling.spine_center_lps_mm)
    # The patch geometry and window the regression weights were trained with win.
    patch_cfg, window = trained_patch_config(models.regression_meta, config.patches, config.segmentation)
    with timer.stage("patches"):
        measured = stages.cut_patches(case.ct, labelling.labels, calibration, patch_cfg, window, progress)
    with timer.stage("regression"):
        bmd = stages.regress(models, measured, progress)
    result = stages.verdicts_and_mean(options.case_id or case_name(ct_path), measured, bmd, labelling,
                                      calibration, options.mean_vertebrae)
    result.versions, result.timings_s = versions(), timer.timings
    with writing(out_dir) as scratch:
        with timer.stage("outputs"):
            write_outputs(result, scratch, case.ct, labelling.labels, measured.patches, progress, options.write_scene)
        result.timings_s = timer.with_total()
        result.write_json(scratch / RESULTS_JSON)  # last: the folder is whole
    progress("outputs", 1.0, "done")
    return result
