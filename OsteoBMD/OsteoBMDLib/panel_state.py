"""What the panel shows and allows, decided without Qt from the session's state.

Each ``*_view`` function returns the values of the panel's widgets as
``{widget name in the .ui: {Qt property: value}}``; the module (OsteoBMD.py) only copies
them into its widgets. So every decision the panel makes is tested outside Slicer, and the
static test checks that every widget named here exists in the .ui file.
"""

import enum
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from osteobmd.config import CLASS_COLORS, VERTEBRA_NAMES
from osteobmd.results import PATCHES_PNG

from . import texts

WidgetValues = Dict[str, Dict[str, object]]



class Device(enum.Enum):
    """Where the networks run (the parameter node's choice)."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self) -> str:  # the combo box's text
        return texts.device_label(self.value)


class CalibrationChoice(enum.Enum):
    """The HU calibration (the parameter node's choice); LINEAR takes a slope and an intercept."""

    NONE = "none"
    INTERNAL = "internal"
    LINEAR = "linear"

    def label(self) -> str:
        return texts.calibration_label(self.value)


def ticked_vertebrae(ticked: Sequence[bool]) -> List[str]:
    """The vertebrae whose box is ticked, from the L1..L4 check boxes in order."""
    return [name for name, on in zip(VERTEBRA_NAMES, ticked) if on]


def calibration_spec(choice: CalibrationChoice, slope: float, intercept: float) -> str:
    """The calibration choice as `--calibration` takes it; slope and intercept count for linear only."""
    if choice is CalibrationChoice.LINEAR:
        return f"linear:{float(slope)!r},{float(intercept)!r}"
    return choice.value


def run_options(session, parameters):
    """The panel's parameters (the module's OsteoBMDParameterNode: inputVolume, device, meanL1..L4,
    calibration, calibrationSlope, calibrationIntercept) as the run's osteobmd.options.RunOptions,
    whose to_argv() is the worker's command line: a bad value fails here, before any run starts."""
    p = parameters
    return session.run_options(
        session.current_case_id(p.inputVolume), device=p.device.value,
        vertebrae=ticked_vertebrae((p.meanL1, p.meanL2, p.meanL3, p.meanL4)),
        calibration=calibration_spec(p.calibration, p.calibrationSlope, p.calibrationIntercept))


def controls_view(session, parameters=None) -> WidgetValues:
    """Which controls the reader can use now (``parameters``: the parameter node, None when there
    is none): Apply turns into Cancel while a run is going, the result's actions wait for a
    result, the case buttons for a case list, slope and intercept for the linear calibration."""
    has_input = bool(parameters is not None and parameters.inputVolume)
    calibration = parameters.calibration if parameters is not None else CalibrationChoice.NONE
    running = session.running
    results = session.result_nodes is not None and not running
    cases = session.case_list if not running else None
    linear = calibration is CalibrationChoice.LINEAR
    return {
        "applyButton": dict(texts.apply_button(running, has_input), enabled=running or has_input),
        "editMasksButton": {"enabled": results},
        "recomputeButton": {"enabled": results},
        "saveGroundTruthButton": {"enabled": results},
        "previousCaseButton": {"enabled": bool(cases and cases.has_previous)},
        "nextCaseButton": {"enabled": bool(cases and cases.has_next)},
        "caseComboBox": {"enabled": cases is not None},
        "calibrationSlopeSpinBox": {"enabled": linear},
        "calibrationInterceptSpinBox": {"enabled": linear},
    }


def progress_view(update) -> WidgetValues:
    """A session.RunUpdate on the progress bar and the status line (the outcome once it ended)."""
    view: WidgetValues = {"progressBar": {"value": update.percent, "visible": update.outcome is None}}
    if update.stage:
        view["progressBar"]["format"] = f"%p%  {update.stage}"
    status = texts.outcome_text(update.outcome) if update.outcome else update.message
    if status:
        view["statusLabel"] = {"text": status}
    return view


def run_started_view() -> WidgetValues:
    return {"progressBar": {"value": 0, "visible": True}, "statusLabel": {"text": texts.starting()}}


@dataclass(frozen=True)
class ResultSummary:
    """The headline of a measured case."""

    mean_bmd: Optional[float]  # None: no valid measurement
    classification: str  # "" when there is no mean
    color: str  # the class's colour (config.CLASS_COLORS)
    reasons: str  # one line per refused vertebra, then the case's messages
    patches_png: Optional[str]  # the picture of the patches, when the run drew it


def result_summary(nodes) -> ResultSummary:
    """From the ResultNodes (osteobmd.scene.output_folder) of the case shown."""
    result = nodes.result
    lines = [f"{v.name}: {'; '.join(v.reasons)}" for v in result.vertebrae if v.reasons] + list(result.messages)
    picture = os.path.join(nodes.output_dir, PATCHES_PNG)
    has_mean = result.mean_bmd_mg_cm3 is not None
    return ResultSummary(
        mean_bmd=result.mean_bmd_mg_cm3,
        classification=(result.classification or "") if has_mean else "",
        color=CLASS_COLORS.get(result.classification if has_mean else None, CLASS_COLORS[None]),
        reasons="\n".join(lines),
        patches_png=picture if os.path.exists(picture) else None,
    )


def result_view(nodes) -> WidgetValues:
    """The mean BMD in its class's colour, the class, and why vertebrae were refused (None: cleared)."""
    if nodes is None:
        return {"meanBmdLabel": {"text": ""}, "classificationLabel": {"text": ""}, "messagesLabel": {"text": ""}}
    summary = result_summary(nodes)
    size = "22pt" if summary.mean_bmd is not None else "16pt"
    return {
        "meanBmdLabel": {"text": texts.mean_text(summary.mean_bmd),
                         "styleSheet": f"font-size: {size}; font-weight: bold; color: {summary.color};"},
        "classificationLabel": {"text": texts.class_name(summary.classification),
                                "styleSheet": f"font-size: 16pt; font-weight: bold; color: {summary.color};"},
        "messagesLabel": {"text": summary.reasons},
    }


def case_items(case_list) -> List[str]:
    """The case list's entries as the case chooser lists them: "<case id>  [<status>]"."""
    names = texts.status_names()
    return [f"{entry.case_id}  [{names.get(entry.status, entry.status)}]" for entry in case_list.cases]


def case_view(case_list) -> WidgetValues:
    """Where the reader is in the case list (None: no case list, nothing changes)."""
    if case_list is None:
        return {}
    status = case_list.current.status
    text = texts.case_status(case_list.current_index + 1, len(case_list), texts.status_names().get(status, status),
                             case_list.counts())
    return {"caseComboBox": {"currentIndex": case_list.current_index}, "caseStatusLabel": {"text": text}}


def case_opened_view(opened, case_list) -> WidgetValues:
    """After a session.CaseOpened: the case's id for the ground truth, what became of mask edits,
    and for a case list just opened, where it came from and its ground-truth folder."""
    view: WidgetValues = {"caseIdLineEdit": {"text": case_list.current.case_id}}
    if opened.list_opened:
        view["caseSourceLabel"] = {"text": str(case_list.source)}
        view["groundTruthDirectoryButton"] = {"directory": str(case_list.ground_truth_dir)}
    if opened.edits_restored:
        view["statusLabel"] = {"text": texts.status("edits_restored")}
    elif opened.edits_kept:
        view["statusLabel"] = {"text": texts.status("edits_kept", path=opened.edits_kept)}
    return view
