"""`osteobmd train segmentation`: R2U-Net on sagittal slab slices (METHOD 2).

Loss: softmax cross-entropy + soft Dice over the four vertebra classes (METHOD
Decision). Samples: the pipeline's own sagittal preprocessing of the canal slab
(dataset.py), augmented into fixed-size tiles with limited superior-inferior views
(augment.py). Validation, every epoch, on the validation cases' central slab slices at
full size without augmentation: per-vertebra Dice of the fused slab (as the pipeline
fuses it), the share of valid cases (all four Dice > 0.5, the paper's rule), and Dice
on limited views (only L1-L3 or only L2-L4 visible), the failure the augmentation
targets. The final weights are the best validation epoch's (or the last epoch's with
`select="last"` or without validation cases).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ANCHOR_CLASSES, VERTEBRA_NAMES, CanalConfig, SegmentationConfig
from ..errors import InputError
from ..networks import DEFAULT_WIDTHS, R2UNet, count_parameters
from ..progress import ProgressCallback, silent
from .augment import SegAugmentConfig, augment_segmentation, label_row_extents
from .common import LogFn, seed_everything, stderr_log
from .loop import (
    LoopConfig, Trainer, optimizer_step, run_loop, start_run, trained_meta, training_record, write_weights,
)
from .dataset import SegmentationSamples, data_record, ground_truth_split, load_segmentation_samples

NUM_CLASSES = 5  # background + L1..L4: the classes the metrics are about
# The earlier design's network, which names L1-L4 itself. The pipeline no longer uses such
# weights (it counts levels from the sacrum and ribs, on the vertebra finder's bodies); this
# trainer stays for reproducing that design's results, under its own file name.
LEVEL_NETWORK_FILE = "segmentation_r2unet.safetensors"
# With anchors the network also segments L5, the sacrum and T12 (config.ANCHOR_CLASSES),
# so the pipeline can check the level names against them.
NUM_CLASSES_WITH_ANCHORS = 1 + len(VERTEBRA_NAMES) + len(ANCHOR_CLASSES)
WORK_DIR = "training_segmentation"
SAGITTAL_INPUT = "sagittal slab slices s[z, y] of canal.detect_canal, windowed to [0, 1] (sagittal.prepare_for_network)"


@dataclass
class SegmentationTrainConfig(LoopConfig):
    widths: Tuple[int, ...] = DEFAULT_WIDTHS
    t: int = 2
    val_fraction: float = 0.2
    # Training tiles per epoch; None: one per training slice (at least 4 batches).
    samples_per_epoch: Optional[int] = None
    tile_size: int = 192
    # Central slab slices per validation case (fused as the pipeline fuses the slab).
    val_slices: int = 3
    dice_weight: float = 1.0
    # Train the anchor classes too when every case has a levels map.
    anchors: bool = True
    augment: SegAugmentConfig = field(default_factory=SegAugmentConfig)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0):
    """(total, cross-entropy, dice loss): CE + (1 - mean soft Dice of classes 1..C-1)."""
    ce = F.cross_entropy(logits, target)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2.0 * inter + 1.0) / (denom + 1.0)
    dice_loss = 1.0 - dice[1:].mean()
    return ce + dice_weight * dice_loss, ce, dice_loss


def _counts(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(4, 3) TP, FP, FN per vertebra label."""
    out = np.zeros((NUM_CLASSES - 1, 3), np.int64)
    for c in range(1, NUM_CLASSES):
        p, r = pred == c, ref == c
        out[c - 1] = (np.count_nonzero(p & r), np.count_nonzero(p & ~r), np.count_nonzero(~p & r))
    return out


def _dice(counts: np.ndarray) -> np.ndarray:
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)


def _central(n: int, k: int) -> List[int]:
    k = max(1, min(n, k))
    first = (n - k) // 2
    return list(range(first, first + k))


def _view_window(labels: np.ndarray, keep: Sequence[int]) -> Optional[Tuple[int, int]]:
    """Rows of a view that shows only the vertebrae `keep` (+ a quarter pitch)."""
    ext = label_row_extents(labels)
    if not all(v in ext for v in keep):
        return None
    lo = min(ext[v][0] for v in keep)
    hi = max(ext[v][1] for v in keep) + 1
    m = int(round(0.25 * (hi - lo) / len(keep)))
    return max(0, lo - m), min(labels.shape[0], hi + m)


def _predict(model, image: np.ndarray, device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None].to(device)
    return model(x)[0]


def validate(model, samples: Sequence[SegmentationSamples], cfg: SegmentationTrainConfig, device) -> dict:
    """Validation metrics (see the module docstring)."""
    if not samples:
        return {}
    model.eval()
    full = np.zeros((NUM_CLASSES - 1, 3), np.int64)
    view = np.zeros((NUM_CLASSES - 1, 3), np.int64)
    losses, valid = [], []
    with torch.inference_mode():
        for case in samples:
            idx = _central(len(case.images), cfg.val_slices)
            probs = None
            for i in idx:
                logits = _predict(model, case.images[i], device)
                target = torch.from_numpy(case.labels[i].astype(np.int64))[None].to(device)
                losses.append(float(segmentation_loss(logits[None], target, cfg.dice_weight)[0]))
                p = torch.softmax(logits.float(), dim=0)
                probs = p if probs is None else probs + p
            fused = torch.argmax(probs, dim=0).cpu().numpy()
            case_counts = sum(_counts(fused, case.labels[i]) for i in idx)
            full += case_counts
            d = _dice(case_counts)
            valid.append(bool(np.all(np.nan_to_num(d, nan=0.0) > 0.5)))
            # Limited views: the scan shows only L1-L3, or only L2-L4.
            centre = case.images[idx[len(idx) // 2]]
            lab = case.labels[idx[len(idx) // 2]]
            for keep in ((1, 2, 3), (2, 3, 4)):
                rows = _view_window(lab, keep)
                if rows is None:
                    continue
                img = np.zeros_like(centre)
                ref = np.zeros_like(lab)
                img[rows[0]:rows[1]] = centre[rows[0]:rows[1]]
                ref[rows[0]:rows[1]] = lab[rows[0]:rows[1]]
                pred = torch.argmax(_predict(model, img, device), dim=0).cpu().numpy()
                view += _counts(pred, ref)
    dice = _dice(full)
    out = {"val_loss": float(np.mean(losses))}
    for name, d in zip(VERTEBRA_NAMES, dice):
        out[f"val_dice_{name}"] = float(d)
    out["val_dice_mean"] = float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")
    vd = _dice(view)
    out["val_view_dice_mean"] = float(np.nanmean(vd)) if np.isfinite(vd).any() else float("nan")
    out["val_valid_share"] = float(np.mean(valid))
    scores = [v for v in (out["val_dice_mean"], out["val_view_dice_mean"]) if np.isfinite(v)]
    out["val_score"] = float(np.mean(scores)) if scores else float("nan")
    return out


LOG_COLUMNS = [
    "epoch", "lr", "train_loss", "train_ce", "train_dice_loss", "val_loss",
    *[f"val_dice_{n}" for n in VERTEBRA_NAMES], "val_dice_mean", "val_view_dice_mean", "val_valid_share",
    "val_score", "seconds",
]


def _epoch_plan(samples: Sequence[SegmentationSamples], n: int, rng: np.random.Generator) -> List[Tuple[int, int]]:
    """(case, slice) pairs of one epoch: every slice once per pass, shuffled."""
    pairs = [(c, s) for c, case in enumerate(samples) for s in range(len(case.images))]
    plan: List[Tuple[int, int]] = []
    while len(plan) < n:
        plan.extend(pairs[i] for i in rng.permutation(len(pairs)))
    return plan[:n]


def train_segmentation(
    data_dir, out_dir=None, config: Optional[SegmentationTrainConfig] = None,
    seg_cfg: Optional[SegmentationConfig] = None, canal_cfg: Optional[CanalConfig] = None, device="auto",
    resume=None, log: LogFn = stderr_log, progress: ProgressCallback = silent,
) -> dict:
    """Train R2U-Net on a ground-truth folder; writes the weights, log and checkpoints.

    Returns a summary: {"weights": path, "log": path, "checkpoints": [...], "metrics": {...}}.
    With `resume` (a checkpoint file or its folder) the run's stored settings are used
    and only `config.epochs` (the new total) is taken from `config`.
    """

    run = start_run(out_dir, WORK_DIR, "segmentation", config or SegmentationTrainConfig(), resume, device, 1)
    config, work, torch_device, clock = run.config, run.work, run.device, run.clock
    stored = run.preprocessing or {}
    seg_cfg = SegmentationConfig(**stored["segmentation"]) if stored else (seg_cfg or SegmentationConfig())
    canal_cfg = CanalConfig(**stored["canal"]) if stored else (canal_cfg or CanalConfig())

    cases, train_cases, val_cases = ground_truth_split(data_dir, config.val_fraction, config.seed)
    multiple = 2 ** (len(config.widths) - 1)
    tile = int(np.ceil(config.tile_size / multiple) * multiple)
    aug = config.augment
    aug.tile = (tile, tile)
    log(f"segmentation training: {len(train_cases)} training and {len(val_cases)} validation cases; preparing samples")
    progress("training", 0.0, "preparing samples")
    cache = work / "cache"
    if config.anchors and not all(c.levels_path is not None for c in cases):
        log("  not every case has levels.nrrd: training L1-L4 only, without the anchor classes")
        config.anchors = False
    num_classes = NUM_CLASSES_WITH_ANCHORS if config.anchors else NUM_CLASSES
    train = load_segmentation_samples(train_cases, seg_cfg, canal_cfg, multiple, cache, log, config.anchors)
    val = load_segmentation_samples(val_cases, seg_cfg, canal_cfg, multiple, cache, log, config.anchors)
    if not train:
        raise InputError(f"No training sample could be made from '{data_dir}': no case has labels on its sagittal slab.")
    n_slices = sum(len(s.images) for s in train)
    per_epoch = config.samples_per_epoch or max(n_slices, 4 * config.batch_size)
    sources = {k: sum(s.slab_source == k for s in train + val) for k in ("canal", "labels")}
    log(f"  {n_slices} training slices, {sum(len(s.images) for s in val)} validation slices "
        f"(slab from the canal in {sources['canal']} cases, from the labels in {sources['labels']}); "
        f"prepared in {clock.seconds():.1f} s")

    seed_everything(config.seed)
    model = R2UNet(1, num_classes, config.widths, config.t).to(torch_device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    log(f"  R2U-Net widths {list(config.widths)}, t={config.t}: {count_parameters(model) / 1e6:.2f} M parameters; "
        f"device {torch_device}; {per_epoch} tiles of {tile}x{tile} per epoch")

    def train_epoch(model, optimizer, epoch, rng, tick) -> dict:
        plan = _epoch_plan(train, per_epoch, rng)
        totals = np.zeros(3)
        n_batches = 0
        for b in range(0, len(plan), config.batch_size):
            chunk = plan[b:b + config.batch_size]
            if len(chunk) < 2 and len(plan) > 1:
                continue  # BatchNorm needs more than one sample
            xs, ys = [], []
            for c, s in chunk:
                x, y = augment_segmentation(train[c].images[s], train[c].labels[s], train[c].content, rng, aug)
                xs.append(x)
                ys.append(y)
            x = torch.from_numpy(np.stack(xs)[:, None]).to(torch_device)
            y = torch.from_numpy(np.stack(ys).astype(np.int64)).to(torch_device)
            totals += optimizer_step(optimizer, segmentation_loss(model(x), y, config.dice_weight))
            n_batches += 1
            tick((b + len(chunk)) / len(plan))
        return dict(zip(("train_loss", "train_ce", "train_dice_loss"), totals / max(n_batches, 1)))

    def describe(row: dict) -> str:
        val_text = (f", val Dice {row['val_dice_mean']:.3f} (limited view {row['val_view_dice_mean']:.3f}), "
                    f"valid {row['val_valid_share'] * 100:.0f}%") if "val_dice_mean" in row else ""
        return f"loss {row['train_loss']:.4f}{val_text}"

    trainer = Trainer(
        kind="segmentation", work=work, log_columns=LOG_COLUMNS, train_epoch=train_epoch,
        validate=lambda m: validate(m, val, config, torch_device), describe=describe,
        run_info={"config": config.to_dict(),
                  "preprocessing": {"segmentation": asdict(seg_cfg), "canal": asdict(canal_cfg)}},
    )
    result = run_loop(model, optimizer, config, trainer, run.checkpoint, log, progress)
    # The loop left the selected epoch's state in the model.
    preprocessing = {**asdict(seg_cfg), "pad_multiple": multiple, "input": SAGITTAL_INPUT, "canal": asdict(canal_cfg)}
    training = training_record(
        config, result, "best validation score (mean of full-view and limited-view Dice)",
        "softmax cross-entropy + soft Dice (L1..L4)",
        data_record(data_dir, train_cases, val_cases, slices_train=n_slices, slab_source=sources),
        torch_device, clock.seconds())
    labels = {"0": "background", **{str(i + 1): n for i, n in enumerate(VERTEBRA_NAMES)},
              **({str(v): k for k, v in ANCHOR_CLASSES.items()} if config.anchors else {})}
    meta = trained_meta("segmentation", preprocessing, training, labels=labels,
                        output=f"logits (N, {num_classes}, H, W); softmax over the classes")
    return write_weights(model, run.out_dir / LEVEL_NETWORK_FILE, meta, result, work, "segmentation", log, progress)
