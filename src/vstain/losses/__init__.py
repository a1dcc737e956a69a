"""Loss functions of the reference system, each a small ``nn.Module`` with documented shapes.

Build them by name from configuration with :func:`build_loss`; the GAN history pools live next
to the relativistic losses in :mod:`vstain.losses.adversarial`.
"""

from vstain.losses.adversarial import (
    ImagePool,
    OutputHistoryPool,
    RaLSGANDiscriminatorLoss,
    RaLSGANGeneratorLoss,
)
from vstain.losses.gradient import GradientLoss, forward_differences
from vstain.losses.intensity import (
    DEFAULT_EPS,
    REFERENCE_LOG_EPS,
    LogSquaredLoss,
    MedianMAE,
    dataset_reference,
    target_median,
)
from vstain.losses.loss_weight import (
    LossWeightModuleLoss,
    LupiLoss,
    misclassification_weight,
    resize_map,
    scaled_tanh,
)
from vstain.losses.registry import LOSSES, build_loss
from vstain.losses.segmentation import SegmentationBCE, binary_mask_index, binary_one_hot

__all__ = [
    "DEFAULT_EPS",
    "LOSSES",
    "REFERENCE_LOG_EPS",
    "GradientLoss",
    "ImagePool",
    "LogSquaredLoss",
    "LossWeightModuleLoss",
    "LupiLoss",
    "MedianMAE",
    "OutputHistoryPool",
    "RaLSGANDiscriminatorLoss",
    "RaLSGANGeneratorLoss",
    "SegmentationBCE",
    "binary_mask_index",
    "binary_one_hot",
    "build_loss",
    "forward_differences",
    "misclassification_weight",
    "resize_map",
    "scaled_tanh",
    "dataset_reference",
    "target_median",
]
