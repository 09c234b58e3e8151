"""The two networks of the method: R2U-Net (segmentation) and DenseNet-121 (BMD regression)."""

from .densenet import BMDRegressor, make_densenet121
from .r2unet import DEFAULT_WIDTHS, PAPER_WIDTHS, R2UNet, count_parameters

# Architecture names as stored in the weights' metadata -> constructor.
ARCHITECTURES = {
    "R2UNet": R2UNet,
    "DenseNet121": BMDRegressor,
}


def build(name: str, params: dict):
    """Build a network from its metadata name and constructor parameters."""
    try:
        cls = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}") from None
    return cls(**params)


__all__ = [
    "ARCHITECTURES",
    "BMDRegressor",
    "DEFAULT_WIDTHS",
    "PAPER_WIDTHS",
    "R2UNet",
    "build",
    "count_parameters",
    "make_densenet121",
]
