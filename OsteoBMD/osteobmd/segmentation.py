"""METHOD 2 inference: the R2U-Net vertebra finder on the candidate sagittal slab.

Each slab slice is windowed, resampled and passed through the network; the softmax
probabilities of all slices are averaged (fusion) and the argmax is mapped back to the CT's
sagittal grid: background, vertebral body or sacrum. The network does not name levels
(Decision, docs/METHOD.md section 2): naming.py counts them from the sacrum and the ribs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from .canal import CanalResult
from .config import SegmentationConfig
from .progress import ProgressCallback, silent
from .sagittal import SagittalGrid, sagittal_slice, window01
from .weights import network_config


def _size_multiple(model: torch.nn.Module) -> int:
    return int(getattr(model, "size_multiple", 16))


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
    """What the finder saw on the slab: a sagittal class map on the CT's own sagittal grid."""

    fused: np.ndarray  # s[z, y]: 0 background, 1 vertebral body, 2 sacrum (bodies.BODY_CLASS, SACRUM_CLASS)
    spacing_zy: Tuple[float, float]  # of `fused`, in mm
    slab_indices: Tuple[int, ...]  # the CT's x indices (LPS array i) the map was fused over

    def labels_volume(self, ct: sitk.Image, sagittal_labels: np.ndarray) -> sitk.Image:
        """A label volume on the CT's grid holding `sagittal_labels` in every slab slice."""
        out = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.uint8)
        for i in self.slab_indices:
            out[:, :, i] = sagittal_labels
        image = sitk.GetImageFromArray(out)
        image.CopyInformation(ct)
        return image


def find_vertebrae(
    ct: sitk.Image, canal: CanalResult, model: torch.nn.Module, meta: dict,
    cfg: SegmentationConfig = SegmentationConfig(), device: torch.device = torch.device("cpu"),
    progress: ProgressCallback = silent,
) -> Segmentation:
    """Vertebral bodies and the sacrum on the canal's sagittal slab (no level names: naming.py counts)."""
    progress("segmentation", 0.0, "finding vertebral bodies on sagittal images")
    cfg = network_config(meta, cfg)
    volume = sitk.GetArrayViewFromImage(ct)
    sx, sy, sz = ct.GetSpacing()
    probs = fused_probabilities(volume, canal.slab_indices, (sz, sy), model, cfg, device, progress)
    progress("segmentation", 1.0, "vertebral bodies found")
    return Segmentation(np.argmax(probs, axis=0).astype(np.uint8), (sz, sy), tuple(canal.slab_indices))
