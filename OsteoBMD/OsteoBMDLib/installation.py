"""What the extension needs installed: the Python packages the measurement runs on (missing
ones are installed into Slicer's Python on first use) and the model weights it ships.

Installing takes the installers as arguments (PyTorch's own, then pip), so this module stays
free of the application: the module (OsteoBMD.py) passes Slicer's.
"""

import os
from typing import Callable, List, Optional

from osteobmd.errors import OsteoBMDError

from . import texts


def missing_requirements(requirements_file: str) -> List[str]:
    """Requirements not satisfied in this Python ('torch' first when it is missing)."""
    import importlib.metadata
    import importlib.util

    from packaging.requirements import Requirement

    missing = [] if importlib.util.find_spec("torch") else ["torch"]
    with open(requirements_file) as f:
        lines = [line.split("#")[0].strip() for line in f]
    for line in filter(None, lines):
        req = Requirement(line)
        try:
            if importlib.metadata.version(req.name) not in req.specifier:
                missing.append(line)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
    return missing


def shipped_weights_dir(module_dir: str) -> Optional[str]:
    """The model weights installed with the extension, or beside the source tree (None: none)."""
    for candidate in (os.path.join(module_dir, "Resources", "model_weights"),
                      os.path.join(os.path.dirname(module_dir), "model_weights")):
        if os.path.isdir(candidate) and os.listdir(candidate):
            return candidate
    return None


def install_requirements(requirements_file: str, install_torch: Callable[[], None],
                         pip_install: Callable[[List[str]], None]) -> None:
    """Install what is missing: PyTorch with ``install_torch`` (which raises when it cannot),
    the rest with ``pip_install``; raises when packages are still missing afterwards."""
    missing = missing_requirements(requirements_file)
    if "torch" in missing:
        install_torch()
        missing.remove("torch")
    if missing:
        pip_install(missing)
    still = missing_requirements(requirements_file)
    if still:
        raise OsteoBMDError(texts.packages_still_missing(still))


def install_torch(pytorch_utils_logic) -> None:
    """PyTorch through the PyTorch extension's installer (``PyTorchUtils.PyTorchUtilsLogic()``,
    None when the extension is not installed), which picks the build that fits the computer."""
    if pytorch_utils_logic is None:
        raise OsteoBMDError(texts.pytorch_problem(extension_missing=True))
    if not pytorch_utils_logic.torchInstalled() and pytorch_utils_logic.installTorch(
            askConfirmation=False, torchVersionRequirement=">=2.0") is None:
        raise OsteoBMDError(texts.pytorch_problem(extension_missing=False))
