"""Everything `osteobmd run` writes into its output folder (names in results.py)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict

import numpy as np
import SimpleITK as sitk

from .config import VERTEBRA_NAMES
from .figures import draw_overview_png, draw_patches_png
from .io import to_input_grid
from .patches import Patch
from .progress import ProgressCallback, silent
from .results import (
    CSV_COLUMNS, LABELS_NRRD, OVERVIEW_PNG, PATCHES_NPZ, PATCHES_PNG, RESULTS_CSV, RESULTS_JSON, SCENE_MRB,
    CaseResult, csv_rows,
)


def write_outputs(
    result: CaseResult, out_dir: Path, ct: sitk.Image, labels: sitk.Image, patches: Dict[str, Patch],
    progress: ProgressCallback = silent, write_scene: bool = False,
) -> None:
    """Every file of a case into `out_dir` (the pipeline's hidden folder, moved into place
    by case_folder.writing once all of them, and then results.json, are written)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress("outputs", 0.0, f"writing {RESULTS_CSV}")
    write_csv(result, out_dir / RESULTS_CSV)
    progress("outputs", 0.1, f"writing {LABELS_NRRD}")
    # On the CT file's own grid: voxel (i, j, k) of the labels is voxel (i, j, k) of the CT the user gave.
    sitk.WriteImage(to_input_grid(labels, ct), str(out_dir / LABELS_NRRD), True)
    progress("outputs", 0.2, f"writing {PATCHES_NPZ}")
    names = [n for n in VERTEBRA_NAMES if n in patches]
    np.savez_compressed(
        out_dir / PATCHES_NPZ,
        names=np.array(names),
        hu=np.stack([patches[n].hu for n in names]) if names else np.zeros((0, 3, 32, 32), np.float32),
        x01=np.stack([patches[n].x01 for n in names]) if names else np.zeros((0, 3, 32, 32), np.float32),
    )
    progress("outputs", 0.3, f"drawing {PATCHES_PNG} and {OVERVIEW_PNG}")
    draw_patches_png(result, patches, out_dir / PATCHES_PNG)
    draw_overview_png(result, ct, labels, patches, out_dir / OVERVIEW_PNG)
    if write_scene:
        progress("outputs", 0.7, f"writing {SCENE_MRB} (the Slicer scene)")
        result.write_json(out_dir / RESULTS_JSON)  # the scene is built from the folder
        write_slicer_scene(out_dir, result, ct)


def write_csv(result: CaseResult, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(result))


def write_slicer_scene(out_dir: Path, result: CaseResult, ct: sitk.Image) -> bool:
    """scene.mrb for drag-and-drop into Slicer, when slicer-core is installed (extra `slicer`)."""
    try:  # osteobmd.scene needs slicer-core; the measurement never does
        from .scene import write_scene_mrb
    except ImportError:
        result.messages.append(f"{SCENE_MRB} not written: install the 'slicer' extra (slicer-core) for it.")
        return False
    try:
        write_scene_mrb(out_dir, ct_image=ct)
    except Exception as err:  # the measurement stands without the convenience scene
        result.messages.append(f"{SCENE_MRB} could not be written ({type(err).__name__}: {err}).")
        return False
    return True
