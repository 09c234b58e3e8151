"""METHOD 3.6 inference: DenseNet-121 maps each 3 x 32 x 32 patch to a BMD in mg/cm3."""

from __future__ import annotations

import numpy as np
import torch


def predict_bmd(model: torch.nn.Module, patches01: np.ndarray, device: torch.device = torch.device("cpu")) -> np.ndarray:
    """BMD (mg/cm3) for patches (N, 3, size, size) scaled to [0, 1] with the fixed window."""
    if len(patches01) == 0:
        return np.zeros(0, np.float32)
    x = torch.from_numpy(np.ascontiguousarray(patches01, dtype=np.float32)).to(device)
    with torch.inference_mode():
        y = model(x).float().reshape(len(patches01), -1)[:, 0]
    return y.cpu().numpy()
