"""`osteobmd train finder`: a tiny real run on generated phantoms that stops, resumes and
continues exactly; the weights carry the finder's contract and load in the pipeline's path."""

import argparse

import numpy as np
import pytest
import torch

from osteobmd import weights
from osteobmd.config import SegmentationConfig
from osteobmd.errors import InputError
from osteobmd.segmentation import network_config
from osteobmd.training import cli as train_cli
from osteobmd.training.common import read_log
from osteobmd.training.finder import FINDER_FILE, FinderTrainConfig, _tile, body_components, train_finder

TINY = dict(epochs=3, steps_per_epoch=2, batch_size=2, lr=3e-3, seed=1, widths=(4, 8, 16), tile=(64, 64),
            val_images=2, recalibration_batches=1)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finder_full")
    return out, train_finder(out, FinderTrainConfig(**TINY), log=lambda m: None)


def test_finder_run_writes_weights_with_the_contract(full_run):
    out, summary = full_run
    log = read_log(out / "training_finder" / "log.csv")
    assert [int(r["epoch"]) for r in log] == [1, 2, 3]
    assert all(0.0 <= float(r["val_dice_body"]) <= 1.0 for r in log)
    model, meta = weights.load_model(out / FINDER_FILE, "segmentation", "cpu")
    assert meta["task"] == "vertebra_finder"
    assert meta["classes"] == {"background": 0, "vertebral_body": 1, "sacrum": 2}
    assert meta["training"]["selected_epoch"] == summary["selected_epoch"]
    cfg = network_config(meta, SegmentationConfig())
    assert cfg.spacing_mm == 2.0 and cfg.window_level == 350.0 and cfg.crop_size is None
    with torch.inference_mode():
        assert model(torch.rand(1, 1, 32, 48)).shape == (1, 3, 32, 48)


def test_finder_stops_resumes_and_continues_exactly(full_run, tmp_path):
    out, _ = full_run
    stopped = train_finder(tmp_path, FinderTrainConfig(**{**TINY, "stop_epoch": 2}), log=lambda m: None)
    assert [int(r["epoch"]) for r in read_log(stopped["log"])] == [1, 2]
    resumed = train_finder(tmp_path, FinderTrainConfig(epochs=3), resume=tmp_path / "training_finder",
                           log=lambda m: None)
    mine, theirs = read_log(resumed["log"]), read_log(out / "training_finder" / "log.csv")
    assert [int(r["epoch"]) for r in mine] == [1, 2, 3]
    for a, b in zip(mine, theirs):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-4)
    with pytest.raises(InputError, match="already at epoch 3"):
        train_finder(tmp_path, FinderTrainConfig(epochs=3), resume=tmp_path / "training_finder", log=lambda m: None)


def test_finder_cli(tmp_path):
    parser = argparse.ArgumentParser(prog="osteobmd")
    train_cli.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "finder", str(tmp_path), "--widths", "24,48,96,192,384", "--tile", "128x96",
                              "--minutes", "70", "--stop-epoch", "5"])
    assert args.handler is train_cli.run_finder
    assert args.widths == (24, 48, 96, 192, 384) and args.tile == (128, 96)
    assert args.minutes == 70 and args.stop_epoch == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "finder", str(tmp_path), "--tile", "big"])


def test_tiles_keep_the_spine_and_pad_with_zeros():
    rng = np.random.default_rng(0)
    image = np.full((300, 50), 0.5, np.float32)
    labels = np.zeros((300, 50), np.uint8)
    labels[250:260, 20:30] = 1
    hits = 0
    for _ in range(20):
        x, y = _tile(image, labels, (64, 64), rng)
        assert x.shape == y.shape == (64, 64)
        assert np.all(x[:, :7] == 0) or np.all(x[:, -7:] == 0) or x[:, 0].max() == 0 or x[:, -1].max() == 0
        hits += y.any()
    assert hits >= 14  # crops centre on labelled pixels most of the time


def test_body_components_ignore_specks():
    labels = np.zeros((40, 40), np.uint8)
    labels[2:10, 2:10] = 1
    labels[14:22, 2:10] = 1
    labels[30, 30] = 1  # a speck
    assert body_components(labels) == 2


def test_resuming_on_other_phantoms_chooses_the_best_afresh(full_run, tmp_path):
    import shutil

    out, _ = full_run
    shutil.copytree(out / "training_finder", tmp_path / "training_finder")
    for name in ("epoch_0003.safetensors",):
        (tmp_path / "training_finder" / "checkpoints" / name).unlink()
    messages = []
    summary = train_finder(tmp_path, FinderTrainConfig(epochs=3, phantom_sacrum="smooth"),
                           resume=tmp_path / "training_finder", log=messages.append)
    assert any("validation data changed" in m for m in messages)
    assert summary["selected_epoch"] == 3  # the only epoch scored on the new validation phantoms
    assert "sacrum: smooth" in summary["meta"]["training"]["data"]
