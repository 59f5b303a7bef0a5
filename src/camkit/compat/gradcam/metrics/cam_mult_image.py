"""pytorch-grad-cam's ``metrics.cam_mult_image`` module: the confidence-change classes."""

from ._classes import CamMultImageConfidenceChange as CamMultImageConfidenceChange
from ._classes import DropInConfidence as DropInConfidence
from ._classes import IncreaseInConfidence as IncreaseInConfidence

__all__ = ["CamMultImageConfidenceChange", "DropInConfidence", "IncreaseInConfidence"]
