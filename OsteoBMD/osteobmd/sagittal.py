"""METHOD 2 preprocessing: sagittal images for the segmentation network, and back.

A sagittal image is `s[z, y]` (rows = axial slices inferior->superior, columns =
anterior->posterior) with spacing (sz, sy) in mm. The network sees it windowed to [0, 1]
(WL 350 / WW 1000), resampled to a fixed spacing (Decision: the same anatomy size on
every scanner) and padded (or centre-cropped/padded to the paper's 512 x 512).
`SagittalGrid` remembers every step so probabilities map back exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from .config import SegmentationConfig

Spacing2D = Tuple[float, float]


def sagittal_slice(volume_kji: np.ndarray, i: int) -> np.ndarray:
    """The sagittal image at x index i of an LPS volume array (k, j, i)."""
    return np.asarray(volume_kji[:, :, i])


def window01(hu: np.ndarray, cfg: SegmentationConfig = SegmentationConfig()) -> np.ndarray:
    """Window (level, width) and scale to [0, 1] with fixed bounds (never per image)."""
    low = cfg.window_level - cfg.window_width / 2.0
    return np.clip((np.asarray(hu, np.float32) - low) / cfg.window_width, 0.0, 1.0)


@dataclass
class SagittalGrid:
    """How a sagittal image of `in_shape` at `in_spacing` became the network's input."""

    in_shape: Tuple[int, int]
    in_spacing: Spacing2D
    spacing: float
    resampled_shape: Tuple[int, int]
    # Where the resampled image sits in the network image: out[r + off] = resampled[r].
    # Negative offsets mean the resampled image was cropped.
    offset: Tuple[int, int]
    out_shape: Tuple[int, int]

    @staticmethod
    def make(in_shape, in_spacing: Spacing2D, cfg: SegmentationConfig, multiple: int = 16) -> "SagittalGrid":
        resampled = tuple(
            max(1, int(np.floor((n - 1) * s / cfg.spacing_mm)) + 1) for n, s in zip(in_shape, in_spacing)
        )
        if cfg.crop_size:
            out = (int(cfg.crop_size), int(cfg.crop_size))
        else:
            out = tuple(int(np.ceil(n / multiple) * multiple) for n in resampled)
        offset = tuple((o - r) // 2 for o, r in zip(out, resampled))
        return SagittalGrid(tuple(in_shape), tuple(in_spacing), cfg.spacing_mm, resampled, offset, out)

    def _resample(self, image: np.ndarray, order: int, cval: float) -> np.ndarray:
        scale = [self.spacing / s for s in self.in_spacing]
        return ndimage.affine_transform(
            image, scale, output_shape=self.resampled_shape, order=order, mode="nearest", cval=cval,
            prefilter=False,
        )

    def _overlap(self):
        """(resampled-frame slices, network-frame slices) of the part both frames hold."""
        res, net = [], []
        for off, n_res, n_out in zip(self.offset, self.resampled_shape, self.out_shape):
            lo_net, lo_res = max(off, 0), max(-off, 0)
            n = min(n_res - lo_res, n_out - lo_net)
            res.append(slice(lo_res, lo_res + n))
            net.append(slice(lo_net, lo_net + n))
        return tuple(res), tuple(net)

    def _place(self, resampled: np.ndarray, fill: float) -> np.ndarray:
        """Pad or crop the resampled image into the network's frame."""
        out = np.full(self.out_shape, fill, dtype=resampled.dtype)
        res, net = self._overlap()
        out[net] = resampled[res]
        return out

    def image_to_network(self, image01: np.ndarray) -> np.ndarray:
        return self._place(self._resample(image01.astype(np.float32), order=1, cval=0.0), 0.0)

    def labels_to_network(self, labels: np.ndarray) -> np.ndarray:
        return self._place(self._resample(labels.astype(np.uint8), order=0, cval=0), 0)

    def to_input_grid(self, maps: np.ndarray) -> np.ndarray:
        """Map network-frame maps (C, H, W) back to the input sagittal grid (C, Z, Y).

        Outside the network's frame (cropped away) the maps are 0.
        """
        c = maps.shape[0]
        # Undo the placement: network frame -> resampled frame.
        resampled = np.zeros((c,) + tuple(self.resampled_shape), np.float32)
        res, net = self._overlap()
        resampled[(slice(None),) + res] = maps[(slice(None),) + net]
        # Resampled frame -> input grid: input row r sits at resampled row r * s / spacing.
        scale = [s / self.spacing for s in self.in_spacing]
        return np.stack([
            ndimage.affine_transform(
                resampled[ch], scale, output_shape=self.in_shape, order=1, mode="nearest", prefilter=False
            )
            for ch in range(c)
        ])


def prepare_for_network(
    s_hu: np.ndarray, spacing_zy: Spacing2D, cfg: SegmentationConfig = SegmentationConfig(), multiple: int = 16
) -> Tuple[np.ndarray, SagittalGrid]:
    """Window, resample and pad one sagittal HU image; returns (image01, grid)."""
    grid = SagittalGrid.make(s_hu.shape, spacing_zy, cfg, multiple)
    return grid.image_to_network(window01(s_hu, cfg)), grid


def resample_labels(
    labels2d: np.ndarray, spacing_zy: Spacing2D, cfg: SegmentationConfig = SegmentationConfig(),
    multiple: int = 16, grid: Optional[SagittalGrid] = None,
) -> np.ndarray:
    """The label image on the same network grid as `prepare_for_network` (nearest neighbour)."""
    grid = grid or SagittalGrid.make(labels2d.shape, spacing_zy, cfg, multiple)
    return grid.labels_to_network(labels2d)
