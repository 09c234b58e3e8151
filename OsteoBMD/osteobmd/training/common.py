"""What both training commands share: seeding, checkpoints (safetensors), the CSV log.

Reproducibility: the model is initialised after `torch.manual_seed(seed)`, and every
epoch draws its data order and augmentations from generators seeded by (seed, epoch),
so a run resumed from a checkpoint continues exactly as the uninterrupted run would
(same thread count and device).

A checkpoint is one safetensors file (no pickle): the model's tensors under "model.",
the optimiser's under "optim.", and in its metadata (JSON) the epoch, the run's
settings, the optimiser's hyper-parameters, and the best epoch so far.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import MISSING, asdict, fields, is_dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..weights import make_readable

CHECKPOINT_KEY = "osteobmd_checkpoint"
CHECKPOINT_DIR = "checkpoints"
BEST_MODEL = "best_model.safetensors"
LOG_CSV = "log.csv"

LogFn = Callable[[str], None]


class RunConfig:
    """JSON round trip of a trainer's dataclass config (stored in checkpoints and weights).

    Tuples are stored as lists and come back as tuples; a field whose default is itself a
    dataclass (the augmentation settings) is rebuilt from its dict; unknown keys (from
    other versions) are ignored.
    """

    def to_dict(self) -> dict:
        return _lists(asdict(self))

    @classmethod
    def from_dict(cls, d: dict):
        kw = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            value = d[f.name]
            nested = f.default_factory() if f.default_factory is not MISSING else None
            if is_dataclass(nested) and isinstance(value, dict):
                names = {g.name for g in fields(nested)}
                value = type(nested)(**{k: _tuples(v) for k, v in value.items() if k in names})
            kw[f.name] = _tuples(value)
        return cls(**kw)


def _lists(value):
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _tuples(value):
    return tuple(value) if isinstance(value, list) else value


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quiet_log(message: str) -> None:
    pass


def seed_everything(seed: int) -> None:
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % (2 ** 32))


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """The numpy generator of one epoch (independent of what earlier epochs drew)."""
    return np.random.default_rng([int(seed), int(epoch), int(stream)])


def epoch_torch_seed(seed: int, epoch: int) -> None:
    torch.manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2 ** 63))


def cosine_lr(base_lr: float, epoch: int, epochs: int, min_ratio: float = 0.05) -> float:
    """Learning rate of (1-based) `epoch`: cosine from base_lr down to min_ratio * base_lr."""
    if epochs <= 1:
        return base_lr
    progress = (epoch - 1) / (epochs - 1)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + np.cos(np.pi * progress)))


def recalibrate_batchnorm(model: nn.Module, batches) -> None:
    """Replace BatchNorm running statistics by their plain average over `batches` (train-mode forwards).

    Why: with a high learning rate the weights move faster than the running averages
    (momentum 0.1) follow, and the finder, right in train mode, predicted no body at all
    in eval mode after 120 steps (measured); averages over the current weights fix that.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --------------------------------------------------------------------------- checkpoints
def _optimizer_tensors(optimizer: torch.optim.Optimizer):
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for name, value in per_param.items():
            key = f"optim.{index}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().to("cpu").contiguous()
            else:
                scalars[key] = value
    return tensors, scalars, state["param_groups"]


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, info: dict
) -> Path:
    """Model + optimiser state + `info` (JSON) after `epoch`, as one safetensors file."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_scalars, groups = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    meta = dict(info)
    meta.update(epoch=int(epoch), optimizer={"param_groups": groups, "scalars": opt_scalars})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={CHECKPOINT_KEY: json.dumps(meta)})
    os.replace(tmp, path)
    make_readable(path)
    return path


def find_checkpoint(resume: Path) -> Path:
    """`resume` is a checkpoint file or a folder holding them (the newest epoch is taken)."""
    resume = Path(resume)
    if resume.is_dir():
        folder = resume / CHECKPOINT_DIR if (resume / CHECKPOINT_DIR).is_dir() else resume
        found = sorted(folder.glob("epoch_*.safetensors"))
        if not found:
            raise InputError(
                f"No checkpoint (epoch_*.safetensors) in '{resume}'. Give --resume the checkpoint file "
                "written by an earlier `osteobmd train` run."
            )
        return found[-1]
    if not resume.is_file():
        raise InputError(f"The checkpoint '{resume}' does not exist; check the --resume path.")
    return resume


def read_checkpoint_info(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta[CHECKPOINT_KEY])
    except Exception:
        raise InputError(
            f"'{Path(path).name}' is not an OsteoBMD training checkpoint (a .safetensors file written by "
            "`osteobmd train`); pickled .pt files are never loaded."
        ) from None


def load_checkpoint(path: Path, model: nn.Module, optimizer: Optional[torch.optim.Optimizer]) -> dict:
    """Restore model (and optimiser) state in place; returns the checkpoint's info."""
    from safetensors.torch import load_file

    info = read_checkpoint_info(path)
    tensors = load_file(str(path), device="cpu")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as err:
        raise InputError(
            f"The checkpoint '{Path(path).name}' does not fit this network ({str(err).splitlines()[0][:160]}). "
            "Resume with the settings of the run that wrote it."
        ) from None
    if optimizer is not None:
        per_param: Dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                per_param.setdefault(int(index), {})[name] = value
        for key, value in info["optimizer"].get("scalars", {}).items():
            _, index, name = key.split(".", 2)
            per_param.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": per_param, "param_groups": info["optimizer"]["param_groups"]})
    return info


def copy_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def save_state(path: Path, state: Dict[str, torch.Tensor], info: dict) -> None:
    from safetensors.torch import save_file

    tmp = Path(str(path) + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={CHECKPOINT_KEY: json.dumps(info)})
    os.replace(tmp, path)
    make_readable(path)


def load_state(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


# --------------------------------------------------------------------------- the CSV log
class CsvLog:
    """One row per epoch; on resume, rows after the resumed epoch are dropped first."""

    def __init__(self, path: Path, columns: Sequence[str], resume_epoch: int = 0):
        self.path = Path(path)
        self.columns = list(columns)
        rows: List[dict] = []
        if resume_epoch > 0 and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("epoch", "").isdigit() and int(r["epoch"]) <= resume_epoch]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(value):
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.6g}"
    return value


def read_log(path: Path) -> List[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def run_summary(config, selected_epoch, selection: str, loss: str, selected: dict, last: dict,
                device, seconds: float) -> dict:
    """The part of a weights file's training record both trainers share."""
    import platform

    return {
        "epochs": config.epochs,
        "selected_epoch": selected_epoch,
        "selection": selection,
        "seed": config.seed,
        "config": config.to_dict(),
        "loss": loss,
        "optimizer": f"Adam (weight decay {config.weight_decay}), cosine learning rate from {config.lr}",
        "metrics": {k: v for k, v in selected.items() if k.startswith("val_")},
        "last_epoch_metrics": {k: v for k, v in last.items() if k != "epoch"},
        "device": str(device),
        "torch": torch.__version__,
        "platform": platform.platform(terse=True),
        "seconds": round(seconds, 1),
    }


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
