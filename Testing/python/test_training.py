"""Training: a tiny synthetic ground-truth folder, short seeded runs, checkpoints, resume."""

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from osteobmd import weights
from osteobmd.training.segmentation import LEVEL_NETWORK_FILE
from osteobmd.errors import InputError
from osteobmd.training import cli as train_cli
from osteobmd.training import dataset
from osteobmd.training.augment import SegAugmentConfig, augment_segmentation, label_row_extents
from osteobmd.training.common import read_checkpoint_info, read_log
from osteobmd.training.segmentation import SegmentationTrainConfig, segmentation_loss, train_segmentation

TINY_WIDTHS = (4, 8, 16)


def make_tiny_case(folder: Path, seed: int, spacing=(1.5, 1.5, 2.0), size=(64, 80, 100)) -> dict:
    """A small trunk CT (LPS, HU): soft-tissue body in air, a column of six vertebral bodies
    (cortex 600 HU, trabecular HU = the case's BMD; L1-L4 labelled, L5 and T12 not), and a
    bony ring round a CSF-filled canal behind them. Writes ct.nrrd, labels.nrrd, bmd.csv."""
    rng = np.random.default_rng(seed)
    sx, sy, sz = spacing
    nx, ny, nz = size
    z = np.arange(nz) * sz
    y = (np.arange(ny) * sy)[:, None]
    x = (np.arange(nx) * sx)[None, :]
    cx = nx * sx / 2 + rng.uniform(-4, 4)
    body_y = 48.0 + rng.uniform(-3, 3)
    canal_y = body_y + 30.0
    hu = np.full((nz, ny, nx), -1000.0, np.float32)
    trunk = ((x - nx * sx / 2) / (nx * sx * 0.45)) ** 2 + ((y - ny * sy / 2) / (ny * sy * 0.45)) ** 2 <= 1
    hu[:, trunk] = 40.0
    r_canal = np.hypot(x - cx, y - canal_y)
    hu[:, (r_canal > 6.0) & (r_canal <= 10.0)] = 500.0
    hu[:, r_canal <= 6.0] = 15.0
    r_body = np.hypot(x - cx, y - body_y)
    labels = np.zeros(hu.shape, np.uint8)
    pitch = rng.uniform(31, 36)
    height = pitch - 8.0
    bottom = rng.uniform(-20, 0)
    base = rng.uniform(70, 190)
    bmd = {}
    for n, label in enumerate([0, 4, 3, 2, 1, 0]):  # L5, L4 ... L1, T12 from the bottom
        lo = bottom + n * pitch
        ks = np.flatnonzero((z >= lo) & (z < lo + height))
        if ks.size == 0:
            continue
        value = base + rng.uniform(-12, 12)
        for k in ks:
            plate = z[k] < lo + 2.0 or z[k] >= lo + height - 2.0
            hu[k][r_body <= 20.0] = 600.0 if plate else value
            hu[k][(r_body > 18.0) & (r_body <= 20.0)] = 600.0
            if label:
                labels[k][r_body <= 20.0] = label
        if label:
            bmd[f"L{label}"] = round(float(value), 1)
    hu += rng.normal(0, 8, hu.shape).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for array, name in ((hu, "ct.nrrd"), (labels, "labels.nrrd")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(folder / name))
    lines = ["vertebra,bmd_mg_cm3"] + [f"{k},{v}" for k, v in sorted(bmd.items())]
    (folder / "bmd.csv").write_text("\n".join(lines) + "\n")
    return bmd


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gt")
    for i in range(4):
        make_tiny_case(root / f"case{i}", seed=i)
    return root


def _seg_config(**kw):
    base = dict(epochs=3, batch_size=4, lr=3e-3, seed=0, widths=TINY_WIDTHS, samples_per_epoch=16, tile_size=96,
                val_slices=1, checkpoint_every=1, select="last")
    base.update(kw)
    return SegmentationTrainConfig(**base)


@pytest.fixture(scope="module")
def seg_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg_out")
    summary = train_segmentation(tiny_data, out, _seg_config(), device="cpu", log=lambda m: None)
    return out, summary


# --------------------------------------------------------------------------- dataset
def test_find_cases_and_split(tiny_data, tmp_path):
    cases = dataset.find_cases(tiny_data, need_labels=True, need_bmd=True)
    assert [c.case_id for c in cases] == ["case0", "case1", "case2", "case3"]
    assert set(cases[0].bmd) == {"L1", "L2", "L3", "L4"}
    train, val = dataset.split_cases(cases, 0.25, seed=0)
    assert len(train) == 3 and len(val) == 1
    assert dataset.split_cases(cases, 0.25, seed=0) == (train, val)  # seeded
    with pytest.raises(InputError, match="No usable case"):
        dataset.find_cases(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        dataset.find_cases(tmp_path / "nowhere")


def test_split_from_case_json(tiny_data, tmp_path):
    for i, split in enumerate(["train", "val", "test", None]):
        shutil.copytree(tiny_data / f"case{i}", tmp_path / f"c{i}")
        if split:
            (tmp_path / f"c{i}" / "case.json").write_text(f'{{"split": "{split}"}}')
    train, val = dataset.split_cases(dataset.find_cases(tmp_path), 0.5, seed=0)
    assert [c.case_id for c in train] == ["c0", "c3"] and [c.case_id for c in val] == ["c1"]


def test_bad_bmd_csv(tmp_path):
    (tmp_path / "bmd.csv").write_text("level,value\nL1,100\n")
    with pytest.raises(InputError, match="vertebra,bmd_mg_cm3"):
        dataset.read_bmd_csv(tmp_path / "bmd.csv")
    (tmp_path / "bmd.csv").write_text("vertebra,bmd_mg_cm3\nL7,100\n")
    with pytest.raises(InputError, match="L7"):
        dataset.read_bmd_csv(tmp_path / "bmd.csv")


def test_segmentation_samples_use_the_canal_slab(tiny_data):
    from osteobmd.config import CanalConfig, SegmentationConfig

    case = dataset.find_cases(tiny_data)[0]
    data = dataset.prepare_segmentation_case(case, SegmentationConfig(), CanalConfig(), 4)
    assert str(data["source"]) == "canal"
    images, labels = data["images"], data["labels"]
    assert images.shape == labels.shape and images.shape[1] % 4 == 0 and images.shape[2] % 4 == 0
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    # L1 lies above L4 (rows run inferior -> superior).
    ext = label_row_extents(labels[0])
    assert ext[1][0] > ext[4][1]


# --------------------------------------------------------------------------- augmentation
def test_limited_view_augmentation():
    labels = np.zeros((160, 64), np.uint8)
    for v, top in zip((4, 3, 2, 1), (20, 55, 90, 125)):
        labels[top:top + 25, 10:40] = v
    image = (labels > 0).astype(np.float32) * 0.5
    cfg = SegAugmentConfig(tile=(96, 96), view_margin=(0.0, 0.2))
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(30):
        x, y = augment_segmentation(image, labels, (0, 160, 0, 64), rng, cfg, limited_view=True)
        assert x.shape == y.shape == (96, 96) and x.dtype == np.float32 and y.dtype == np.uint8
        assert 0.0 <= x.min() and x.max() <= 1.0
        present = set(np.unique(y)) - {0}
        seen.append(len(present))
        assert x[y > 0].mean() > 0.2  # the image follows the labels
    assert min(seen) >= 2 and max(seen) <= 4 and 2 in seen and 3 in seen  # only 2-4 vertebrae in view
    x, y = augment_segmentation(image, labels, (0, 160, 0, 64), rng, cfg, limited_view=False)
    assert x.shape == (96, 96)


def test_segmentation_loss():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 2
    perfect = torch.nn.functional.one_hot(target, 5).permute(0, 3, 1, 2).float() * 20
    loss, ce, dice = segmentation_loss(perfect, target)
    bad, _, bad_dice = segmentation_loss(torch.zeros(1, 5, 8, 8), target)
    assert float(ce) < 1e-6 and float(loss) < float(bad) and float(dice) < float(bad_dice)


# --------------------------------------------------------------------------- segmentation training
def test_segmentation_training_writes_weights_log_checkpoints(seg_run):
    out, summary = seg_run
    log = read_log(Path(summary["log"]))
    assert [int(r["epoch"]) for r in log] == [1, 2, 3]
    losses = [float(r["train_loss"]) for r in log]
    assert losses[1] < losses[0]  # the loss decreases
    assert 0.0 <= float(log[-1]["val_dice_mean"]) <= 1.0
    ckpts = sorted((out / "training_segmentation" / "checkpoints").glob("epoch_*.safetensors"))
    assert [p.name for p in ckpts] == ["epoch_0001.safetensors", "epoch_0002.safetensors", "epoch_0003.safetensors"]
    assert read_checkpoint_info(ckpts[-1])["epoch"] == 3
    assert list((out / "training_segmentation" / "cache").glob("seg-*.npz"))
    model, meta = weights.load_model(out / LEVEL_NETWORK_FILE, "segmentation", "cpu")
    assert meta["trained"] is True and meta["kind"] == "segmentation"
    assert meta["architecture"]["params"]["widths"] == list(TINY_WIDTHS)
    for key in ("window_level", "window_width", "spacing_mm", "crop_size"):
        assert key in meta["preprocessing"]
    t = meta["training"]
    assert t["epochs"] == 3 and t["seed"] == 0 and t["selected_epoch"] == 3 and "val_dice_mean" in t["metrics"]
    assert "case0" not in str(meta)  # no case ids in the metadata
    with torch.inference_mode():
        assert model(torch.rand(1, 1, 32, 32)).shape == (1, 5, 32, 32)


def test_segmentation_resume_continues_exactly(seg_run, tiny_data, tmp_path, monkeypatch):
    out, _ = seg_run
    ckpt = tmp_path / "epoch_0002.safetensors"
    shutil.copy(out / "training_segmentation" / "checkpoints" / "epoch_0002.safetensors", ckpt)
    # The cache makes the second preparation skip the pipeline entirely.
    shutil.copytree(out / "training_segmentation" / "cache", tmp_path / "training_segmentation" / "cache")

    def no_prepare(*a, **k):
        raise AssertionError("the cached samples should have been used")

    monkeypatch.setattr(dataset, "prepare_segmentation_case", no_prepare)
    summary = train_segmentation(tiny_data, tmp_path, SegmentationTrainConfig(epochs=3), device="cpu",
                                 resume=ckpt, log=lambda m: None)
    log = read_log(Path(summary["log"]))
    assert [int(r["epoch"]) for r in log] == [3]
    first = read_log(out / "training_segmentation" / "log.csv")
    assert float(log[0]["train_loss"]) == pytest.approx(float(first[2]["train_loss"]), rel=1e-5)
    a, _ = weights.load_model(out / LEVEL_NETWORK_FILE, "segmentation", "cpu")
    b, _ = weights.load_model(tmp_path / LEVEL_NETWORK_FILE, "segmentation", "cpu")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va.float(), vb.float(), atol=1e-3), k
    with pytest.raises(InputError, match="already at epoch 3"):
        train_segmentation(tiny_data, tmp_path, SegmentationTrainConfig(epochs=3), device="cpu",
                           resume=tmp_path / "training_segmentation", log=lambda m: None)


# --------------------------------------------------------------------------- regression training + CLI
def _parser():
    parser = argparse.ArgumentParser(prog="osteobmd")
    train_cli.add_cli(parser.add_subparsers(dest="command"))
    return parser


def test_regression_training_through_the_cli(tiny_data, tmp_path, capsys):
    out = tmp_path / "reg"
    common = ["--out", str(out), "--batch-size", "8", "--lr", "3e-3", "--device", "cpu", "--quiet",
              "--checkpoint-every", "1", "--select", "last"]
    args = _parser().parse_args(
        ["train", "regression", str(tiny_data), "--epochs", "2", "--block-config", "2,2,2,2", "--growth-rate", "8",
         "--init-features", "16", "--jitter", "3"] + common
    )
    assert args.handler(args) == 0
    assert "weights:" in capsys.readouterr().out
    log = read_log(out / "training_regression" / "log.csv")
    assert len(log) == 2 and float(log[1]["train_loss"]) < float(log[0]["train_loss"])
    assert (out / "training_regression" / "checkpoints" / "epoch_0002.safetensors").is_file()
    model, meta = weights.load_regression_model(out, "cpu")
    assert meta["kind"] == "regression" and meta["target"]["unit"] == "mg/cm3"
    assert meta["preprocessing"]["size_px"] == 32 and meta["architecture"]["params"]["block_config"] == [2, 2, 2, 2]
    assert meta["training"]["data"]["patches_train"] == 3 * 4 * 4  # 3 cases x 4 vertebrae x (centre + 3 jitters)
    with torch.inference_mode():
        bmd = model(torch.full((2, 3, 32, 32), 0.3))
    assert bmd.shape == (2,) and torch.isfinite(bmd).all()

    # Resume to epoch 3 from the checkpoint folder: the log continues.
    args = _parser().parse_args(["train", "regression", str(tiny_data), "--epochs", "3", "--resume",
                                 str(out / "training_regression")] + common)
    assert args.handler(args) == 0
    log = read_log(out / "training_regression" / "log.csv")
    assert [int(r["epoch"]) for r in log] == [1, 2, 3]


def test_cli_registers_train_and_refuses_bad_input(tmp_path):
    parser = _parser()
    args = parser.parse_args(["train", "segmentation", str(tmp_path), "--widths", "8,16,32,64,128"])
    assert args.widths == (8, 16, 32, 64, 128) and args.handler is train_cli.run_segmentation
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "segmentation", str(tmp_path), "--widths", "a,b"])
    args = parser.parse_args(["train", "segmentation", str(tmp_path / "missing"), "--device", "cpu", "--quiet"])
    with pytest.raises(InputError, match="does not exist"):
        args.handler(args)


def test_anchor_classes_come_from_the_levels_map(tiny_data, tmp_path):
    """levels.nrrd adds L5 (5), sacrum (6) and T12 (7) where the L1-L4 map is background."""
    import shutil

    from osteobmd.config import ANCHOR_CLASSES, CanalConfig, SegmentationConfig

    case_dir = tmp_path / "case"
    shutil.copytree(dataset.find_cases(tiny_data)[0].folder, case_dir)
    lab_img = sitk.ReadImage(str(case_dir / "labels.nrrd"))
    lab = sitk.GetArrayFromImage(lab_img)
    levels = np.where(lab > 0, 20 + lab, 0).astype(np.uint8)
    k4 = np.flatnonzero((lab == 4).any(axis=(1, 2)))
    k1 = np.flatnonzero((lab == 1).any(axis=(1, 2)))
    body = (lab == 4)[k4[0]]
    levels[max(0, k4[0] - 12):k4[0] - 2][:, body] = 25  # L5 under L4
    levels[k1[-1] + 3:k1[-1] + 13][:, body] = 12  # T12 over L1
    out = sitk.GetImageFromArray(levels)
    out.CopyInformation(lab_img)
    sitk.WriteImage(out, str(case_dir / "levels.nrrd"))

    case = dataset.find_cases(tmp_path)[0]
    assert case.levels_path is not None
    plain = dataset.prepare_segmentation_case(case, SegmentationConfig(), CanalConfig(), 4, anchors=False)
    assert set(np.unique(plain["labels"])) == {0, 1, 2, 3, 4}
    data = dataset.prepare_segmentation_case(case, SegmentationConfig(), CanalConfig(), 4, anchors=True)
    ext = label_row_extents(data["labels"][0])
    l5, t12 = ANCHOR_CLASSES["L5"], ANCHOR_CLASSES["T12"]
    assert {l5, t12} <= set(ext)
    assert ext[l5][1] < ext[4][0] and ext[t12][0] > ext[1][1]  # rows run inferior -> superior


# --------------------------------------------------------------------------- the shared loop
class _Toy:
    """A one-weight model trained by the shared loop to fit y = 3x; validation score = -|w - 3|."""

    def __init__(self, work):
        from osteobmd.training.loop import Trainer

        self.model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.model.weight)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.best_calls = []

        def train_epoch(model, optimizer, epoch, rng, tick):
            x = torch.from_numpy(rng.normal(size=(16, 1)).astype(np.float32))
            loss = torch.nn.functional.mse_loss(model(x), 3 * x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tick(1.0)
            return {"train_loss": loss.item()}

        self.trainer = Trainer(
            kind="toy", work=work, log_columns=["epoch", "lr", "train_loss", "val_score", "seconds"],
            train_epoch=train_epoch, validate=lambda m: {"val_score": -abs(m.weight.item() - 3.0)},
            describe=lambda row: f"loss {row['train_loss']:.3f}",
            on_best=lambda m, row: self.best_calls.append(row["epoch"]),
        )


def _toy_config(**kw):
    from types import SimpleNamespace

    base = dict(epochs=6, lr=0.9, seed=3, checkpoint_every=2, select="best", stop_epoch=None, minutes=None)
    base.update(kw)
    return SimpleNamespace(**base)


def test_shared_loop_resumes_exactly_and_selects_the_best(tmp_path):
    from osteobmd.training.loop import resume_point, run_loop

    whole = _Toy(tmp_path / "whole")
    result = run_loop(whole.model, whole.optimizer, _toy_config(), whole.trainer, log=lambda m: None)
    scores = [float(r["val_score"]) for r in read_log(tmp_path / "whole" / "log.csv")]
    assert result.used_best and result.selected_epoch == 1 + int(np.argmax(scores)) == whole.best_calls[-1]
    assert [Path(p).name for p in result.checkpoints] == ["epoch_0002.safetensors", "epoch_0004.safetensors",
                                                         "epoch_0006.safetensors"]
    # the model holds the selected epoch's state
    assert -abs(whole.model.weight.item() - 3.0) == pytest.approx(max(scores), abs=1e-5)

    part = _Toy(tmp_path / "part")
    stopped = run_loop(part.model, part.optimizer, _toy_config(stop_epoch=3, select="last"), part.trainer,
                       log=lambda m: None)
    assert stopped.selected_epoch == 3 and stopped.checkpoints[-1].endswith("epoch_0003.safetensors")
    again = _Toy(tmp_path / "part")
    path, info = resume_point(tmp_path / "part", "toy")
    assert info["epoch"] == 3 and info["kind"] == "toy"
    resumed = run_loop(again.model, again.optimizer, _toy_config(), again.trainer, path, log=lambda m: None)
    assert resumed.selected_epoch == result.selected_epoch
    assert again.model.weight.item() == pytest.approx(whole.model.weight.item(), abs=1e-6)
    rows = read_log(tmp_path / "part" / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in read_log(tmp_path / "whole" / "log.csv")]
    with pytest.raises(InputError, match="already at epoch 6"):
        run_loop(again.model, again.optimizer, _toy_config(), again.trainer,
                 resume_point(tmp_path / "part", "toy")[0], log=lambda m: None)
    with pytest.raises(InputError, match="not a segmentation one"):
        resume_point(tmp_path / "part", "segmentation")


def test_shared_loop_stops_on_its_time_budget_with_a_checkpoint(tmp_path):
    from osteobmd.training.loop import run_loop

    toy = _Toy(tmp_path)
    result = run_loop(toy.model, toy.optimizer, _toy_config(minutes=0.0, checkpoint_every=5), toy.trainer,
                      log=lambda m: None)
    assert [int(r["epoch"]) for r in read_log(tmp_path / "log.csv")] == [1]
    assert result.checkpoints[-1].endswith("epoch_0001.safetensors")


def test_regression_resume_refuses_a_finished_run(tiny_data, tmp_path):
    """The check both trainers now share (it sat inside the checkpoint branch in one of them)."""
    out = tmp_path / "reg"
    common = ["--out", str(out), "--batch-size", "8", "--device", "cpu", "--quiet", "--checkpoint-every", "1",
              "--block-config", "1,1,1,1", "--growth-rate", "4", "--init-features", "8", "--jitter", "0"]
    args = _parser().parse_args(["train", "regression", str(tiny_data), "--epochs", "1"] + common)
    assert args.handler(args) == 0
    args = _parser().parse_args(["train", "regression", str(tiny_data), "--epochs", "1", "--resume",
                                 str(out / "training_regression")] + common)
    with pytest.raises(InputError, match="already at epoch 1"):
        args.handler(args)
