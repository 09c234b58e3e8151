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

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..networks import R2UNet, count_parameters
from ..synthetic.sagittal_phantom import BODY, CLASSES, SACRUM, make_sagittal_phantom
from .common import (
    CHECKPOINT_DIR, LOG_CSV, CsvLog, LogFn, Stopwatch, cosine_lr, epoch_rng, epoch_torch_seed, find_checkpoint,
    load_checkpoint, read_checkpoint_info, run_summary, save_checkpoint, seed_everything, set_lr, stderr_log,
    utc_now,
)

FINDER_FILE = "vertebra_finder_r2unet.safetensors"
WORK_DIR = "training_finder"
NUM_CLASSES = len(CLASSES)
VAL_STREAM = 7_000_001  # validation phantoms: seeds from a stream training never draws
MIN_COMPONENT_PX = 12  # smaller predicted islands are not counted as bodies


@dataclass
class FinderTrainConfig:
    epochs: int = 20
    steps_per_epoch: int = 40
    batch_size: int = 6
    lr: float = 2e-3
    weight_decay: float = 1e-5
    seed: int = 0
    widths: Tuple[int, ...] = (16, 32, 64, 128, 256)
    t: int = 2
    spacing_mm: float = 2.0
    tile: Tuple[int, int] = (160, 160)
    val_images: int = 32
    dice_weight: float = 1.0
    minutes: Optional[float] = None  # stop after the epoch that passes this wall-clock budget

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"], d["tile"] = list(self.widths), list(self.tile)
        return d

    @staticmethod
    def from_dict(d: dict) -> "FinderTrainConfig":
        names = {f.name for f in fields(FinderTrainConfig)}
        kw = {k: v for k, v in d.items() if k in names}
        for key in ("widths", "tile"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return FinderTrainConfig(**kw)


def finder_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0):
    ce = F.cross_entropy(logits, target)
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2.0 * inter + 1.0) / (denom + 1.0)
    dice_loss = 1.0 - dice[1:].mean()
    return ce + dice_weight * dice_loss, ce, dice_loss


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
        ph = make_sagittal_phantom(rng, cfg.spacing_mm)
        x, y = _tile(ph.image01, ph.labels, cfg.tile, rng)
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))


def validation_set(cfg: FinderTrainConfig) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Fixed phantoms at full size, padded to the network's multiple (as the pipeline pads)."""
    out = []
    m = 2 ** (len(cfg.widths) - 1)
    for i in range(cfg.val_images):
        ph = make_sagittal_phantom(np.random.default_rng([VAL_STREAM, int(cfg.seed), i]), cfg.spacing_mm)
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


COLUMNS = ["epoch", "lr", "train_loss", "train_ce", "train_dice_loss", "val_dice_body", "val_dice_sacrum",
           "val_count_ok", "val_score", "seconds", "wall_utc"]


def finder_metadata(cfg: FinderTrainConfig, summary: dict) -> dict:
    return {
        "kind": "segmentation",
        "task": "vertebra_finder",
        "trained": True,
        "classes": dict(CLASSES),
        "labels": {str(v): k for k, v in CLASSES.items()},
        "preprocessing": {"window_level": 350.0, "window_width": 1000.0, "spacing_mm": cfg.spacing_mm,
                          "crop_size": None, "pad_multiple": 2 ** (len(cfg.widths) - 1)},
        "training": summary,
    }


def train_finder(out_dir: Path, cfg: FinderTrainConfig, device="cpu", resume: Optional[Path] = None,
                 log: LogFn = stderr_log) -> dict:
    from ..weights import save_model

    out_dir = Path(out_dir)
    work = out_dir / WORK_DIR
    ckpt_dir = work / CHECKPOINT_DIR
    device = torch.device(device)
    start_epoch, best, best_epoch = 0, -1.0, 0
    if resume is not None:
        path = find_checkpoint(resume)
        info = read_checkpoint_info(path)
        cfg = FinderTrainConfig.from_dict({**info["config"], "epochs": cfg.epochs, "minutes": cfg.minutes})
    seed_everything(cfg.seed)
    model = R2UNet(1, NUM_CLASSES, cfg.widths, cfg.t).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elapsed0 = 0.0
    if resume is not None:
        info = load_checkpoint(path, model, opt)
        start_epoch, best, best_epoch = info["epoch"], info["best_score"], info["best_epoch"]
        elapsed0 = float(info.get("seconds", 0.0))
        log(f"resumed from {path.name} (epoch {start_epoch})")
    csv = CsvLog(work / LOG_CSV, COLUMNS, start_epoch)
    val = validation_set(cfg)
    log(f"finder: R2U-Net widths {list(cfg.widths)}, {count_parameters(model) / 1e6:.2f} M parameters, "
        f"{cfg.steps_per_epoch} steps x {cfg.batch_size} per epoch, {len(val)} validation phantoms")
    clock = Stopwatch()
    last = {}
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        lr = float(cosine_lr(cfg.lr, epoch, cfg.epochs))
        set_lr(opt, lr)
        epoch_torch_seed(cfg.seed, epoch)
        model.train()
        totals = np.zeros(3)
        for step in range(cfg.steps_per_epoch):
            x, y = training_batch(cfg, epoch, step)
            opt.zero_grad(set_to_none=True)
            loss, ce, dl = finder_loss(model(x.to(device)), y.to(device), cfg.dice_weight)
            loss.backward()
            opt.step()
            totals += [loss.item(), ce.item(), dl.item()]
        row = {"epoch": epoch, "lr": lr}
        row.update(zip(("train_loss", "train_ce", "train_dice_loss"), totals / cfg.steps_per_epoch))
        row.update(validate(model, val, device))
        seconds = elapsed0 + clock.seconds()
        row.update(seconds=round(seconds, 1), wall_utc=utc_now())
        csv.write(row)
        last = row
        improved = row["val_score"] > best
        if improved:
            best, best_epoch = row["val_score"], epoch
            summary = run_summary_finder(cfg, best_epoch, row, seconds, device)
            save_model(model, out_dir / FINDER_FILE, finder_metadata(cfg, summary), dtype=torch.float16)
        save_checkpoint(ckpt_dir / f"epoch_{epoch:04d}.safetensors", model, opt, epoch,
                        {"config": cfg.to_dict(), "best_score": best, "best_epoch": best_epoch,
                         "seconds": seconds})
        log(f"epoch {epoch}/{cfg.epochs} loss {row['train_loss']:.4f} val Dice body {row['val_dice_body']:.3f} "
            f"sacrum {row['val_dice_sacrum']:.3f} count ok {row['val_count_ok']:.2f} "
            f"{'(best) ' if improved else ''}{seconds / 60:.1f} min")
        if cfg.minutes is not None and seconds > cfg.minutes * 60:
            log(f"time budget of {cfg.minutes} min reached after epoch {epoch}")
            break
    return {"weights": str(out_dir / FINDER_FILE), "log": str(work / LOG_CSV), "selected_epoch": best_epoch,
            "best_score": best, "last": last}


def run_summary_finder(cfg, best_epoch, row, seconds, device) -> dict:
    import platform

    return {
        "data": "synthetic.sagittal_phantom, generated on the fly (no fixed data set)",
        "selected_epoch": best_epoch,
        "selection": "best val_score = mean(val Dice body, val Dice sacrum, share of right body counts)",
        "config": cfg.to_dict(),
        "metrics": {k: v for k, v in row.items() if k.startswith("val_")},
        "device": str(device), "torch": torch.__version__, "platform": platform.platform(terse=True),
        "seconds": round(seconds, 1), "date": utc_now(),
    }
