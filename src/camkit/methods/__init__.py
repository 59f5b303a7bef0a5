"""CAM methods: registered weight functions and their TorchCAM-compatible extractor classes.

Example:
    >>> from camkit.methods import GradCAM, LayerCAM, ScoreCAM, CAM
"""

from camkit.methods import ablation as ablation
from camkit.methods import activation as activation
from camkit.methods import gradient as gradient
from camkit.methods import score as score
from camkit.methods.extractors import CAM as CAM
from camkit.methods.extractors import ISCAM as ISCAM
from camkit.methods.extractors import SSCAM as SSCAM
from camkit.methods.extractors import GradCAM as GradCAM
from camkit.methods.extractors import GradCAMpp as GradCAMpp
from camkit.methods.extractors import LayerCAM as LayerCAM
from camkit.methods.extractors import ScoreCAM as ScoreCAM
from camkit.methods.extractors import SmoothGradCAMpp as SmoothGradCAMpp
from camkit.methods.extractors import XGradCAM as XGradCAM

__all__ = [
    "CAM",
    "ISCAM",
    "SSCAM",
    "GradCAM",
    "GradCAMpp",
    "LayerCAM",
    "ScoreCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
]
