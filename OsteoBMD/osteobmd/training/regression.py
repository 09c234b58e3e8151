"""`osteobmd train regression`: DenseNet-121 from trabecular patches to BMD (METHOD 3.6).

Samples: `patches.extract_patch` on the ground-truth label map, as the pipeline calls it,
at each vertebra's centre and at a few jittered centres (dataset.py); patches the
pipeline would flag (not inside trabecular bone, metal) are left out. Target: the
reference BMD of the vertebra (bmd.csv), learned as (bmd - offset) / scale with an MSE
loss; the offset and scale live in the model, whose forward returns mg/cm3.
Validation on the validation cases' centre patches (the ones the pipeline measures):
MAE, RMSE, bias, Pearson r in mg/cm3, and the share of vertebrae put in the right ACR
class. The final weights are the epoch with the lowest validation MAE (or the last).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..config import PatchConfig, SegmentationConfig, classify_bmd
from ..errors import InputError
from ..networks import BMDRegressor, count_parameters
from ..networks.densenet import DEFAULT_TARGET_OFFSET, DEFAULT_TARGET_SCALE
from ..progress import ProgressCallback, silent
from .augment import RegAugmentConfig, augment_patches
from .common import LogFn, seed_everything, stderr_log
from .loop import (
    LoopConfig, Trainer, optimizer_step, run_loop, start_run, trained_meta, training_record, write_weights,
)
from .dataset import RegressionSamples, data_record, ground_truth_split, load_regression_samples

WORK_DIR = "training_regression"


@dataclass
class RegressionTrainConfig(LoopConfig):
    batch_size: int = 32
    weight_decay: float = 1e-4
    # DenseNet-121: 4 dense blocks of 6/12/24/16 layers, growth rate 32, 64 initial features.
    init_features: int = 64
    growth_rate: int = 32
    block_config: Tuple[int, ...] = (6, 12, 24, 16)
    dropout_prob: float = 0.0
    target_offset: float = DEFAULT_TARGET_OFFSET
    target_scale: float = DEFAULT_TARGET_SCALE
    val_fraction: float = 0.2
    # Extra patches per vertebra at jittered centres (+-3 mm in plane, +-4 mm along the spine).
    jitter: int = 8
    keep_flagged: bool = False
    augment: RegAugmentConfig = field(default_factory=RegAugmentConfig)


def _predict(model, x01: np.ndarray, device, batch: int = 256) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for s in range(0, len(x01), batch):
            out.append(model(torch.from_numpy(np.ascontiguousarray(x01[s:s + batch])).to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def validate(model, val: RegressionSamples, device) -> dict:
    if len(val) == 0:
        return {}
    model.eval()
    centre = val.subset(val.jitter == 0)
    if len(centre) == 0:
        centre = val
    pred = _predict(model, centre.x01, device)
    ref = centre.bmd.astype(np.float64)
    err = pred - ref
    scale = float(model.target_scale)
    out = {
        "val_loss": float(np.mean((err / scale) ** 2)),
        "val_mae": float(np.mean(np.abs(err))),
        "val_rmse": float(np.sqrt(np.mean(err ** 2))),
        "val_bias": float(np.mean(err)),
        "val_r": float(np.corrcoef(pred, ref)[0, 1]) if len(ref) > 2 and np.std(ref) > 0 and np.std(pred) > 0 else float("nan"),
        "val_class_agreement": float(np.mean([classify_bmd(p) == classify_bmd(r) for p, r in zip(pred, ref)])),
        "val_n": int(len(ref)),
    }
    out["val_score"] = -out["val_mae"]
    return out


LOG_COLUMNS = ["epoch", "lr", "train_loss", "train_mae", "val_loss", "val_mae", "val_rmse", "val_bias", "val_r",
               "val_class_agreement", "val_n", "val_score", "seconds"]


def train_regression(
    data_dir, out_dir=None, config: Optional[RegressionTrainConfig] = None, patch_cfg: Optional[PatchConfig] = None,
    window: Optional[SegmentationConfig] = None, device="auto", resume=None, log: LogFn = stderr_log,
    progress: ProgressCallback = silent,
) -> dict:
    """Train the DenseNet-121 BMD regressor; writes the weights, log and checkpoints.

    Returns {"weights", "log", "checkpoints", "metrics", "selected_epoch", "meta"}. With
    `resume` the run's stored settings are used and only `config.epochs` is taken.
    """
    from ..weights import REGRESSION_FILE

    run = start_run(out_dir, WORK_DIR, "regression", config or RegressionTrainConfig(), resume, device, 2)
    config, work, torch_device, clock = run.config, run.work, run.device, run.clock
    stored = run.preprocessing or {}
    patch_cfg = PatchConfig(**stored["patch"]) if stored else (patch_cfg or PatchConfig())
    window = SegmentationConfig(**stored["window"]) if stored else (window or SegmentationConfig())

    _, train_cases, val_cases = ground_truth_split(data_dir, config.val_fraction, config.seed, need_bmd=True)
    log(f"regression training: {len(train_cases)} training and {len(val_cases)} validation cases; cutting patches")
    progress("training", 0.0, "cutting patches")
    cache = work / "cache"
    train = load_regression_samples(train_cases, patch_cfg, window, config.jitter, config.seed,
                                    config.keep_flagged, cache, log)
    val = load_regression_samples(val_cases, patch_cfg, window, 0, config.seed, config.keep_flagged, cache, log)
    if len(train) < 2:
        raise InputError(
            f"Fewer than two usable training patches in '{data_dir}': check that the cases have bmd.csv and "
            "label maps whose vertebral bodies hold a cortex-free 32x32 patch."
        )
    log(f"  {len(train)} training patches, {len(val)} validation patches "
        f"({train.flagged + val.flagged} flagged patches left out); prepared in {clock.seconds():.1f} s")

    seed_everything(config.seed)
    model = BMDRegressor(
        in_channels=3, init_features=config.init_features, growth_rate=config.growth_rate,
        block_config=config.block_config, dropout_prob=config.dropout_prob,
        target_offset=config.target_offset, target_scale=config.target_scale,
    ).to(torch_device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    log(f"  DenseNet (blocks {list(config.block_config)}, growth {config.growth_rate}, "
        f"{config.init_features} initial features): {count_parameters(model) / 1e6:.2f} M parameters; "
        f"device {torch_device}")
    targets = torch.from_numpy(train.bmd.astype(np.float32))

    def train_epoch(model, optimizer, epoch, rng, tick) -> dict:
        order = rng.permutation(len(train))
        total_loss = total_abs = 0.0
        n_seen = 0
        for b in range(0, len(order), config.batch_size):
            idx = order[b:b + config.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs more than one sample
            x = torch.from_numpy(augment_patches(train.x01[idx], rng, config.augment)).to(torch_device)
            y = targets[idx].to(torch_device)
            out = model.forward_scaled(x)
            (loss,) = optimizer_step(optimizer, [F.mse_loss(out, model.scale_target(y))])
            with torch.no_grad():
                total_loss += loss * len(idx)
                total_abs += float((out * model.target_scale + model.target_offset - y).abs().sum())
            n_seen += len(idx)
            tick((b + len(idx)) / len(order))
        return {"train_loss": total_loss / max(n_seen, 1), "train_mae": total_abs / max(n_seen, 1)}

    def describe(row: dict) -> str:
        val_text = (f", val MAE {row['val_mae']:.1f} mg/cm3, r {row['val_r']:.3f}") if "val_mae" in row else ""
        return f"loss {row['train_loss']:.4f} (MAE {row['train_mae']:.1f} mg/cm3){val_text}"

    trainer = Trainer(
        kind="regression", work=work, log_columns=LOG_COLUMNS, train_epoch=train_epoch,
        validate=lambda m: validate(m, val, torch_device), describe=describe,
        run_info={"config": config.to_dict(), "preprocessing": {"patch": asdict(patch_cfg), "window": asdict(window)}},
    )
    result = run_loop(model, optimizer, config, trainer, run.checkpoint, log, progress)
    # The loop left the selected epoch's state in the model.
    preprocessing = {
        **{k: getattr(patch_cfg, k) for k in ("size_px", "spacing_mm", "slice_step_mm")},
        **{k: getattr(window, k) for k in ("window_level", "window_width")},
        "patch": asdict(patch_cfg),
        "input": "(N, 3, size_px, size_px) patches.extract_patch(...).x01: slices below/centre/above, "
                 "fixed window to [0, 1] in 1/255 steps",
    }
    training = training_record(
        config, result, "lowest validation MAE", "MSE on (bmd - offset) / scale",
        data_record(data_dir, train_cases, val_cases, patches_train=len(train), patches_val=len(val),
                    patches_flagged_left_out=train.flagged + val.flagged),
        torch_device, clock.seconds())
    target = {"unit": "mg/cm3", "offset": float(model.target_offset), "scale": float(model.target_scale),
              "note": "the module's forward returns mg/cm3; the network learns (bmd - offset) / scale"}
    meta = trained_meta("regression", preprocessing, training, target=target)
    return write_weights(model, run.out_dir / REGRESSION_FILE, meta, result, work, "regression", log, progress)
