"""The BMD table node: one row per vertebra, then a row for the mean and one for how the levels were named."""

from typing import Dict, List, Optional, Sequence, Tuple

import vtk

from osteobmd.config import classify_bmd
from osteobmd.results import CaseResult, level_naming_summary, notes_besides_naming

from .conventions import ATTR_CLASS, ATTR_MASK_SOURCE, ATTR_MEAN, ATTR_ROLE, lps_to_ras

# Table columns: (name, kind). Titles shown in the GUI can be translated by the caller.
TABLE_COLUMNS: Tuple[Tuple[str, str], ...] = (
    ("Vertebra", "string"),
    ("BMD", "double"),
    ("Class", "string"),
    ("Valid", "string"),
    ("Reasons", "string"),
    ("Patch centre", "string"),
    ("Corrected mask", "string"),
)
BMD_UNIT = "mg/cm3"


def _fmt_point(p: Optional[Sequence[float]]) -> str:
    if not p:
        return ""
    return ", ".join(f"{v:.1f}" for v in p)


def bmd_rows(result: CaseResult) -> List[dict]:
    """The table's rows as dicts (one per vertebra, then the mean)."""
    rows = []
    for v in result.vertebrae:
        center = v.patch.center_lps_mm if v.patch else v.center_lps_mm
        rows.append({
            "Vertebra": v.name,
            "BMD": float("nan") if v.bmd_mg_cm3 is None else float(v.bmd_mg_cm3),
            "Class": classify_bmd(v.bmd_mg_cm3) if v.bmd_mg_cm3 is not None else "",
            "Valid": "yes" if v.valid else "no",
            "Reasons": "; ".join(v.reasons),
            "Patch centre": _fmt_point(lps_to_ras(center)) if center else "",
            "Corrected mask": "yes" if v.from_corrected_mask else "no",
        })
    mean = result.mean_bmd_mg_cm3
    rows.append({
        "Vertebra": "Mean (" + ", ".join(result.mean_vertebrae) + ")",
        "BMD": float("nan") if mean is None else float(mean),
        "Class": result.classification or "",
        "Valid": "yes" if result.valid else "no",
        "Reasons": "; ".join(notes_besides_naming(result)),  # the naming's own: the row below
        "Patch centre": "",
        "Corrected mask": "yes" if result.mask_source == "user" else "no",
    })
    how, trusted, notes = level_naming_summary(result)
    rows.append({
        "Vertebra": "Level names",
        "BMD": float("nan"),
        "Class": how,
        "Valid": "yes" if trusted else "no",
        "Reasons": notes,
        "Patch centre": "",
        "Corrected mask": "yes" if result.mask_source == "user" else "no",
    })
    return rows


def make_bmd_table(scene, result: CaseResult, table_node=None, name: str = "BMD", titles: Optional[Dict[str, str]] = None):
    """Fill (or create) the BMD table node from a CaseResult."""
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    was_modifying = table_node.StartModify()
    table_node.RemoveAllColumns()
    rows = bmd_rows(result)
    table = table_node.GetTable()
    for col_name, kind in TABLE_COLUMNS:
        array = vtk.vtkDoubleArray() if kind == "double" else vtk.vtkStringArray()
        array.SetName(col_name)
        for row in rows:
            if kind == "double":
                array.InsertNextValue(row[col_name])
            else:
                array.InsertNextValue(str(row[col_name]))
        table.AddColumn(array)
    if hasattr(table_node, "SetUseColumnTitleAsColumnHeader"):
        table_node.SetUseColumnTitleAsColumnHeader(True)
    else:  # Slicer before 5.9
        table_node.SetUseColumnNameAsColumnHeader(True)
    table_node.SetColumnUnitLabel("BMD", BMD_UNIT)
    table_node.SetColumnDescription("BMD", "Trabecular bone mineral density (QCT-equivalent)")
    table_node.SetColumnDescription("Patch centre", "Centre of the trabecular patch, RAS millimetres")
    table_node.SetColumnDescription("Corrected mask", "Measured on a mask the reader corrected")
    for col_name, title in (titles or {}).items():
        table_node.SetColumnTitle(col_name, title)
    table_node.SetAttribute(ATTR_ROLE, "table")
    table_node.SetAttribute(ATTR_MEAN, "" if result.mean_bmd_mg_cm3 is None else f"{result.mean_bmd_mg_cm3:.3f}")
    table_node.SetAttribute(ATTR_CLASS, result.classification or "")
    table_node.SetAttribute(ATTR_MASK_SOURCE, result.mask_source)
    table_node.Modified()
    table_node.EndModify(was_modifying)
    return table_node

