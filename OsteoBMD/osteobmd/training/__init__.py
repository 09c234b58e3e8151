"""Training the two networks on a ground-truth folder (`osteobmd train ...`).

The samples are made with the pipeline's own functions (canal, sagittal, patches), so
the networks are trained on exactly what inference feeds them.
"""

from .regression import RegressionTrainConfig, train_regression
from .segmentation import SegmentationTrainConfig, train_segmentation

__all__ = ["RegressionTrainConfig", "SegmentationTrainConfig", "train_regression", "train_segmentation"]
