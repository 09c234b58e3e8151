"""Save a reviewed case as ground truth in the folder format ``osteobmd train`` reads.

    DATA/<case_id>/ct.nrrd       the CT (HU) as shown in Slicer
    DATA/<case_id>/labels.nrrd   uint8 label map in the CT's grid, 1..4 = L1..L4 (by segment name)
    DATA/<case_id>/bmd.csv       vertebra,bmd_mg_cm3
    DATA/<case_id>/case.json     {"source", "corrected", "bmd_source", ...}

An earlier save is never replaced unless the caller passes ``overwrite=True`` (the panel
asks the reader first). Files are written to a scratch folder beside the case folder and
moved into place at the end, so a failed save leaves the earlier one intact.
"""

import csv
import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional

from osteobmd import __version__ as OSTEOBMD_VERSION
from osteobmd.config import VERTEBRA_NAMES
from osteobmd.results import CaseResult

from . import masks
from .case_list import safe_case_id

CT_FILE = "ct.nrrd"
LABELS_FILE = "labels.nrrd"
BMD_FILE = "bmd.csv"
CASE_FILE = "case.json"
BMD_COLUMNS = ("vertebra", "bmd_mg_cm3")


class GroundTruthExistsError(FileExistsError):
    """A ground-truth folder for this case exists already; pass overwrite=True to replace it."""


def case_dir(data_dir, case_id: str) -> Path:
    return Path(data_dir) / safe_case_id(case_id)


def ground_truth_exists(data_dir, case_id: str) -> bool:
    folder = case_dir(data_dir, case_id)
    return folder.is_dir() and any(folder.iterdir())


def _bmd_values(result: Optional[CaseResult], reference_bmd: Optional[Dict[str, float]]) -> Dict[str, float]:
    if reference_bmd:
        return {k: float(v) for k, v in reference_bmd.items() if k in VERTEBRA_NAMES and v is not None}
    if result is None:
        return {}
    return {v.name: float(v.bmd_mg_cm3) for v in result.vertebrae if v.bmd_mg_cm3 is not None}


def save_ground_truth(scene, data_dir, case_id: str, ct_node, segmentation_node,
                      result: Optional[CaseResult] = None, reference_bmd: Optional[Dict[str, float]] = None,
                      corrected: Optional[bool] = None, overwrite: bool = False,
                      extra: Optional[dict] = None) -> Path:
    """Write ct.nrrd, labels.nrrd, bmd.csv and case.json to DATA/<case_id>/.

    ``reference_bmd``: reference values (e.g. QCT) by vertebra; without them the BMDs of
    ``result`` are written and case.json says ``"bmd_source": "osteobmd"`` so training can
    tell measured-by-the-tool values from reference ones.
    """
    data_dir = Path(data_dir)
    target = case_dir(data_dir, case_id)
    if ground_truth_exists(data_dir, case_id) and not overwrite:
        raise GroundTruthExistsError(
            f"Ground truth for case '{target.name}' was saved before in '{target}'. "
            "Confirm to replace it, or choose another case id."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=str(data_dir)))
    try:
        masks.write_volume(scene, ct_node, str(scratch / CT_FILE))
        masks.export_mask_file(scene, segmentation_node, ct_node, str(scratch / LABELS_FILE))
        values = _bmd_values(result, reference_bmd)
        with open(scratch / BMD_FILE, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(BMD_COLUMNS)
            for name in VERTEBRA_NAMES:
                if name in values:
                    writer.writerow([name, f"{values[name]:.2f}"])
        if corrected is None:
            corrected = bool(result is not None and result.mask_source == "user")
        info = {
            "case_id": target.name,
            "source": "OsteoBMD Slicer panel",
            "corrected": bool(corrected),
            "bmd_source": "reference" if reference_bmd else ("osteobmd" if values else "none"),
            "mask_source": result.mask_source if result is not None else "unknown",
            "vertebrae_in_labels": sorted(masks.vertebra_segments(segmentation_node)),
            "mean_bmd_mg_cm3": result.mean_bmd_mg_cm3 if result is not None else None,
            "classification": result.classification if result is not None else None,
            "osteobmd_version": OSTEOBMD_VERSION,
            "saved_at": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        info.update(extra or {})
        (scratch / CASE_FILE).write_text(json.dumps(info, indent=2) + "\n")

        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=str(data_dir)))
            os.rmdir(old)
            os.replace(target, old)
        os.replace(scratch, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target


def read_bmd_csv(path) -> Dict[str, float]:
    with open(path, newline="") as f:
        return {row["vertebra"]: float(row["bmd_mg_cm3"]) for row in csv.DictReader(f) if row.get("bmd_mg_cm3")}


def read_ground_truth(folder) -> dict:
    """Paths and contents of a saved case: {'ct', 'labels', 'bmd', 'case'}."""
    folder = Path(folder)
    return {
        "ct": folder / CT_FILE,
        "labels": folder / LABELS_FILE,
        "bmd": read_bmd_csv(folder / BMD_FILE) if (folder / BMD_FILE).exists() else {},
        "case": json.loads((folder / CASE_FILE).read_text()) if (folder / CASE_FILE).exists() else {},
    }
