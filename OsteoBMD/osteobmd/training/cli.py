"""`osteobmd train segmentation|regression DATA --out DIR ...`

Registered on the main parser by `add_cli(subparsers)`; each handler returns an exit
code (errors the user can fix are raised as OsteoBMDError for the main CLI to print).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import CanalConfig, PatchConfig, SegmentationConfig



def _widths(text: str):
    try:
        widths = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--widths takes comma-separated integers, e.g. 16,32,64,128,256; got {text!r}")
    if len(widths) < 2 or min(widths) < 1:
        raise argparse.ArgumentTypeError("--widths needs at least two positive channel counts")
    return widths


def _common(p: argparse.ArgumentParser, batch_size: int) -> None:
    p.add_argument("data", type=Path, help="ground-truth folder: one sub-folder per case (ct.nrrd, labels.nrrd, bmd.csv)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the weights (default: model_weights/); the log, checkpoints and sample cache "
                        "go into a training_* sub-folder")
    p.add_argument("--epochs", type=int, default=100, help="training epochs (with --resume: the new total)")
    p.add_argument("--batch-size", type=int, default=batch_size, help="samples per optimiser step")
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (Adam, cosine decay)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the sampling and the initial weights")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the cases kept for validation (a 'split' in case.json wins)")
    p.add_argument("--checkpoint-every", type=int, default=20, help="epochs between checkpoints (paper: 20)")
    _run_control(p, device="auto", device_help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")


def _run_control(p: argparse.ArgumentParser, device: str, device_help: str) -> None:
    """The arguments every trainer shares: which weights to keep, resume, device, threads, output."""
    p.add_argument("--select", choices=("best", "last"), default="best",
                   help="final weights: the best validation epoch or the last epoch")
    p.add_argument("--resume", type=Path, default=None,
                   help="continue from a checkpoint (file, or its folder: the newest); --epochs is the new total")
    p.add_argument("--device", default=device, help=device_help)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines on stderr")


def _prologue(args):
    import torch

    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    from .common import quiet_log, stderr_log

    return quiet_log if args.quiet else stderr_log


def _report(summary: dict) -> None:
    print(f"weights: {summary['weights']}")
    print(f"log: {summary['log']}")
    print(f"selected epoch: {summary['selected_epoch']}")
    if summary["metrics"]:
        print("validation: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                           for k, v in summary["metrics"].items()}))


def run_segmentation(args) -> int:
    from .segmentation import SegmentationTrainConfig, train_segmentation

    log = _prologue(args)
    cfg = SegmentationTrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, widths=args.widths, t=args.t,
        val_fraction=args.val_fraction, checkpoint_every=args.checkpoint_every,
        samples_per_epoch=args.samples_per_epoch, tile_size=args.tile_size, val_slices=args.val_slices,
        select=args.select,
    )
    seg_cfg = SegmentationConfig(spacing_mm=args.spacing_mm, crop_size=args.crop_size)
    summary = train_segmentation(args.data, args.out, cfg, seg_cfg, CanalConfig(), args.device, args.resume, log)
    _report(summary)
    return 0


def run_regression(args) -> int:
    from .regression import RegressionTrainConfig, train_regression

    log = _prologue(args)
    cfg = RegressionTrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        init_features=args.init_features, growth_rate=args.growth_rate, block_config=args.block_config,
        val_fraction=args.val_fraction, checkpoint_every=args.checkpoint_every, jitter=args.jitter,
        keep_flagged=args.keep_flagged, select=args.select,
    )
    patch_cfg = PatchConfig(spacing_mm=args.patch_spacing_mm)
    summary = train_regression(args.data, args.out, cfg, patch_cfg, SegmentationConfig(), args.device, args.resume, log)
    _report(summary)
    return 0


def _pair(text: str):
    try:
        a, b = (int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tile takes two integers, e.g. 160,160; got {text!r}") from None
    return a, b


def run_finder(args) -> int:
    from .finder import FinderTrainConfig, train_finder

    log = _prologue(args)
    cfg = FinderTrainConfig(
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, widths=args.widths, t=args.t, spacing_mm=args.spacing_mm, tile=args.tile,
        val_images=args.val_images, select=args.select, stop_epoch=args.stop_epoch, minutes=args.minutes,
        phantom_sacrum=args.phantom_sacrum,
    )
    summary = train_finder(args.out, cfg, args.device, args.resume, log)
    _report(summary)
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `train` with its `segmentation` and `regression` sub-commands."""
    train = subparsers.add_parser(
        "train", help="train a network: the vertebra finder (on generated phantoms), or the segmentation or regression network on a ground-truth folder",
        description="Train a network on a ground-truth folder (docs/DESIGN.md): DATA/<case>/ct.nrrd, labels.nrrd, "
                    "bmd.csv. Seeded and resumable; writes the weights with their metadata.",
    )
    kinds = train.add_subparsers(dest="train_kind", metavar="{segmentation,regression,finder}")
    kinds.required = True

    seg = kinds.add_parser("segmentation", help="R2U-Net on sagittal slab slices (labels.nrrd)")
    _common(seg, batch_size=8)
    seg.add_argument("--widths", type=_widths, default=(16, 32, 64, 128, 256),
                     help="R2U-Net channel widths per level (paper: 64,128,256,512,1024)")
    seg.add_argument("--t", type=int, default=2, help="recurrent time steps (paper: 2)")
    seg.add_argument("--tile-size", type=int, default=192, help="training tile side in pixels (at --spacing-mm)")
    seg.add_argument("--samples-per-epoch", type=int, default=None, help="default: one tile per training slice")
    seg.add_argument("--val-slices", type=int, default=3, help="central slab slices per validation case")
    seg.add_argument("--spacing-mm", type=float, default=SegmentationConfig().spacing_mm,
                     help="sagittal pixel spacing the network works at")
    seg.add_argument("--crop-size", type=int, default=None, help="512: the paper's centre crop / zero pad")
    seg.set_defaults(handler=run_segmentation, func=run_segmentation)

    reg = kinds.add_parser("regression", help="DenseNet-121 from trabecular patches to BMD (bmd.csv)")
    _common(reg, batch_size=32)
    reg.add_argument("--init-features", type=int, default=64, help="channels after the stem (DenseNet-121: 64)")
    reg.add_argument("--growth-rate", type=int, default=32, help="channels each dense layer adds (DenseNet-121: 32)")
    reg.add_argument("--block-config", type=_widths, default=(6, 12, 24, 16),
                     help="layers per dense block (DenseNet-121: 6,12,24,16)")
    reg.add_argument("--jitter", type=int, default=8, help="extra patches per vertebra at jittered centres")
    reg.add_argument("--keep-flagged", action="store_true",
                     help="also train on patches the pipeline flags (not inside trabecular bone, metal)")
    reg.add_argument("--patch-spacing-mm", type=float, default=PatchConfig().spacing_mm,
                     help="pixel spacing of the 32x32 trabecular patches (must match the pipeline's)")
    reg.set_defaults(handler=run_regression, func=run_regression)

    fin = kinds.add_parser(
        "finder", help="the vertebra finder R2U-Net (body / sacrum) on generated sagittal phantoms",
        description="Train the vertebra finder (0 background, 1 vertebral body, 2 sacrum) on sagittal phantoms "
                    "generated on the fly (synthetic.sagittal_phantom); no data folder. An epoch is "
                    "--steps-per-epoch optimiser steps; seeded and resumable.",
    )
    fin.add_argument("out", type=Path, help="folder for vertebra_finder_r2unet.safetensors (+ .json) and training_finder/")
    fin.add_argument("--epochs", type=int, default=30, help="epochs the cosine learning rate is planned for")
    fin.add_argument("--stop-epoch", type=int, default=None, help="stop after this epoch (of the --epochs schedule)")
    fin.add_argument("--minutes", type=float, default=None, help="stop after the epoch that passes this time budget")
    fin.add_argument("--steps-per-epoch", type=int, default=40, help="optimiser steps per epoch")
    fin.add_argument("--batch-size", type=int, default=6, help="phantom tiles per optimiser step")
    fin.add_argument("--lr", type=float, default=2e-3, help="initial learning rate (Adam, cosine decay)")
    fin.add_argument("--seed", type=int, default=0, help="seed of the phantom stream and the initial weights")
    fin.add_argument("--widths", type=_widths, default=(16, 32, 64, 128, 256), help="R2U-Net channel widths per level")
    fin.add_argument("--t", type=int, default=2, help="recurrent time steps")
    fin.add_argument("--spacing-mm", type=float, default=2.0, help="sagittal pixel spacing the network works at")
    fin.add_argument("--tile", type=_pair, default=(160, 160), help="training tile (rows z, columns y) in pixels")
    fin.add_argument("--val-images", type=int, default=32, help="validation phantoms (a fixed seed stream)")
    fin.add_argument("--phantom-sacrum", choices=("segments", "smooth"), default="segments",
                     help="the phantoms' sacrum: fused body-like segments, or one smooth bone (the first run's)")
    _run_control(fin, device="cpu", device_help="auto, cpu, cuda or cuda:N")
    fin.set_defaults(handler=run_finder, func=run_finder)

    def _need_kind(args) -> int:
        train.print_help(sys.stderr)
        return 2

    train.set_defaults(handler=_need_kind, func=_need_kind)
    return train


def main(argv=None) -> int:
    """`python -m osteobmd.training ...`: the same as `osteobmd train ...` (one error handling)."""
    from ..cli import main as osteobmd_main

    return osteobmd_main(["train"] + list(sys.argv[1:] if argv is None else argv))

