"""The two networks: shapes, parameter counts, and that R2U-Net's recurrence is real."""

import pytest
import torch

from osteobmd.networks import (
    DEFAULT_WIDTHS, PAPER_WIDTHS, BMDRegressor, R2UNet, build, count_parameters, make_densenet121,
)
from osteobmd.networks.r2unet import RecurrentConv, RRCNNBlock


def test_r2unet_default_shape_and_parameters():
    torch.manual_seed(0)
    model = R2UNet().eval()
    assert model.widths == DEFAULT_WIDTHS == (16, 32, 64, 128, 256)
    assert model.t == 2
    # enc 1,617,344 + dec 611,045 (1x1 in*w+w, two recurrent convs 2*(9w^2+2w), up 4ds+2s, head)
    assert count_parameters(model) == 2_234_277
    assert model.required_multiple == model.size_multiple == 16
    with torch.inference_mode():
        out = model(torch.rand(2, 1, 64, 96))
    assert out.shape == (2, 5, 64, 96)


def test_r2unet_paper_widths_parameter_count():
    model = R2UNet(widths=PAPER_WIDTHS)
    assert count_parameters(model) == 35_626_629


@pytest.mark.parametrize("widths, size", [((8, 16, 32), (20, 36)), ((4, 8, 16, 32, 64, 128), (64, 96))])
def test_r2unet_any_size_divisible_by_its_multiple(widths, size):
    model = R2UNet(in_channels=1, num_classes=3, widths=widths, t=1).eval()
    assert model.required_multiple == 2 ** (len(widths) - 1)
    with torch.inference_mode():
        assert model(torch.rand(1, 1, *size)).shape == (1, 3, *size)


def test_r2unet_refuses_sizes_not_divisible():
    model = R2UNet(widths=(4, 8, 16))
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 1, 30, 32))


def test_recurrent_conv_applies_its_convolution_t_plus_one_times():
    layer = RecurrentConv(4, t=2)
    calls = []
    layer.conv.register_forward_hook(lambda *a: calls.append(1))
    layer(torch.rand(1, 4, 8, 8))
    assert len(calls) == 3  # h0 = f(x), h1 = f(x + h0), h2 = f(x + h1)


def test_t2_differs_from_t1_with_the_same_weights():
    torch.manual_seed(1)
    t2 = R2UNet(widths=(4, 8, 16), t=2).eval()
    t1 = R2UNet(widths=(4, 8, 16), t=1).eval()
    # Same convolutions; t=2 has one more per-step BatchNorm, which t=1 does not use.
    missing, unexpected = t1.load_state_dict(t2.state_dict(), strict=False)
    assert not missing and all(".norms.2." in k for k in unexpected)
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        assert not torch.allclose(t2(x), t1(x))
        # And the recurrent unit itself: t=2 is not t=1.
        block2 = t2.encoders[0].rcnn[0]
        block1 = t1.encoders[0].rcnn[0]
        h = torch.rand(1, 4, 16, 16)
        assert not torch.allclose(block2(h), block1(h))


def test_each_recurrent_step_keeps_its_own_normalisation_statistics():
    """A shared BN's running stats fit none of the steps: eval mode then lost every foreground pixel."""
    torch.manual_seed(0)
    unit = R2UNet(widths=(4, 8, 16), t=2).encoders[0].rcnn[0].train()
    for _ in range(20):
        unit(torch.rand(2, 4, 16, 16))
    means = [norm.running_mean for norm in unit.norms]
    assert len(means) == 3
    assert not torch.allclose(means[0], means[2], atol=1e-3)


def test_rrcnn_block_is_residual_over_the_1x1_projection():
    block = RRCNNBlock(3, 6, t=2).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        projected = block.conv1x1(x)
        assert torch.allclose(block(x), projected + block.rcnn(projected))


def test_densenet121_regressor():
    torch.manual_seed(0)
    model = make_densenet121().eval()
    assert isinstance(model, BMDRegressor)
    assert count_parameters(model) == 6_954_881
    blocks = [m for name, m in model.net.features.named_children() if name.startswith("denseblock")]
    assert [len(b) for b in blocks] == [6, 12, 24, 16]
    transitions = [name for name, _ in model.net.features.named_children() if name.startswith("transition")]
    assert len(transitions) == 3
    x = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        bmd = model(x)
        raw = model.forward_scaled(x)
    assert bmd.shape == (4,)
    # forward is in mg/cm3: the scaling lives in the module.
    assert torch.allclose(bmd, raw * model.target_scale + model.target_offset)
    assert model.config()["block_config"] == [6, 12, 24, 16]


def test_densenet121_matches_monai_densenet121():
    # The plain-torch network must be MONAI's DenseNet121 layer for layer: the same names
    # and shapes, so the shipped weights load, and the same outputs with those weights.
    monai_nets = pytest.importorskip("monai.networks.nets")
    ours = make_densenet121().eval()
    theirs = monai_nets.DenseNet121(spatial_dims=2, in_channels=3, out_channels=1).eval()
    ours_sd = {k[len("net."):]: v for k, v in ours.state_dict().items() if k.startswith("net.")}
    assert {k: tuple(v.shape) for k, v in ours_sd.items()} == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    torch.manual_seed(1)
    with torch.no_grad():
        for v in theirs.state_dict().values():
            if v.dtype.is_floating_point:
                v.copy_(torch.randn_like(v) * 0.1 + (1.0 if v.dim() == 1 else 0.0))
    theirs.eval()
    ours.net.load_state_dict(theirs.state_dict())
    x = torch.rand(5, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(ours.forward_scaled(x), theirs(x).reshape(-1), rtol=1e-5, atol=1e-5)


def test_build_from_metadata():
    model = build("R2UNet", {"widths": [4, 8], "t": 2, "num_classes": 5, "in_channels": 1})
    assert isinstance(model, R2UNet) and model.widths == (4, 8)
    reg = build("DenseNet121", BMDRegressor(growth_rate=8, init_features=16, block_config=(1, 1, 1, 1)).config())
    assert isinstance(reg, BMDRegressor) and reg.growth_rate == 8
    with pytest.raises(ValueError):
        build("UNet", {})
