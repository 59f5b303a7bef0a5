"""CAM methods: registered weight functions and their TorchCAM-compatible extractor classes.

Example:
    >>> from camkit.methods import GradCAM, LayerCAM, ScoreCAM, CAM
"""

from camkit.methods import ablation as ablation
from camkit.methods import activation as activation
from camkit.methods import elementwise as elementwise
from camkit.methods import gradient as gradient
from camkit.methods import projection as projection
from camkit.methods import score as score
from camkit.methods.elementwise import GradCAMElementWise as GradCAMElementWise
from camkit.methods.elementwise import HiResCAM as HiResCAM
from camkit.methods.extractors import CAM as CAM
from camkit.methods.extractors import ISCAM as ISCAM
from camkit.methods.extractors import SSCAM as SSCAM
from camkit.methods.extractors import GradCAM as GradCAM
from camkit.methods.extractors import GradCAMpp as GradCAMpp
from camkit.methods.extractors import LayerCAM as LayerCAM
from camkit.methods.extractors import ScoreCAM as ScoreCAM
from camkit.methods.extractors import SmoothGradCAMpp as SmoothGradCAMpp
from camkit.methods.extractors import XGradCAM as XGradCAM
from camkit.methods.projection import FEM as FEM
from camkit.methods.projection import KPCA_CAM as KPCA_CAM
from camkit.methods.projection import EigenCAM as EigenCAM
from camkit.methods.projection import EigenGradCAM as EigenGradCAM
from camkit.methods.projection import RandomCAM as RandomCAM
from camkit.methods.projection import SegEigenCAM as SegEigenCAM

__all__ = [
    "CAM",
    "FEM",
    "ISCAM",
    "KPCA_CAM",
    "SSCAM",
    "EigenCAM",
    "EigenGradCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMpp",
    "HiResCAM",
    "LayerCAM",
    "RandomCAM",
    "ScoreCAM",
    "SegEigenCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
]
