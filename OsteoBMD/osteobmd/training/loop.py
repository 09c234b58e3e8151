"""The one training loop every trainer runs on.

A trainer says what differs (how one epoch trains, how the model is validated, what its
log line and checkpoints carry) in a `Trainer`; `run_loop` does what is the same for
all: resume from a checkpoint, the cosine learning rate, per-epoch seeding, the CSV log,
keeping the best validation state, checkpoints, an optional wall-clock budget, and the
final choice between the best and the last epoch.

Reproducibility: every epoch draws its data order and augmentations from generators
seeded by (seed, epoch), so a run resumed from a checkpoint continues exactly as the
uninterrupted run would (same thread count and device).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..progress import ProgressCallback, silent
from .common import (
    BEST_MODEL, CHECKPOINT_DIR, LOG_CSV, CsvLog, LogFn, Stopwatch, copy_state, cosine_lr, epoch_rng,
    RunConfig, epoch_torch_seed, find_checkpoint, load_checkpoint, load_state, read_checkpoint_info, run_summary,
    save_checkpoint, save_state, set_lr, stderr_log, utc_now,
)

# train_epoch(model, optimizer, epoch, rng, tick) -> the epoch's train_* columns;
# tick(fraction) reports progress within the epoch.
TrainEpoch = Callable[[nn.Module, torch.optim.Optimizer, int, np.random.Generator, Callable[[float], None]], dict]


@dataclass
class LoopConfig(RunConfig):
    """The settings the loop reads; each trainer's config extends them (and may change the defaults)."""

    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    checkpoint_every: int = 20  # the paper saved a checkpoint every 20 epochs
    select: str = "best"  # or "last"
    stop_epoch: Optional[int] = None  # stop after this epoch of the learning-rate schedule planned for `epochs`
    minutes: Optional[float] = None  # stop after the epoch that passes this wall-clock budget


@dataclass
class Trainer:
    """What one kind of training does differently; the loop does the rest."""

    kind: str  # "segmentation", "regression", "finder": checked on resume
    work: Path  # the run's folder: log.csv, checkpoints/, best_model.safetensors
    log_columns: Sequence[str]
    train_epoch: TrainEpoch
    validate: Callable[[nn.Module], dict]  # val_* columns; "val_score": higher is better
    describe: Callable[[dict], str]  # the epoch's log line (without epoch number and time)
    run_info: dict = field(default_factory=dict)  # stored in every checkpoint (config, preprocessing)
    on_best: Optional[Callable[[nn.Module, dict], None]] = None  # e.g. write the weights at once


@dataclass
class LoopResult:
    selected_epoch: int
    used_best: bool  # the best validation epoch (else the last epoch) is in the model
    selected: dict  # the selected epoch's validation metrics
    last: dict  # the last epoch's log row
    checkpoints: List[str]
    seconds: float


def resume_point(resume, kind: str) -> Tuple[Optional[Path], Optional[dict]]:
    """(checkpoint path, its info) for `resume` (file or folder), or (None, None)."""
    if resume is None:
        return None, None
    path = find_checkpoint(Path(resume))
    info = read_checkpoint_info(path)
    if info.get("kind") != kind:
        raise InputError(f"'{path.name}' is a {info.get('kind')} checkpoint, not a {kind} one.")
    return path, info


@dataclass
class RunStart:
    """Where a run writes, with what settings, from which checkpoint."""

    out_dir: Path
    work: Path
    config: object
    checkpoint: Optional[Path]
    preprocessing: Optional[dict]  # a resumed run's stored preprocessing settings
    stored_config: Optional[dict]  # a resumed run's stored config, as written
    device: torch.device
    clock: Stopwatch


def start_run(out_dir, work_name: str, kind: str, config, resume, device, min_batch: int = 2,
              keep: Sequence[str] = ("epochs",)) -> RunStart:
    """Resolve the output folder, the resumed settings (all but `keep` from the checkpoint) and the device."""
    from ..weights import default_weights_dir, resolve_device

    out_dir = Path(out_dir) if out_dir is not None else default_weights_dir()
    path, info, config = resume_settings(resume, kind, config, type(config).from_dict, keep)
    if config.epochs < 1 or config.batch_size < min_batch:
        raise InputError(f"--epochs must be at least 1 and --batch-size at least {min_batch}.")
    return RunStart(out_dir, out_dir / work_name, config, path, (info or {}).get("preprocessing"),
                    (info or {}).get("config"), resolve_device(device), Stopwatch())


def resume_settings(resume, kind: str, config, from_dict, keep: Sequence[str] = ("epochs",)):
    """(checkpoint, info, config): a resumed run takes its stored settings, except `keep` from `config`."""
    path, info = resume_point(resume, kind)
    if info is None:
        return None, None, config
    stored = from_dict(info["config"])
    for name in keep:
        setattr(stored, name, getattr(config, name))
    return path, info, stored


def optimizer_step(optimizer: torch.optim.Optimizer, losses: Sequence[torch.Tensor]) -> List[float]:
    """Back-propagate losses[0] (the total) and step; returns every loss term as a float."""
    optimizer.zero_grad(set_to_none=True)
    losses[0].backward()
    optimizer.step()
    return [float(v.item()) for v in losses]


def training_record(config, result: "LoopResult", selection: str, loss: str, data, device, seconds: float) -> dict:
    """The "training" section of a weights file's metadata."""
    return {"date": utc_now(), "data": data,
            **run_summary(config, result.selected_epoch, selection if result.used_best else "last epoch", loss,
                          result.selected, result.last, device, seconds)}


def trained_meta(kind: str, preprocessing: dict, training: dict, **extra) -> dict:
    """A weights file's metadata (save_model adds the architecture from the network registry)."""
    return {"kind": kind, "trained": True, "preprocessing": preprocessing, **extra, "training": training}


def write_weights(model: nn.Module, path: Path, meta: dict, result: "LoopResult", work: Path, what: str,
                  log: LogFn = stderr_log, progress: ProgressCallback = silent) -> dict:
    """Save the selected weights and return the run's summary."""
    from ..weights import save_model

    weights_path = save_model(model, path, meta)
    log(f"{what} weights written to {weights_path} (epoch {result.selected_epoch})")
    progress("training", 1.0, "done")
    return {"weights": str(weights_path), "log": str(Path(work) / LOG_CSV), "checkpoints": result.checkpoints,
            "metrics": meta["training"]["metrics"], "selected_epoch": result.selected_epoch, "meta": meta}


def run_loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config,
    trainer: Trainer,
    checkpoint: Optional[Path] = None,
    log: LogFn = stderr_log,
    progress: ProgressCallback = silent,
    fresh_validation: bool = False,
) -> LoopResult:
    """Train `model` for epochs up to `config.epochs` (or `config.stop_epoch`, or `config.minutes`).

    fresh_validation: a resumed run validates on other data now, so the best epoch so far
    (scored on the old data) is forgotten and the best is chosen among the epochs to come.
    """
    clock = Stopwatch()
    work = Path(trainer.work)
    start_epoch = 1
    best: Dict[str, Optional[float]] = {"epoch": None, "score": None}
    best_state = None
    if checkpoint is not None:
        info = load_checkpoint(checkpoint, model, optimizer)
        start_epoch = int(info["epoch"]) + 1
        log(f"  resumed from {checkpoint.name} (epoch {info['epoch']})")
        if fresh_validation:
            log("  the validation data changed: the best epoch is chosen among the epochs from here on")
        else:
            best = info.get("best") or best
            if best.get("epoch") is not None and (work / BEST_MODEL).is_file():
                best_state = load_state(work / BEST_MODEL)
    last_epoch = min(config.epochs, config.stop_epoch or config.epochs)
    if start_epoch > last_epoch:
        name = checkpoint.name if checkpoint is not None else "the run"
        raise InputError(
            f"The checkpoint '{name}' is already at epoch {start_epoch - 1}; give --epochs above that to train further."
        )
    minutes = config.minutes
    log_csv = CsvLog(work / LOG_CSV, trainer.log_columns, resume_epoch=start_epoch - 1)
    checkpoints: List[str] = []
    metrics: dict = {}
    epoch = start_epoch - 1
    for epoch in range(start_epoch, last_epoch + 1):
        watch = Stopwatch()
        lr = cosine_lr(config.lr, epoch, config.epochs)
        set_lr(optimizer, lr)
        rng = epoch_rng(config.seed, epoch)
        epoch_torch_seed(config.seed, epoch)
        model.train()

        def tick(fraction: float, epoch=epoch) -> None:
            progress("training", ((epoch - 1) + min(1.0, fraction)) / config.epochs, f"epoch {epoch}/{config.epochs}")

        row = {"epoch": epoch, "lr": lr}
        row.update(trainer.train_epoch(model, optimizer, epoch, rng, tick))
        row.update(trainer.validate(model))
        row["seconds"] = watch.seconds()
        log_csv.write(row)
        metrics = row
        score = row.get("val_score")
        if score is not None and np.isfinite(score) and (best.get("score") is None or score > best["score"]):
            best = {"epoch": epoch, "score": float(score)}
            best_state = copy_state(model)
            save_state(work / BEST_MODEL, best_state, {"epoch": epoch, "score": float(score)})
            if trainer.on_best is not None:
                trainer.on_best(model, row)
        log(f"epoch {epoch}/{config.epochs}: {trainer.describe(row)} ({row['seconds']:.1f} s)")
        out_of_time = minutes is not None and clock.seconds() > minutes * 60
        if epoch % max(1, config.checkpoint_every) == 0 or epoch == last_epoch or out_of_time:
            path = save_checkpoint(work / CHECKPOINT_DIR / f"epoch_{epoch:04d}.safetensors", model, optimizer, epoch,
                                   dict(trainer.run_info, kind=trainer.kind, best=best))
            checkpoints.append(str(path))
        if out_of_time:
            log(f"  the time budget of {minutes} min is used up after epoch {epoch}")
            break

    use_best = config.select == "best" and best_state is not None
    if use_best:
        model.load_state_dict(best_state)
    selected_epoch = best["epoch"] if use_best else epoch
    selected = metrics
    if use_best and best["epoch"] != epoch:
        selected = trainer.validate(model)
    return LoopResult(selected_epoch, use_best, selected, metrics, checkpoints, clock.seconds())
