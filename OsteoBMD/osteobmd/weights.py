"""Trained weights: safetensors files with their metadata; refuses anything untrained.

One file per model in `model_weights/`:

    segmentation_r2unet.safetensors      R2U-Net (METHOD 2)
    regression_densenet121.safetensors   DenseNet-121 BMD regression (METHOD 3.6)

Only safetensors is read or written (never pickle: a .pt/.pth file can run code when
loaded). The metadata travel inside the safetensors header (key "osteobmd", a JSON
string) so a weights file is self-describing; `save_model` also writes a `.json`
sidecar with the same content for people and the model card (it is never read back).

Metadata (a dict):
    format_version   1
    kind             "segmentation" | "regression"
    trained          true (anything else is refused: never measure with random weights)
    architecture     {"name": "R2UNet" | "DenseNet121", "params": constructor kwargs}
    preprocessing    what the model was trained with (seg: window, spacing_mm, crop_size,
                     pad_multiple; regression: patch size_px / spacing_mm / slice_step_mm,
                     window)
    target           regression: {"unit": "mg/cm3", "offset", "scale"} (the scaling is also
                     inside the module, whose forward returns mg/cm3)
    labels           segmentation: {"0": "background", "1": "L1", ...}
    training         data summary, epochs, seed, date, metrics ...
    storage_dtype    "float16" | "float32"

Float tensors are stored as float16 (files of a few MB) except BatchNorm running
statistics and the target scaling buffers, which stay float32; loading casts back to
float32.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
from torch import nn

from . import __version__
from .config import PatchConfig, SegmentationConfig
from .data_files import weights_dir as shipped_weights_dir
from .errors import InputError, NoTrainedWeightsError

PathLike = Union[str, Path]

# The segmentation network finds vertebral bodies and the sacrum; naming.py names them.
SEGMENTATION_FILE = "vertebra_finder_r2unet.safetensors"
FINDER_TASK = "vertebra_finder"
REGRESSION_FILE = "regression_densenet121.safetensors"
FILE_OF_KIND = {"segmentation": SEGMENTATION_FILE, "regression": REGRESSION_FILE}
KINDS = tuple(FILE_OF_KIND)
META_KEY = "osteobmd"
FORMAT_VERSION = 1
ENV_WEIGHTS_DIR = "OSTEOBMD_WEIGHTS_DIR"

# Tensors kept in float32 even in a float16 file (small, and precision matters).
_KEEP_FP32_SUFFIXES = ("running_mean", "running_var", "target_offset", "target_scale")
_FP16_MAX = 65000.0


def default_weights_dir() -> Path:
    """`$OSTEOBMD_WEIGHTS_DIR` if set, else the shipped weights (the wheel's copy, or the
    repository's `model_weights/`: data_files)."""
    env = os.environ.get(ENV_WEIGHTS_DIR)
    if env:
        return Path(env).expanduser()
    return shipped_weights_dir()


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """"auto" -> CUDA when a GPU is usable, else CPU; "cpu"; "cuda" / "cuda:N" (checked)."""
    if isinstance(device, torch.device):
        device = str(device)
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(
                f"Device '{device}' was asked for, but this PyTorch sees no CUDA GPU (no GPU, no driver, "
                "or a CPU-only PyTorch build). Use --device cpu or --device auto."
            )
        if ":" in name:
            try:
                index = int(name.split(":", 1)[1])
            except ValueError:
                raise InputError(f"Device '{device}' is not a device name; use auto, cpu, cuda or cuda:N.") from None
            if not 0 <= index < torch.cuda.device_count():
                raise InputError(
                    f"Device '{device}' does not exist: this machine has {torch.cuda.device_count()} CUDA "
                    "GPU(s), numbered from 0. Use --device cuda or --device auto."
                )
        return torch.device(name)
    raise InputError(f"Device '{device}' is not known; use auto, cpu, cuda or cuda:N.")


# --------------------------------------------------------------------------- saving
def _architecture_of(model: nn.Module) -> dict:
    from .networks import ARCHITECTURES

    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return {"name": name, "params": model.config()}
    raise ValueError(f"save_model does not know the architecture {type(model).__name__}")


def _storage_tensors(model: nn.Module, dtype: torch.dtype) -> dict:
    tensors = {}
    for key, value in model.state_dict().items():
        t = value.detach().to("cpu")
        if t.is_floating_point() and dtype == torch.float16:
            keep = key.endswith(_KEEP_FP32_SUFFIXES) or (t.numel() and float(t.abs().max()) > _FP16_MAX)
            t = t.float() if keep else t.half()
        elif t.is_floating_point():
            t = t.float()
        tensors[key] = t.contiguous()
    return tensors


def save_model(model: nn.Module, path: PathLike, meta: dict, dtype: torch.dtype = torch.float16) -> Path:
    """Write `model`'s weights and `meta` to `path` (.safetensors) and a `.json` sidecar.

    `meta` must give "kind"; "architecture" is filled in from the model when absent;
    "trained" is written as given (default False: only a training run sets it to True).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights files end in .safetensors, got '{path.name}'")
    meta = json.loads(json.dumps(meta))  # a plain-JSON copy (fails early on odd values)
    if meta.get("kind") not in KINDS:
        raise ValueError(f"meta['kind'] must be one of {KINDS}, got {meta.get('kind')!r}")
    meta.setdefault("architecture", _architecture_of(model))
    meta.setdefault("trained", False)
    meta["format_version"] = FORMAT_VERSION
    meta["storage_dtype"] = "float16" if dtype == torch.float16 else "float32"
    meta.setdefault("osteobmd_version", __version__)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(_storage_tensors(model, dtype), str(tmp), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    os.replace(tmp, path)
    make_readable(path)
    sidecar = dict(meta)
    sidecar["_note"] = (
        f"A readable copy of the metadata inside {path.name}; the copy in the .safetensors file is the one loaded."
    )
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def make_readable(path: PathLike) -> None:
    """safetensors writes 0600 files; give weights the usual permissions (umask applied)."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(path, 0o666 & ~umask)
    except OSError:
        pass


# --------------------------------------------------------------------------- loading
def _what_to_do(kind: Optional[str]) -> str:
    if kind in KINDS:
        return (
            f"Train one with `osteobmd train {kind} DATA --out DIR` (and point --weights or "
            f"{ENV_WEIGHTS_DIR} at DIR), or put the shipped {FILE_OF_KIND[kind]} back in model_weights/."
        )
    return "Train a model with `osteobmd train ...` or put the shipped weights back in model_weights/."


def read_metadata(path: PathLike, kind: Optional[str] = None) -> dict:
    """The metadata stored in a weights file; NoTrainedWeightsError when it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise NoTrainedWeightsError(
            f"No {kind + ' ' if kind else ''}weights file at '{path}'. {_what_to_do(kind)}"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception:  # safetensors raises its own error types for non-safetensors files
        raise NoTrainedWeightsError(
            f"'{path.name}' is not a safetensors weights file (OsteoBMD loads only .safetensors, never "
            f"pickled .pt/.pth files). {_what_to_do(kind)}"
        ) from None
    try:
        meta = json.loads(header[META_KEY])
        if not isinstance(meta, dict):
            raise ValueError
    except (KeyError, ValueError):
        raise NoTrainedWeightsError(
            f"'{path.name}' holds no OsteoBMD metadata, so what it was trained for is unknown. {_what_to_do(kind)}"
        ) from None
    return meta


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_model(
    path: PathLike, kind: Optional[str] = None, device: Union[str, torch.device] = "auto", require_trained: bool = True
) -> Tuple[nn.Module, dict]:
    """Load a weights file -> (model in eval mode on `device`, metadata).

    The returned metadata also has "file": {"name", "sha256"} for provenance.
    """
    from safetensors.torch import load_file

    from .networks import build

    path = Path(path)
    meta = read_metadata(path, kind)
    if kind is not None and meta.get("kind") != kind:
        raise NoTrainedWeightsError(
            f"'{path.name}' holds {meta.get('kind')!r} weights, not {kind} weights. {_what_to_do(kind)}"
        )
    if require_trained and meta.get("trained") is not True:
        raise NoTrainedWeightsError(
            f"'{path.name}' holds no trained weights (its metadata does not say trained: true), and "
            f"OsteoBMD never measures with untrained weights. {_what_to_do(meta.get('kind', kind))}"
        )
    torch_device = resolve_device(device)
    arch = meta.get("architecture") or {}
    try:
        model = build(arch["name"], dict(arch.get("params") or {}))
        state = load_file(str(path), device="cpu")
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise NoTrainedWeightsError(
            f"The weights in '{path.name}' do not fit the architecture its metadata names "
            f"({arch.get('name')!r}): {str(err).splitlines()[0][:200]}. The file is damaged or from an "
            f"incompatible version. {_what_to_do(meta.get('kind', kind))}"
        ) from None
    model.float().to(torch_device).eval()
    meta = dict(meta)
    meta["file"] = {"name": path.name, "sha256": _sha256(path)}
    return model, meta


def weights_path(kind: str, weights_dir: Optional[PathLike] = None) -> Path:
    """The file of `kind` in `weights_dir` (default: default_weights_dir()); a file path is used as is."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    base = Path(weights_dir).expanduser() if weights_dir is not None else default_weights_dir()
    if base.suffix == ".safetensors" or base.is_file():
        return base
    return base / FILE_OF_KIND[kind]


def load_segmentation_model(
    weights_dir: Optional[PathLike] = None, device: Union[str, torch.device] = "auto"
) -> Tuple[nn.Module, dict]:
    """The trained R2U-Net vertebra finder and its metadata (preprocessing it was trained with, metrics).

    Weights of the earlier design, which named L1-L4 by their place in the image, are refused:
    the pipeline now counts levels itself and needs a finder (classes body and sacrum).
    """
    path = weights_path("segmentation", weights_dir)
    model, meta = load_model(path, "segmentation", device)
    if meta.get("task") != FINDER_TASK:
        raise InputError(
            f"'{path.name}' holds segmentation weights that name L1-L4 by their place in the image "
            f"(task {meta.get('task')!r}); OsteoBMD now needs a vertebra finder (task '{FINDER_TASK}'). "
            f"Train one with `osteobmd train finder OUT`, or put the shipped {SEGMENTATION_FILE} back."
        )
    return model, meta


def load_regression_model(
    weights_dir: Optional[PathLike] = None, device: Union[str, torch.device] = "auto"
) -> Tuple[nn.Module, dict]:
    """The trained DenseNet-121 BMD regressor (forward returns mg/cm3) and its metadata."""
    return load_model(weights_path("regression", weights_dir), "regression", device)


@dataclass
class Models:
    """The trained networks of one run, on their device, with their metadata."""

    device: torch.device
    regression: nn.Module
    regression_meta: dict
    segmentation: Optional[nn.Module] = None  # None when the user gives the label map
    segmentation_meta: Optional[dict] = None


def load_models(weights_dir: Optional[PathLike] = None, device: Union[str, torch.device] = "auto",
                segmentation: bool = True) -> Models:
    """Both models at once, before any long step, so a bad device or missing weights fail at once."""
    torch_device = resolve_device(device)
    seg_model, seg_meta = load_segmentation_model(weights_dir, torch_device) if segmentation else (None, None)
    reg_model, reg_meta = load_regression_model(weights_dir, torch_device)
    return Models(torch_device, reg_model, reg_meta, seg_model, seg_meta)


# --------------------------------------------------------------------------- preprocessing
# A model is only right on inputs made as in its training: what its metadata records wins
# over the defaults in config.py.
def network_config(meta: dict, cfg: SegmentationConfig) -> SegmentationConfig:
    """The segmentation preprocessing (window, spacing, crop) stored in the weights, else `cfg`."""
    trained = (meta or {}).get("preprocessing", {})
    fields = {k: trained[k] for k in ("window_level", "window_width", "spacing_mm", "crop_size") if k in trained}
    return replace(cfg, **fields)


def trained_patch_config(meta: dict, patches: PatchConfig, window: SegmentationConfig):
    """(PatchConfig, window) as stored in the regression weights, else the defaults."""
    pre = (meta or {}).get("preprocessing", {})
    known = PatchConfig.__dataclass_fields__
    patch_cfg = replace(patches, **{k: v for k, v in pre.get("patch", {}).items() if k in known})
    window = replace(window, **{k: pre[k] for k in ("window_level", "window_width") if k in pre})
    return patch_cfg, window
