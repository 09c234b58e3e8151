"""Errors the user can act on. The CLI turns them into one line and an exit code."""

import os
import tempfile
import traceback
from pathlib import Path
from typing import Optional


class OsteoBMDError(Exception):
    """Base class: `str(err)` is a complete sentence saying what is wrong and what to do."""

    exit_code = 1


class InputError(OsteoBMDError):
    """The input cannot be used (wrong path, not an image, not a CT, no spine in view...)."""

    exit_code = 2


class NoTrainedWeightsError(InputError):
    """The model file is missing or holds no trained weights: never measure with random weights."""


class OutputExistsError(InputError):
    """The output folder already holds results; the user must ask for --overwrite."""


def write_error_log(out: Optional[Path]) -> str:
    """The current exception's traceback beside the output folder `out` (else in the temp
    folder), never in the current one; returns "details in LOG" for the message."""
    folders = [Path(out).absolute().parent] if out else []
    name = f"{Path(out).name}.error.log" if out else f"osteobmd-error-{os.getpid()}.log"
    for folder in folders + [Path(tempfile.gettempdir())]:
        log = folder / name
        try:
            log.write_text(traceback.format_exc(), encoding="utf-8")
            return f"details in {log}"
        except OSError:
            continue
    return "no log could be written"
