"""Weights files: safetensors only, metadata round trip, refusal of missing/untrained weights."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from osteobmd import weights
from osteobmd.errors import InputError, NoTrainedWeightsError
from osteobmd.networks import BMDRegressor, R2UNet

SEG_META = {
    "kind": "segmentation",
    "task": "vertebra_finder",
    "trained": True,
    "preprocessing": {"window_level": 350.0, "window_width": 1000.0, "spacing_mm": 1.5, "crop_size": None},
    "training": {"epochs": 1, "seed": 0},
}


def _small_seg():
    torch.manual_seed(0)
    model = R2UNet(num_classes=3, widths=(4, 8, 16))
    # Non-trivial BatchNorm statistics, so the round trip covers buffers too.
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 1, 32, 32))
    return model.eval()


def _small_reg():
    torch.manual_seed(0)
    model = BMDRegressor(init_features=16, growth_rate=8, block_config=(2, 2, 2, 2), target_offset=110.0,
                         target_scale=40.0)
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))
    return model.eval()


def test_round_trip_float32_identical_outputs(tmp_path):
    model = _small_seg()
    weights.save_model(model, tmp_path / weights.SEGMENTATION_FILE, SEG_META, dtype=torch.float32)
    loaded, meta = weights.load_segmentation_model(tmp_path, "cpu")
    assert not loaded.training
    x = torch.rand(2, 1, 32, 48)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert meta["kind"] == "segmentation" and meta["trained"] is True
    assert meta["architecture"] == {"name": "R2UNet", "params": model.config()}
    assert meta["preprocessing"]["spacing_mm"] == 1.5
    assert meta["storage_dtype"] == "float32"
    assert len(meta["file"]["sha256"]) == 64


def test_round_trip_float16_storage(tmp_path):
    model = _small_reg()
    path = weights.save_model(model, tmp_path / weights.REGRESSION_FILE, {"kind": "regression", "trained": True})
    a, meta = weights.load_regression_model(tmp_path)
    b, _ = weights.load_regression_model(tmp_path)
    x = torch.rand(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))  # loading is deterministic
        assert torch.allclose(a(x), model(x), atol=0.5)  # mg/cm3, after float16 storage
    assert float(a.target_offset) == 110.0 and float(a.target_scale) == 40.0
    assert meta["storage_dtype"] == "float16"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes["net.features.conv0.weight"] == "F16"
    assert dtypes["net.features.norm0.running_var"] == "F32"
    assert dtypes["target_scale"] == "F32"


def test_metadata_is_embedded_and_sidecar_is_only_a_copy(tmp_path):
    path = weights.save_model(_small_seg(), tmp_path / weights.SEGMENTATION_FILE, SEG_META)
    sidecar = path.with_suffix(".json")
    assert json.loads(sidecar.read_text(encoding="utf-8"))["kind"] == "segmentation"
    sidecar.write_text(json.dumps({"kind": "regression", "trained": False}))
    _, meta = weights.load_segmentation_model(tmp_path)
    assert meta["trained"] is True
    assert weights.read_metadata(path)["preprocessing"]["window_width"] == 1000.0


def test_missing_weights_refused_with_a_sentence(tmp_path):
    with pytest.raises(NoTrainedWeightsError) as err:
        weights.load_segmentation_model(tmp_path)
    text = str(err.value)
    assert weights.SEGMENTATION_FILE in text and "osteobmd train segmentation" in text
    with pytest.raises(NoTrainedWeightsError, match="osteobmd train regression"):
        weights.load_regression_model(tmp_path)


def test_untrained_weights_refused(tmp_path):
    meta = dict(SEG_META, trained=False)
    weights.save_model(_small_seg(), tmp_path / weights.SEGMENTATION_FILE, meta)
    with pytest.raises(NoTrainedWeightsError, match="no trained weights"):
        weights.load_segmentation_model(tmp_path)
    # No "trained" key at all is refused too.
    meta = {k: v for k, v in SEG_META.items() if k != "trained"}
    weights.save_model(_small_seg(), tmp_path / weights.SEGMENTATION_FILE, meta)
    with pytest.raises(NoTrainedWeightsError):
        weights.load_segmentation_model(tmp_path)


def test_wrong_kind_refused(tmp_path):
    weights.save_model(_small_reg(), tmp_path / weights.SEGMENTATION_FILE, {"kind": "regression", "trained": True})
    with pytest.raises(NoTrainedWeightsError, match="not segmentation weights"):
        weights.load_segmentation_model(tmp_path)


def test_weights_that_do_not_fit_the_architecture_refused(tmp_path):
    path = weights.save_model(_small_seg(), tmp_path / weights.SEGMENTATION_FILE, SEG_META)
    from safetensors.torch import load_file, save_file

    meta = weights.read_metadata(path)
    meta["architecture"]["params"]["widths"] = [8, 16, 32]
    save_file(load_file(str(path)), str(path), metadata={weights.META_KEY: json.dumps(meta)})
    with pytest.raises(NoTrainedWeightsError, match="do not fit"):
        weights.load_segmentation_model(tmp_path)


class _Evil:
    """Unpickling this would write a marker file: a pickle runs code when loaded."""

    marker = None

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_pickle_file_is_never_unpickled(tmp_path):
    marker = tmp_path / "marker.txt"
    evil = _Evil()
    evil.marker = str(marker)
    path = tmp_path / weights.SEGMENTATION_FILE
    with open(path, "wb") as f:
        pickle.dump({"state_dict": evil}, f)
    with pytest.raises(NoTrainedWeightsError, match="not a safetensors"):
        weights.load_segmentation_model(tmp_path)
    assert not marker.exists()
    # A torch.save'd state dict under a .pt name is refused the same way.
    torch.save(_small_seg().state_dict(), tmp_path / "model.pt")
    with pytest.raises(NoTrainedWeightsError, match="never pickled"):
        weights.load_model(tmp_path / "model.pt", "segmentation")


def test_weights_path_accepts_a_file(tmp_path):
    path = weights.save_model(_small_seg(), tmp_path / "mine.safetensors", SEG_META)
    model, meta = weights.load_segmentation_model(path)
    assert isinstance(model, R2UNet) and meta["file"]["name"] == "mine.safetensors"


def test_default_weights_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(weights.ENV_WEIGHTS_DIR, raising=False)
    repo = Path(weights.__file__).resolve().parents[2]
    assert weights.default_weights_dir() == repo / "model_weights"
    assert (repo / "OsteoBMD" / "osteobmd" / "weights.py").is_file()
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(tmp_path))
    assert weights.default_weights_dir() == tmp_path
    with pytest.raises(NoTrainedWeightsError, match=str(tmp_path.name)):
        weights.load_segmentation_model()


def test_resolve_device():
    assert weights.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert weights.resolve_device("auto").type == expected
    assert weights.resolve_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(InputError, match="not known"):
        weights.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            weights.resolve_device("cuda")
        with pytest.raises(InputError):
            weights.resolve_device("cuda:0")


def test_saved_files_are_readable(tmp_path):
    old = os.umask(0o022)
    try:
        path = weights.save_model(_small_seg(), tmp_path / weights.SEGMENTATION_FILE, SEG_META)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644  # not the 0600 safetensors writes by default


def test_the_preprocessing_stored_in_the_weights_wins_over_the_defaults():
    from osteobmd.config import PatchConfig, SegmentationConfig

    seg = weights.network_config({"preprocessing": {"spacing_mm": 0.9, "window_level": 300.0, "other": 1}},
                                 SegmentationConfig())
    assert (seg.spacing_mm, seg.window_level, seg.window_width) == (0.9, 300.0, SegmentationConfig().window_width)
    assert weights.network_config({}, SegmentationConfig()) == SegmentationConfig()
    meta = {"preprocessing": {"patch": {"size_px": 24, "spacing_mm": 0.8, "unknown": 3}, "window_width": 1200.0}}
    patch_cfg, window = weights.trained_patch_config(meta, PatchConfig(), SegmentationConfig())
    assert (patch_cfg.size_px, patch_cfg.spacing_mm, patch_cfg.slice_step_mm) == (24, 0.8, PatchConfig().slice_step_mm)
    assert window.window_width == 1200.0 and window.window_level == SegmentationConfig().window_level


def test_load_models_loads_the_segmentation_only_when_it_is_needed(tmp_path):
    weights.save_model(_small_reg(), tmp_path / weights.REGRESSION_FILE,
                       {"kind": "regression", "trained": True, "preprocessing": {}})
    models = weights.load_models(tmp_path, "cpu", segmentation=False)
    assert models.device == torch.device("cpu") and models.segmentation is None
    assert isinstance(models.regression, BMDRegressor) and models.regression_meta["kind"] == "regression"
    with pytest.raises(NoTrainedWeightsError):  # no segmentation weights in the folder
        weights.load_models(tmp_path, "cpu")


def test_weights_that_name_levels_by_position_are_refused(tmp_path):
    """The earlier design's network named L1-L4 by place in the image; the pipeline counts instead."""
    meta = {k: v for k, v in SEG_META.items() if k != "task"}
    weights.save_model(_small_seg(), tmp_path / weights.SEGMENTATION_FILE, meta)
    with pytest.raises(InputError, match="vertebra finder"):
        weights.load_segmentation_model(tmp_path, "cpu")
