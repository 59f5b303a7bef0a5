"""pytorch-grad-cam's targets (``pytorch_grad_cam.utils.model_targets``), from :mod:`camkit.targets`.

Each works on one image's output (pytorch-grad-cam's convention, a list with one per image) and
on a whole batch (camkit's convention).
"""

from camkit.targets import BinaryClassifierOutputTarget as BinaryClassifierOutputTarget
from camkit.targets import ClassifierOutputReST as ClassifierOutputReST
from camkit.targets import ClassifierOutputSoftmaxTarget as ClassifierOutputSoftmaxTarget
from camkit.targets import ClassifierOutputTarget as ClassifierOutputTarget
from camkit.targets import FasterRCNNBoxScoreTarget as FasterRCNNBoxScoreTarget
from camkit.targets import SemanticSegmentationTarget as SemanticSegmentationTarget
from camkit.targets import SimilarityToConceptTarget as SimilarityToConceptTarget

__all__ = [
    "BinaryClassifierOutputTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "SemanticSegmentationTarget",
    "SimilarityToConceptTarget",
]
