"""``torchcam.methods``: every TorchCAM extractor class, as camkit's (:mod:`camkit.methods`).

Example:
    >>> from camkit.compat.torchcam.methods import GradCAM, LayerCAM, ScoreCAM
    >>> import camkit.methods
    >>> GradCAM is camkit.methods.GradCAM
    True
"""

from camkit.compat.torchcam.methods.activation import CAM, ISCAM, SSCAM, ScoreCAM
from camkit.compat.torchcam.methods.core import OutputTarget
from camkit.compat.torchcam.methods.gradient import (
    FinerCAM,
    GradCAM,
    GradCAMpp,
    LayerCAM,
    LeGrad,
    RefineCAM,
    SmoothGradCAMpp,
    XGradCAM,
)

__all__ = [
    "CAM",
    "ISCAM",
    "SSCAM",
    "FinerCAM",
    "GradCAM",
    "GradCAMpp",
    "LayerCAM",
    "LeGrad",
    "OutputTarget",
    "RefineCAM",
    "ScoreCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
]
