"""The panel's words in the reader's language (Qt-free).

Inside Slicer ``_`` is Slicer's translation function, so every text here is translated;
outside Slicer (slicer-core, the tests) the English text is used as it is. The session and
panel_state name what happened by a key (a SessionError code, a run outcome, a hint, a
status); this module is the one place that turns each key into words.
"""

from typing import Dict, Optional, Sequence, Tuple

from . import session as sessionlib
from .case_list import STATUS_CORRECTED, STATUS_MEASURED, STATUS_NEW, STATUS_SAVED

try:
    from slicer.i18n import tr as _
except ImportError:  # slicer-core has no translations

    def _(text: str) -> str:
        return text


def error_text(err: Exception) -> str:
    """A session error in the reader's language; other errors as they are."""
    texts = {
        sessionlib.NO_VOLUME: _("Select a CT volume first."),
        sessionlib.NO_PYTHON: _("Slicer's Python (PythonSlicer) was not found; reinstall Slicer."),
        sessionlib.NOT_MEASURED: _("Measure the case first (Apply), then edit the masks."),
        sessionlib.NOT_MEASURED_FOR_SAVE: _("Measure the case first (Apply), check or correct the masks, then save."),
        sessionlib.MASKS_NOT_RECOMPUTED: _(
            "The masks were edited after the last measurement: press Recompute BMD first, "
            "so that the saved BMD matches the saved masks."),
        sessionlib.NO_MEAN_VERTEBRA: _("Tick at least one vertebra for the mean BMD."),
    }
    return texts.get(getattr(err, "code", None), str(err))


def apply_button(running: bool, has_input: bool) -> Dict[str, str]:
    """The Apply button's text and tooltip: it turns into Cancel while a run is going."""
    if running:
        return {"text": _("Cancel"), "toolTip": _("Stop the measurement")}
    return {"text": _("Apply"),
            "toolTip": _("Measure L1-L4 BMD on the selected CT") if has_input else _("Select a CT volume first")}


def starting() -> str:
    return _("Starting...")


def outcome_text(outcome: str) -> str:
    """The status line once a run ended (session.poll_run's outcome)."""
    return {
        sessionlib.FINISHED: _("Done."),
        sessionlib.NO_VALID: _("Done: no vertebra passed the checks (see the reasons)."),
        sessionlib.FAILED: _("Failed."),
        sessionlib.CANCELLED: _("Cancelled; nothing was changed."),
    }[outcome]


def mean_text(mean_bmd: Optional[float]) -> str:
    if mean_bmd is None:
        return _("No valid measurement")
    return _("{bmd:.0f} mg/cm³").format(bmd=mean_bmd)


def class_name(classification: str) -> str:
    names = {"osteoporosis": _("Osteoporosis"), "osteopenia": _("Osteopenia"), "normal": _("Normal")}
    return names.get(classification, classification)


def status_names() -> Dict[str, str]:
    """The case statuses (case_list.STATUSES) as the case list shows them."""
    return {STATUS_NEW: _("new"), STATUS_MEASURED: _("measured"), STATUS_CORRECTED: _("corrected"),
            STATUS_SAVED: _("saved")}


def case_status(position: int, total: int, status: str, counts: Dict[str, int]) -> str:
    """Where the reader is in the case list; ``status`` as status_names() gives it."""
    return _(
        "Case {n} of {total}: {status}. Saved {saved}, corrected {corrected}, measured {measured}, new {new}."
    ).format(n=position, total=total, status=status, saved=counts[STATUS_SAVED], corrected=counts[STATUS_CORRECTED],
             measured=counts[STATUS_MEASURED], new=counts[STATUS_NEW])


def table_titles() -> Dict[str, str]:
    """The BMD table's column titles (osteobmd.scene.table.TABLE_COLUMNS)."""
    return {"Vertebra": _("Vertebra"), "BMD": _("BMD (mg/cm³)"), "Class": _("Class"), "Valid": _("Valid"),
            "Reasons": _("Reasons"), "Patch centre": _("Patch centre (RAS mm)"),
            "Corrected mask": _("From corrected mask")}


def failure(action: str) -> str:
    """The first line of the message box when ``action``  went wrong."""
    return {
        "measure": _("The measurement could not be started."),
        "recompute": _("The BMD could not be recomputed."),
        "load": _("The results could not be loaded."),
        "run": _("The measurement failed."),
        "save": _("The ground truth could not be saved."),
        "case": _("The case could not be opened."),
        "case_list": _("The case list could not be opened."),
    }[action]


def question(topic: str, **values) -> Tuple[str, str]:
    """A yes/no question to the reader: (text, window title)."""
    text, title = {
        "replace_masks": (_("Apply segments the CT again and replaces the masks you edited with the network's. "
                            "Use Recompute BMD to measure your masks. Replace them?"), _("Replace edited masks")),
        "replace_ground_truth": (_("Ground truth for case '{case}' was saved before. Replace it?"),
                                 _("Replace ground truth")),
        "install": (_("OsteoBMD needs Python packages that are not installed yet. Installing them needs a network "
                      "connection and may take several minutes. Install now?"), _("Install Python packages")),
    }[topic]
    return text.format(**values), title


def status(event: str, **values) -> str:
    """The status line after ``event``."""
    return {
        "cancelling": _("Cancelled."),
        "installing": _("Installing Python packages..."),
        "installed": _("Python packages installed."),
        "saved": _("Saved ground truth to {folder}."),
        "not_saved": _("Nothing saved: the earlier ground truth was kept."),
        "edits_kept": _("Your mask edits were kept in {path}."),
        "edits_restored": _("Your earlier mask edits were restored: press Recompute BMD."),
    }[event].format(**values)


def packages_missing(names: Sequence[str], declined: bool) -> str:
    """Why nothing was measured: packages missing (in a test run), or the reader declined to install them."""
    if declined:
        return _("The packages OsteoBMD needs were not installed; nothing was measured.")
    return _("Python packages are missing: {names}.").format(names=", ".join(names))


def packages_to_install(names: Sequence[str]) -> str:
    return _("Packages to install: {names}").format(names=", ".join(names))


def packages_still_missing(names: Sequence[str]) -> str:
    return _("These packages are still missing after the installation: {names}. "
             "Restart Slicer and try again.").format(names=", ".join(names))


def pytorch_problem(extension_missing: bool) -> str:
    """Why PyTorch could not be installed: no PyTorch extension, or its installer failed."""
    if extension_missing:
        return _("OsteoBMD needs the PyTorch extension. Install 'PyTorch' from the Extensions Manager, "
                 "restart Slicer and press Apply again.")
    return _("PyTorch could not be installed. Install it with the 'PyTorch Util' module, then press Apply again.")


def module_help() -> Tuple[str, str]:
    """The module's help and acknowledgement texts."""
    return (_("Measures the trabecular bone mineral density (BMD) of the lumbar vertebrae L1-L4 on a CT, "
              "fully automatically: press Apply, check the outlines on the sagittal view, correct a mask "
              "where needed and recompute, then save the case as ground truth. "
              'See <a href="https://github.com/osteobmd/OsteoBMD">the documentation</a>.'),
            _("Method after a deep-learning study of R2U-Net vertebra segmentation and DenseNet-121 BMD "
              "regression on CT. The bundled sample CT comes from the TotalSegmentator example data "
              "(Apache License 2.0)."))


def device_label(device: str) -> str:
    return {"auto": _("Automatic (GPU if available)"), "cpu": _("CPU"), "cuda": _("GPU (CUDA)")}[device]


def calibration_label(choice: str) -> str:
    return {"none": _("None"), "internal": _("Internal (air and fat of the patient)"),
            "linear": _("Linear (slope and intercept)")}[choice]
