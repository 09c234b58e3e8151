"""`osteobmd train finder`: the vertebra finder R2U-Net on generated sagittal phantoms.

The finder only finds: 0 background, 1 vertebral body (any level), 2 sacrum; naming is
explicit code (issue 7). Every training image is new (`synthetic.sagittal_phantom`,
seeded by (seed, epoch, step, item)), so there is no fixed data set and no over-fitting
to it; validation is a fixed set of phantoms from another seed stream. An "epoch" is a
fixed number of optimiser steps. Loss: cross-entropy + soft Dice of classes 1 and 2.
Selection: the best validation score (mean of body Dice, sacrum Dice and the share of
images whose body count is right).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from scipy import ndimage

from ..networks import R2UNet, count_parameters
from ..synthetic.sagittal_phantom import BODY, CLASSES, SACRUM, make_sagittal_phantom
from ..errors import InputError
from ..weights import FINDER_TASK, SEGMENTATION_FILE
from ..progress import ProgressCallback, silent
from .common import LogFn, recalibrate_batchnorm, seed_everything, stderr_log
from .loop import (
    LoopConfig, LoopResult, Trainer, optimizer_step, run_loop, start_run, trained_meta, training_record,
    write_weights,
)
from .segmentation import SAGITTAL_INPUT, segmentation_loss

FINDER_FILE = SEGMENTATION_FILE  # the file the pipeline loads
WORK_DIR = "training_finder"
NUM_CLASSES = len(CLASSES)
VAL_STREAM = 7_000_001  # validation phantoms: seeds from a stream training never draws
MIN_COMPONENT_PX = 12  # smaller predicted islands are not counted as bodies
RECALIBRATION_STEP = 1_000_000  # data seeds of the BatchNorm recalibration batches: (seed, epoch, this + k)
SELECTION = "best val_score = mean of validation Dice body, Dice sacrum and the share of right body counts"


@dataclass
class FinderTrainConfig(LoopConfig):
    epochs: int = 30
    steps_per_epoch: int = 40
    batch_size: int = 6
    lr: float = 2e-3
    widths: Tuple[int, ...] = (16, 32, 64, 128, 256)
    t: int = 2
    spacing_mm: float = 2.0
    tile: Tuple[int, int] = (160, 160)
    val_images: int = 32
    dice_weight: float = 1.0
    checkpoint_every: int = 1
    recalibration_batches: int = 4  # BatchNorm statistics recomputed after every epoch over this many batches
    phantom_sacrum: str = "segments"  # sagittal_phantom's sacrum style ("smooth": the first run's phantoms)


def _tile(image: np.ndarray, labels: np.ndarray, tile: Tuple[int, int], rng) -> Tuple[np.ndarray, np.ndarray]:
    """Crop (around a random labelled pixel when there is one) or zero-pad to `tile`."""
    out_x = np.zeros(tile, np.float32)
    out_y = np.zeros(tile, np.int64)
    fg = np.argwhere(labels > 0)
    src, dst = [], []
    for axis, (n, m) in enumerate(zip(image.shape, tile)):
        if n <= m:
            off = int(rng.integers(0, m - n + 1))
            src.append(slice(0, n))
            dst.append(slice(off, off + n))
        else:
            if len(fg) and rng.random() < 0.9:
                anchor = int(fg[rng.integers(len(fg)), axis])
                lo = int(np.clip(anchor - rng.integers(0, m), 0, n - m))
            else:
                lo = int(rng.integers(0, n - m + 1))
            src.append(slice(lo, lo + m))
            dst.append(slice(0, m))
    out_x[tuple(dst)] = image[tuple(src)]
    out_y[tuple(dst)] = labels[tuple(src)]
    return out_x, out_y


def training_batch(cfg: FinderTrainConfig, epoch: int, step: int) -> Tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng([int(cfg.seed), int(epoch), int(step)])
    xs, ys = [], []
    for _ in range(cfg.batch_size):
        ph = make_sagittal_phantom(rng, cfg.spacing_mm, sacrum=cfg.phantom_sacrum)
        x, y = _tile(ph.image01, ph.labels, cfg.tile, rng)
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))


def validation_set(cfg: FinderTrainConfig) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Fixed phantoms at full size, padded to the network's multiple (as the pipeline pads)."""
    out = []
    m = 2 ** (len(cfg.widths) - 1)
    for i in range(cfg.val_images):
        ph = make_sagittal_phantom(np.random.default_rng([VAL_STREAM, int(cfg.seed), i]), cfg.spacing_mm,
                                   sacrum=cfg.phantom_sacrum)
        shape = tuple(int(np.ceil(n / m) * m) for n in ph.image01.shape)
        x = np.zeros(shape, np.float32)
        y = np.zeros(shape, np.uint8)
        x[: ph.image01.shape[0], : ph.image01.shape[1]] = ph.image01
        y[: ph.labels.shape[0], : ph.labels.shape[1]] = ph.labels
        out.append((x, y))
    return out


def body_components(labels: np.ndarray, min_px: int = MIN_COMPONENT_PX) -> int:
    comps, n = ndimage.label(labels == BODY)
    if n == 0:
        return 0
    sizes = np.bincount(comps.ravel())[1:]
    return int((sizes >= min_px).sum())


def validate(model, val, device) -> dict:
    model.eval()
    inter = np.zeros(NUM_CLASSES)
    denom = np.zeros(NUM_CLASSES)
    count_ok = 0
    with torch.inference_mode():
        for x, y in val:
            pred = model(torch.from_numpy(x)[None, None].to(device)).argmax(dim=1)[0].cpu().numpy()
            for c in (BODY, SACRUM):
                inter[c] += np.sum((pred == c) & (y == c))
                denom[c] += np.sum(pred == c) + np.sum(y == c)
            count_ok += body_components(pred) == body_components(y)
    dice = 2 * inter / np.maximum(denom, 1)
    out = {"val_dice_body": float(dice[BODY]), "val_dice_sacrum": float(dice[SACRUM]),
           "val_count_ok": count_ok / max(len(val), 1)}
    out["val_score"] = float(np.mean([out["val_dice_body"], out["val_dice_sacrum"], out["val_count_ok"]]))
    return out


LOG_COLUMNS = ["epoch", "lr", "train_loss", "train_ce", "train_dice_loss", "val_dice_body", "val_dice_sacrum",
               "val_count_ok", "val_score", "seconds"]


def finder_metadata(cfg: FinderTrainConfig, training: dict) -> dict:
    """The weights' metadata: what the pipeline reads (preprocessing) and the class contract."""
    preprocessing = {"window_level": 350.0, "window_width": 1000.0, "spacing_mm": cfg.spacing_mm, "crop_size": None,
                     "pad_multiple": 2 ** (len(cfg.widths) - 1), "input": SAGITTAL_INPUT}
    return trained_meta("segmentation", preprocessing, training, task=FINDER_TASK, classes=dict(CLASSES),
                        labels={str(v): k for k, v in CLASSES.items()},
                        output=f"logits (N, {NUM_CLASSES}, H, W); softmax over the classes")


def train_finder(out_dir, config: Optional[FinderTrainConfig] = None, device="cpu", resume=None,
                 log: LogFn = stderr_log, progress: ProgressCallback = silent) -> dict:
    """Train the finder on generated phantoms; writes the weights (at every new best), log and checkpoints.

    With `resume` (a checkpoint file or its folder) the run's stored settings are used;
    only epochs, stop_epoch and minutes are taken from `config`.
    """
    from ..weights import save_model

    run = start_run(out_dir, WORK_DIR, "finder", config or FinderTrainConfig(), resume, device, 2,
                    keep=("epochs", "stop_epoch", "minutes", "phantom_sacrum"))
    config, work, torch_device, out_dir = run.config, run.work, run.device, run.out_dir
    # A run resumed on other phantoms validates on other phantoms: its earlier scores do not compare.
    new_phantoms = run.stored_config is not None and \
        run.stored_config.get("phantom_sacrum", "smooth") != config.phantom_sacrum
    if config.steps_per_epoch < 1:
        raise InputError("--steps-per-epoch must be at least 1.")
    seed_everything(config.seed)
    model = R2UNet(1, NUM_CLASSES, config.widths, config.t).to(torch_device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    val = validation_set(config)
    log(f"finder training: R2U-Net widths {list(config.widths)}, t={config.t}: "
        f"{count_parameters(model) / 1e6:.2f} M parameters; {config.steps_per_epoch} steps of "
        f"{config.batch_size} phantoms ({config.tile[0]}x{config.tile[1]} px at {config.spacing_mm} mm) per epoch; "
        f"{len(val)} validation phantoms; device {torch_device}")

    def train_epoch(model, optimizer, epoch, rng, tick) -> dict:
        totals = np.zeros(3)
        for step in range(config.steps_per_epoch):
            x, y = training_batch(config, epoch, step)
            totals += optimizer_step(optimizer, segmentation_loss(model(x.to(torch_device)), y.to(torch_device),
                                                                  config.dice_weight))
            tick((step + 1) / config.steps_per_epoch)
        recalibrate_batchnorm(model, (training_batch(config, epoch, RECALIBRATION_STEP + k)[0].to(torch_device)
                                      for k in range(config.recalibration_batches)))
        return dict(zip(("train_loss", "train_ce", "train_dice_loss"), totals / config.steps_per_epoch))

    def describe(row: dict) -> str:
        return (f"loss {row['train_loss']:.4f}, val Dice body {row['val_dice_body']:.3f} sacrum "
                f"{row['val_dice_sacrum']:.3f}, body count right {row['val_count_ok'] * 100:.0f}%")

    clock = run.clock
    loss_name = "softmax cross-entropy + soft Dice (body, sacrum)"

    def write_best(model, row) -> None:  # at every new best, so a long run always has usable weights
        now = LoopResult(row["epoch"], True, row, row, [], clock.seconds())
        save_model(model, out_dir / FINDER_FILE,
                   finder_metadata(config, training_record(config, now, SELECTION, loss_name, data, torch_device,
                                                           clock.seconds())))

    data = (f"synthetic.sagittal_phantom (sacrum: {config.phantom_sacrum}) generated on the fly, seeds "
            f"(seed, epoch, step); validation: {config.val_images} phantoms of seed stream {VAL_STREAM}")
    trainer = Trainer(kind="finder", work=work, log_columns=LOG_COLUMNS, train_epoch=train_epoch,
                      validate=lambda m: validate(m, val, torch_device), describe=describe,
                      run_info={"config": config.to_dict()}, on_best=write_best)
    result = run_loop(model, optimizer, config, trainer, run.checkpoint, log, progress, fresh_validation=new_phantoms)
    meta = finder_metadata(config, training_record(config, result, SELECTION, loss_name, data, torch_device,
                                                   clock.seconds()))
    return write_weights(model, out_dir / FINDER_FILE, meta, result, work, "finder", log, progress)
