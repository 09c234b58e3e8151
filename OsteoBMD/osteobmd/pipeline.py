"""One case, end to end: the single code path for the CLI, batch, tests and the Slicer worker."""

from __future__ import annotations

import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import SimpleITK as sitk

from . import __version__
from . import io as ctio
from .calibration import parse_calibration, resolve_calibration
from .canal import detect_canal
from .config import LABEL_OF, VERTEBRA_NAMES, PipelineConfig, classify_bmd
from .errors import InputError, OutputExistsError
from .levels import LevelCheck
from .patches import extract_patch, vertebra_geometry
from .progress import ProgressCallback, silent
from .results import RESULTS_JSON, CaseResult, VertebraResult
from .sagittal import window01
from .validity import bmd_reasons, geometry_reasons


class _Timer:
    def __init__(self):
        self.timings: Dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)


def versions() -> Dict[str, str]:
    import torch

    return {
        "osteobmd": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "SimpleITK": sitk.Version.VersionString(),
        "numpy": np.__version__,
    }


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    if (out_dir / RESULTS_JSON).exists() and not overwrite:
        raise OutputExistsError(
            f"'{out_dir}' already holds results; nothing was changed. Choose another --out folder, "
            "or add --overwrite to replace them."
        )


def run_case(
    ct_path,
    out_dir,
    mask_path=None,
    config: Optional[PipelineConfig] = None,
    progress: ProgressCallback = silent,
    weights_dir=None,
    overwrite: bool = False,
    case_id: Optional[str] = None,
    calibration: str = "none",
    write_scene: bool = True,
) -> CaseResult:
    """Measure one CT and write every output into `out_dir`; returns the result.

    With `mask_path` the segmentation is skipped and the given (e.g. hand-corrected)
    label map is measured. An invalid result is still written (with its reasons);
    the caller decides the exit code from `result.valid`.
    """
    from . import weights
    from .weights import trained_patch_config
    from .outputs import write_outputs
    from .regression import predict_bmd
    from .segmentation import segment_lumbar

    config = config or PipelineConfig()
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    if overwrite:
        # The old result goes first: a run that fails half-way must not leave it beside new files.
        (out_dir / RESULTS_JSON).unlink(missing_ok=True)
    timer = _Timer()
    messages = []

    with timer.stage("read"):
        progress("read", 0.0, "reading the CT")
        ct = ctio.read_ct(ct_path)
        user_labels = ctio.read_labelmap(mask_path, ct) if mask_path else None
        progress("read", 1.0, "CT read")
    with timer.stage("load_models"):
        device = weights.resolve_device(config.device)
        # Both models load before any long step, so missing weights fail at once.
        seg_model = seg_meta = None
        if user_labels is None:
            seg_model, seg_meta = weights.load_segmentation_model(weights_dir, device)
        reg_model, reg_meta = weights.load_regression_model(weights_dir, device)

    if user_labels is None:
        with timer.stage("canal"):
            canal = detect_canal(ct, config.canal, progress)
        with timer.stage("segmentation"):
            segmentation = segment_lumbar(ct, canal, seg_model, seg_meta, config.segmentation, device, progress)
        labels, level_check = segmentation.labels, segmentation.level_check
        if not sitk.GetArrayViewFromImage(labels).any():
            raise InputError(
                "No lumbar vertebra (L1-L4) was found in this scan. OsteoBMD needs a CT that shows "
                "the lumbar spine; this one may show another part of the body."
            )
        spine_center = canal.spine_center_lps_mm
    else:
        labels = user_labels
        if not sitk.GetArrayViewFromImage(labels).any():
            raise InputError("The label map is empty: label L1-L4 (values 1-4) before measuring.")
        spine_center = None
        level_check = LevelCheck("user", None, ["Levels as named in the user's label map."])
        messages.append("Measured from a user-given label map (segmentation skipped).")

    with timer.stage("calibration"):
        cal = resolve_calibration(parse_calibration(calibration), ct, spine_center)
        if cal.kind != "none":
            messages.append(f"HU calibration: {cal.kind} (slope {cal.slope:.3f}, intercept {cal.intercept:.1f} HU).")
        elif calibration not in (None, "none"):
            messages.append(f"HU calibration '{calibration}' could not be made ({cal.note}); raw HU used.")

    # The patch geometry and window the regression weights were trained with win.
    patch_cfg, window = trained_patch_config(reg_meta, config.patches, config.segmentation)
    with timer.stage("patches"):
        progress("patches", 0.0, "cutting trabecular patches")
        geometry = vertebra_geometry(labels)
        reasons = geometry_reasons(geometry)
        patches = {}
        for n, name in enumerate(VERTEBRA_NAMES):
            if name in geometry:
                patch = extract_patch(ct, geometry[name].center_lps_mm, patch_cfg, labels, LABEL_OF[name], window)
                if cal.kind != "none":
                    patch.x01 = np.round(window01(cal.apply(patch.hu), window) * 255.0) / 255.0
                reasons[name].extend(patch.reasons)
                patches[name] = patch
            progress("patches", (n + 1) / len(VERTEBRA_NAMES), name)

    with timer.stage("regression"):
        names = list(patches)
        bmd = predict_bmd(reg_model, np.stack([patches[n].x01 for n in names]) if names else np.zeros((0,)), device)
        bmd_of = {n: float(b) for n, b in zip(names, bmd)}
        progress("regression", 1.0, "BMD regressed")

    vertebrae = []
    for name in VERTEBRA_NAMES:
        g = geometry.get(name)
        if name in bmd_of:
            reasons[name].extend(bmd_reasons(bmd_of[name]))
        vertebrae.append(VertebraResult(
            name=name,
            bmd_mg_cm3=round(bmd_of[name], 2) if name in bmd_of else None,
            center_lps_mm=[round(float(v), 2) for v in g.center_lps_mm] if g else None,
            patch=patches[name].info if name in patches else None,
            valid=not reasons[name],
            reasons=reasons[name],
            sagittal_area_mm2=round(g.sagittal_area_mm2, 1) if g else None,
            height_mm=round(g.height_mm, 1) if g else None,
            from_corrected_mask=user_labels is not None,
        ))

    chosen = [v for v in vertebrae if v.name in config.mean_vertebrae]
    used = [v for v in chosen if v.valid and v.bmd_mg_cm3 is not None]
    skipped = [v.name for v in chosen if v not in used]
    mean = round(float(np.mean([v.bmd_mg_cm3 for v in used])), 2) if used else None
    if skipped and used:
        messages.append(
            f"Mean over {', '.join(v.name for v in used)} only: {', '.join(skipped)} skipped (see reasons)."
        )
    if not used:
        messages.append(
            "No valid measurement: none of " + ", ".join(config.mean_vertebrae) + " passed the checks (see reasons)."
        )
    messages.extend(level_check.messages)

    result = CaseResult(
        case=case_id or ctio.case_id_from_path(ct_path),
        vertebrae=vertebrae,
        mean_bmd_mg_cm3=mean,
        mean_vertebrae=list(config.mean_vertebrae),
        classification=classify_bmd(mean) if mean is not None else None,
        valid=mean is not None,
        messages=messages,
        timings_s=timer.timings,
        versions=versions(),
        level_anchor=level_check.anchor,
        levels_consistent=level_check.consistent,
        mask_source="network" if user_labels is None else "user",
        calibration=cal.to_dict() if cal.requested != "none" else None,
    )
    with timer.stage("outputs"):
        write_outputs(result, out_dir, ct, labels, patches, progress, write_scene=write_scene)
    result.timings_s = timer.timings
    result.timings_s["total"] = round(sum(v for k, v in timer.timings.items()), 3)
    result.write_json(out_dir / RESULTS_JSON)
    progress("outputs", 1.0, "done")
    return result
