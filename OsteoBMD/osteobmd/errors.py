"""Errors the user can act on. The CLI turns them into one line and an exit code."""


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
