"""R2U-Net: recurrent residual U-Net (Alom et al. 2018), METHOD section 2.

Encoder: RRCNN block -> 2x2 max-pool (stride 2) ... ; decoder: 2x2 up-convolution
(transposed conv, stride 2) + BN + ReLU, concatenation with the encoder's skip, RRCNN
block; a final 1x1 convolution to `num_classes` logits (0 background, 1..4 = L1..L4;
softmax at inference, METHOD Decision).

RRCNN block: a 1x1 convolution brings the input to the block's width, then two
recurrent convolution blocks, and the 1x1 output is added back (residual unit).

Recurrent convolution block (t time steps; one 3x3 conv, stride 1, + BN + ReLU whose
weights are shared over the time steps, as in Alom et al.'s recurrent convolutional
layer unfolded in time):

    h(0) = f(x)
    h(s) = f(x + h(s-1))    for s = 1..t      f = ReLU(BN(conv3x3(.)))

so t = 2 applies the convolution three times; t = 0 reduces it to a plain conv block.

Forward time on 2 CPU threads (torch 2.13 CPU, float32, eval mode, inference_mode,
median of 3 runs; "case" = 10 sagittal slices of 256x272 px, i.e. ~250x270 px at the
default 1.5 mm padded to a multiple of 16, run one slice at a time):

    widths          params    1x256x256   1x512x512   case (10 x 256x272)
    8..128          0.56 M     0.05 s      0.18 s      0.40 s
    16..256         2.23 M     0.10 s      0.39 s      0.95 s
    32..512         8.91 M     0.27 s      1.48 s      3.0  s
    64..1024        35.6 M     1.07 s      5.6  s     13.7  s   (the paper's widths)

Batching the 10 slices into one (10, 1, 256, 272) tensor is slower on 2 threads
(1.8 s for 16..256: the activations leave the cache); batches of 1-4 cost the same
(~1.0 s). Timings on this shared machine vary by +-30 % with its load.

Default: widths 16..256. A whole case runs in about 1 s, inside the ~2 s budget with
room for slower CPUs, while 32..512 (3 s) and the paper's 64..1024 (14 s) do not fit.
16..256 has four times the parameters of 8..128 for +0.5 s per case: 16 feature maps
at full resolution to follow thin disc spaces and endplates, and 256 at the 1/16
bottleneck (a ~24 mm cell at 1.5 mm, the receptive field spanning the whole lumbar
spine) to name each level from its context rather than from its position in the image.
The paper's widths stay available: `R2UNet(widths=PAPER_WIDTHS)`.

The input H and W must be divisible by 2 ** (len(widths) - 1) (16 for 5 levels);
`required_multiple` (alias `size_multiple`) says so and `forward` raises a ValueError naming the sizes.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

DEFAULT_WIDTHS: Tuple[int, ...] = (16, 32, 64, 128, 256)
PAPER_WIDTHS: Tuple[int, ...] = (64, 128, 256, 512, 1024)


class RecurrentConv(nn.Module):
    """Recurrent convolutional layer: one 3x3 conv (shared weights) unfolded over t steps.

    Each step has its own BatchNorm: the step inputs (x, x + h1, x + h2) have different
    statistics, and one shared BN's running averages fit none of them, so the network
    worked in training mode but predicted only background in eval mode (measured here).
    Per-step normalisation is the recurrent-BN remedy (Cooijmans et al. 2016); the
    recurrence, the shared 3x3 kernel, stays as in R2U-Net.
    """

    def __init__(self, channels: int, t: int = 2):
        super().__init__()
        if t < 0:
            raise ValueError(f"t must be >= 0, got {t}")
        self.t = int(t)
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(self.t + 1))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norms[0](self.conv(x)))
        for step in range(1, self.t + 1):
            h = self.act(self.norms[step](self.conv(x + h)))
        return h


class RRCNNBlock(nn.Module):
    """Recurrent residual block: 1x1 conv to width, two recurrent convs, residual add."""

    def __init__(self, in_channels: int, out_channels: int, t: int = 2):
        super().__init__()
        self.conv1x1 = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
        self.rcnn = nn.Sequential(RecurrentConv(out_channels, t), RecurrentConv(out_channels, t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1x1(x)
        return x + self.rcnn(x)


class UpConv(nn.Module):
    """2x2 up-convolution (transposed conv, stride 2) + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class R2UNet(nn.Module):
    """Recurrent residual U-Net returning per-pixel class logits (N, num_classes, H, W)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 5,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        t: int = 2,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths must list at least two positive channel counts, got {widths}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.widths = widths
        self.t = int(t)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.encoders = nn.ModuleList()
        prev = self.in_channels
        for w in widths:
            self.encoders.append(RRCNNBlock(prev, w, t))
            prev = w
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for deep, shallow in zip(widths[:0:-1], widths[-2::-1]):
            self.ups.append(UpConv(deep, shallow))
            self.decoders.append(RRCNNBlock(2 * shallow, shallow, t))
        self.head = nn.Conv2d(widths[0], self.num_classes, kernel_size=1, stride=1, padding=0)

    @property
    def required_multiple(self) -> int:
        """H and W must be multiples of this (2 ** number of poolings)."""
        return 2 ** (len(self.widths) - 1)

    # The name segmentation.py asks for (getattr(model, "size_multiple", 16)).
    size_multiple = required_multiple

    def config(self) -> dict:
        """The constructor's arguments (stored with the weights)."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "widths": list(self.widths),
            "t": self.t,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.required_multiple
        if x.dim() != 4 or x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(
                f"R2UNet expects an (N, C, H, W) tensor with H and W divisible by {m}; "
                f"got shape {tuple(x.shape)}. Pad the image first."
            )
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        x = skips.pop()
        for up, decoder in zip(self.ups, self.decoders):
            x = decoder(torch.cat((skips.pop(), up(x)), dim=1))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
