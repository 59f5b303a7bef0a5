"""CAM methods: registered weight functions and their TorchCAM-compatible extractor classes.

``LeGrad`` and ``AttentionRollout`` (vision transformers) read attention instead of one layer's
activation, so they are extractor classes without a registry entry (see :mod:`camkit.methods.attention`).

Example:
    >>> from camkit.methods import GradCAM, LayerCAM, ScoreCAM, CAM
"""

from camkit.methods import ablation as ablation
from camkit.methods import activation as activation
from camkit.methods import attention as attention
from camkit.methods import elementwise as elementwise
from camkit.methods import fullgrad as fullgrad
from camkit.methods import gradient as gradient
from camkit.methods import projection as projection
from camkit.methods import score as score
from camkit.methods.ablation import AblationCAM as AblationCAM
from camkit.methods.ablation import ReciproCAM as ReciproCAM
from camkit.methods.attention import AttentionRollout as AttentionRollout
from camkit.methods.attention import LeGrad as LeGrad
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
from camkit.methods.factorization import deep_feature_factorization as deep_feature_factorization
from camkit.methods.fullgrad import FullGrad as FullGrad
from camkit.methods.gradient import ShapleyCAM as ShapleyCAM
from camkit.methods.projection import FEM as FEM
from camkit.methods.projection import KPCA_CAM as KPCA_CAM
from camkit.methods.projection import EigenCAM as EigenCAM
from camkit.methods.projection import EigenGradCAM as EigenGradCAM
from camkit.methods.projection import RandomCAM as RandomCAM
from camkit.methods.projection import SegEigenCAM as SegEigenCAM
from camkit.methods.wrappers import SESS as SESS
from camkit.methods.wrappers import FinerCAM as FinerCAM
from camkit.methods.wrappers import FinerWeightedTarget as FinerWeightedTarget
from camkit.methods.wrappers import RefineCAM as RefineCAM

__all__ = [
    "CAM",
    "FEM",
    "ISCAM",
    "KPCA_CAM",
    "SESS",
    "SSCAM",
    "AblationCAM",
    "AttentionRollout",
    "EigenCAM",
    "EigenGradCAM",
    "FinerCAM",
    "FinerWeightedTarget",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMpp",
    "HiResCAM",
    "LayerCAM",
    "LeGrad",
    "RandomCAM",
    "ReciproCAM",
    "RefineCAM",
    "ScoreCAM",
    "SegEigenCAM",
    "ShapleyCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
    "deep_feature_factorization",
]
