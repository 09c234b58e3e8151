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
    epoch_torch_seed, find_checkpoint, load_checkpoint, load_state, read_checkpoint_info, save_checkpoint,
    save_state, set_lr, stderr_log,
)

# train_epoch(model, optimizer, epoch, rng, tick) -> the epoch's train_* columns;
# tick(fraction) reports progress within the epoch.
TrainEpoch = Callable[[nn.Module, torch.optim.Optimizer, int, np.random.Generator, Callable[[float], None]], dict]


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


def run_loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config,
    trainer: Trainer,
    checkpoint: Optional[Path] = None,
    log: LogFn = stderr_log,
    progress: ProgressCallback = silent,
) -> LoopResult:
    """Train `model` for epochs up to `config.epochs` (or `config.stop_epoch`, or `config.minutes`).

    `config` gives epochs, lr, seed, checkpoint_every and select ("best" | "last"), and may
    give stop_epoch (stop early on the schedule planned for `epochs`) and minutes (stop
    after the epoch that passes this wall-clock budget, checkpointed).
    """
    clock = Stopwatch()
    work = Path(trainer.work)
    start_epoch = 1
    best: Dict[str, Optional[float]] = {"epoch": None, "score": None}
    best_state = None
    if checkpoint is not None:
        info = load_checkpoint(checkpoint, model, optimizer)
        start_epoch = int(info["epoch"]) + 1
        best = info.get("best") or best
        if best.get("epoch") is not None and (work / BEST_MODEL).is_file():
            best_state = load_state(work / BEST_MODEL)
        log(f"  resumed from {checkpoint.name} (epoch {info['epoch']})")
    last_epoch = min(config.epochs, getattr(config, "stop_epoch", None) or config.epochs)
    if start_epoch > last_epoch:
        name = checkpoint.name if checkpoint is not None else "the run"
        raise InputError(
            f"The checkpoint '{name}' is already at epoch {start_epoch - 1}; give --epochs above that to train further."
        )
    minutes = getattr(config, "minutes", None)
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
