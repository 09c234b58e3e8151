"""METHOD 2 inference: R2U-Net on the candidate sagittal slab, fused into one label map.

Each slab slice is windowed, resampled and passed through the network; the softmax
probabilities of all slices are averaged (fusion), the argmax is mapped back to the CT's
sagittal grid and written into every slab slice of a label volume on the CT's grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from .canal import CanalResult
from .config import LABEL_OF, SegmentationConfig
from .progress import ProgressCallback, silent
from .sagittal import SagittalGrid, sagittal_slice, window01
from .weights import network_config


def _size_multiple(model: torch.nn.Module) -> int:
    return int(getattr(model, "size_multiple", 16))


def keep_largest_component(labels2d: np.ndarray) -> np.ndarray:
    """One body per label: stray islands of a label are background."""
    out = np.zeros_like(labels2d)
    for value in np.unique(labels2d):
        if value == 0:
            continue
        comps, n = ndimage.label(labels2d == value)
        if n > 1:
            sizes = np.bincount(comps.ravel())
            sizes[0] = 0
            out[comps == int(np.argmax(sizes))] = value
        else:
            out[comps == 1] = value
    return out


def fused_probabilities(
    volume_kji: np.ndarray, slab, spacing_zy, model: torch.nn.Module, cfg: SegmentationConfig,
    device: torch.device, progress: ProgressCallback = silent, batch_size: int = 4,
) -> np.ndarray:
    """Mean softmax probabilities over the slab, on the CT's sagittal grid: (C, Z, Y)."""
    grid: Optional[SagittalGrid] = None
    images = []
    for i in slab:
        s = sagittal_slice(volume_kji, i)
        grid = grid or SagittalGrid.make(s.shape, spacing_zy, cfg, _size_multiple(model))
        images.append(grid.image_to_network(window01(s, cfg)))
    batch = torch.from_numpy(np.stack(images)[:, None])
    total = None
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = batch[start:start + batch_size].to(device)
            p = torch.softmax(model(x).float(), dim=1).sum(dim=0)
            total = p if total is None else total + p
            progress("segmentation", min(1.0, (start + batch_size) / len(images)) * 0.9,
                     f"sagittal slices {min(start + batch_size, len(images))}/{len(images)}")
    mean = (total / len(images)).cpu().numpy()
    return grid.to_input_grid(mean)


@dataclass
class Segmentation:
    labels: sitk.Image  # L1-L4 (1..4) on the CT's grid, in the slab's sagittal slices
    fused: np.ndarray  # the fused sagittal class map s[z, y], anchor classes included
    spacing_zy: Tuple[float, float]  # of `fused`, in mm


def segment_lumbar(
    ct: sitk.Image, canal: CanalResult, model: torch.nn.Module, meta: dict,
    cfg: SegmentationConfig = SegmentationConfig(), device: torch.device = torch.device("cpu"),
    progress: ProgressCallback = silent,
) -> Segmentation:
    """Segment L1-L4 (and the anchor classes, kept in `fused`) on the canal's sagittal slab."""
    progress("segmentation", 0.0, "segmenting L1-L4 on sagittal images")
    cfg = network_config(meta, cfg)
    volume = sitk.GetArrayViewFromImage(ct)
    sx, sy, sz = ct.GetSpacing()
    probs = fused_probabilities(volume, canal.slab_indices, (sz, sy), model, cfg, device, progress)
    fused = keep_largest_component(np.argmax(probs, axis=0).astype(np.uint8))
    lumbar = np.where(fused <= max(LABEL_OF.values()), fused, 0).astype(np.uint8)
    out = np.zeros(volume.shape, np.uint8)
    for i in canal.slab_indices:
        out[:, :, i] = lumbar
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(ct)
    progress("segmentation", 1.0, "segmentation done")
    return Segmentation(image, fused, (sz, sy))
