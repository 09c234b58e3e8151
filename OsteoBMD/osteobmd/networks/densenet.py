"""DenseNet-121 BMD regression (METHOD section 3.6), laid out as MONAI's DenseNet121.

The layout of MONAI `DenseNet121(spatial_dims=2, in_channels=3, out_channels=1)`, with the
same module names, so weights trained with either load in both: a 7x7/2 stem
conv + 3x3/2 max-pool, four dense blocks of 6 / 12 / 24 / 16 layers (growth rate 32,
bottleneck 4 x growth, initial features 64), three transition layers (BN, ReLU, 1x1
conv halving the channels, 2x2 average pooling), global average pooling and one linear
output: 6.95 M parameters with the defaults. A 3x32x32 patch is 8x8 after the stem and
1x1 in the last block. `pretrained` is never used (nothing is downloaded).

The network learns a scaled target, (bmd - target_offset) / target_scale, which keeps
the regression output near unit size; the offset and scale are buffers of the module,
saved with the weights, so `BMDRegressor.forward` returns BMD in mg/cm3 and no caller
has to know the scaling. `forward_scaled` gives the raw output the training loss uses.

Forward cost (2 CPU threads): about 0.02 s for the four 3x32x32 patches of one case.
Written here in plain torch rather than imported from MONAI because importing MONAI loads
all its submodules, 1-4 s of every run for one small network; the test suite checks that
this network and MONAI's give the same state-dict names and the same outputs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

# BMD of adults spans about 30..250 mg/cm3; the scaled target is then about -1.4..3.
DEFAULT_TARGET_OFFSET = 100.0
DEFAULT_TARGET_SCALE = 50.0


class _DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck) then BN-ReLU-3x3 conv; its output joins its input."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, dropout_prob: float):
        super().__init__()
        width = bn_size * growth_rate
        layers = [
            ("norm1", nn.BatchNorm2d(in_channels)), ("relu1", nn.ReLU(inplace=True)),
            ("conv1", nn.Conv2d(in_channels, width, kernel_size=1, bias=False)),
            ("norm2", nn.BatchNorm2d(width)), ("relu2", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(width, growth_rate, kernel_size=3, padding=1, bias=False)),
        ]
        if dropout_prob > 0:
            layers.append(("dropout", nn.Dropout(dropout_prob)))
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], 1)


def _transition(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("norm", nn.BatchNorm2d(in_channels)), ("relu", nn.ReLU(inplace=True)),
        ("conv", nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)),
        ("pool", nn.AvgPool2d(kernel_size=2, stride=2)),
    ]))


class DenseNet2d(nn.Module):
    """2D DenseNet with MONAI DenseNet's module names (features.*, class_layers.out)."""

    def __init__(self, in_channels: int, out_channels: int, init_features: int, growth_rate: int,
                 block_config: Sequence[int], bn_size: int, dropout_prob: float):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(in_channels, init_features, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(init_features)), ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        channels = init_features
        for i, n_layers in enumerate(block_config):
            block = nn.Sequential(OrderedDict(
                (f"denselayer{j + 1}", _DenseLayer(channels + j * growth_rate, growth_rate, bn_size, dropout_prob))
                for j in range(n_layers)
            ))
            self.features.add_module(f"denseblock{i + 1}", block)
            channels += n_layers * growth_rate
            if i == len(block_config) - 1:
                self.features.add_module("norm5", nn.BatchNorm2d(channels))
            else:
                self.features.add_module(f"transition{i + 1}", _transition(channels, channels // 2))
                channels //= 2
        self.class_layers = nn.Sequential(OrderedDict([
            ("relu", nn.ReLU(inplace=True)), ("pool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten(1)), ("out", nn.Linear(channels, out_channels)),
        ]))
        # The initialisation MONAI's DenseNet uses (He-normal convolutions, unit batch norms).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_layers(self.features(x))


class BMDRegressor(nn.Module):
    """DenseNet-121 on (N, 3, 32, 32) patches scaled to [0, 1]; returns (N,) BMD in mg/cm3."""

    def __init__(
        self,
        in_channels: int = 3,
        init_features: int = 64,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        bn_size: int = 4,
        dropout_prob: float = 0.0,
        target_offset: float = DEFAULT_TARGET_OFFSET,
        target_scale: float = DEFAULT_TARGET_SCALE,
    ):
        super().__init__()
        if target_scale == 0:
            raise ValueError("target_scale must not be 0")
        self.in_channels = int(in_channels)
        self.init_features = int(init_features)
        self.growth_rate = int(growth_rate)
        self.block_config = tuple(int(b) for b in block_config)
        self.bn_size = int(bn_size)
        self.dropout_prob = float(dropout_prob)
        self.net = DenseNet2d(
            in_channels=self.in_channels,
            out_channels=1,
            init_features=self.init_features,
            growth_rate=self.growth_rate,
            block_config=self.block_config,
            bn_size=self.bn_size,
            dropout_prob=self.dropout_prob,
        )
        self.register_buffer("target_offset", torch.tensor(float(target_offset), dtype=torch.float32))
        self.register_buffer("target_scale", torch.tensor(float(target_scale), dtype=torch.float32))

    def config(self) -> dict:
        """The constructor's arguments (stored with the weights)."""
        return {
            "in_channels": self.in_channels,
            "init_features": self.init_features,
            "growth_rate": self.growth_rate,
            "block_config": list(self.block_config),
            "bn_size": self.bn_size,
            "dropout_prob": self.dropout_prob,
            "target_offset": float(self.target_offset),
            "target_scale": float(self.target_scale),
        }

    def forward_scaled(self, x: torch.Tensor) -> torch.Tensor:
        """The network's raw output, (bmd - offset) / scale, shape (N,)."""
        return self.net(x).reshape(-1)

    def scale_target(self, bmd: torch.Tensor) -> torch.Tensor:
        return (bmd - self.target_offset) / self.target_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"BMDRegressor expects (N, C, H, W) patches; got shape {tuple(x.shape)}")
        return self.forward_scaled(x) * self.target_scale + self.target_offset


def make_densenet121(**kwargs) -> BMDRegressor:
    """The paper's regression network: DenseNet-121, 3 input channels, one BMD output."""
    return BMDRegressor(**kwargs)
