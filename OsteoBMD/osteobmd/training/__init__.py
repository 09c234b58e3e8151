"""Training the networks (`osteobmd train ...`), all on one loop (loop.py).

Segmentation and regression train on a ground-truth folder whose samples are made with
the pipeline's own functions (canal, sagittal, patches), so the networks are trained on
exactly what inference feeds them. The vertebra finder trains on sagittal phantoms
generated on the fly (synthetic.sagittal_phantom).
"""

from .finder import FinderTrainConfig, train_finder
from .regression import RegressionTrainConfig, train_regression
from .segmentation import SegmentationTrainConfig, train_segmentation

__all__ = ["FinderTrainConfig", "RegressionTrainConfig", "SegmentationTrainConfig", "train_finder",
           "train_regression", "train_segmentation"]
