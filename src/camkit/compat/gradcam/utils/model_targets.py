"""pytorch-grad-cam's targets (``pytorch_grad_cam.utils.model_targets``), from :mod:`camkit.targets`.

Each works on one image's output (pytorch-grad-cam's convention, a list with one per image) and
on a whole batch (camkit's convention). :class:`RawScoresOutputTarget` and
:class:`SoftmaxOutputTarget` return every score (not one scalar per image): they are for metrics
and for inspecting outputs, as in pytorch-grad-cam; a CAM needs a scalar target per image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from camkit.methods.wrappers import FinerWeightedTarget as FinerWeightedTarget
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
    "FinerWeightedTarget",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
    "SimilarityToConceptTarget",
    "SoftmaxOutputTarget",
]


class RawScoresOutputTarget:
    """The model output unchanged: all raw scores (pytorch-grad-cam's ``RawScoresOutputTarget``).

    Example:
        >>> RawScoresOutputTarget()(torch.tensor([1.0, 2.0]))
        tensor([1., 2.])
    """

    def __call__(self, model_output: Tensor) -> Tensor:
        """Return ``model_output`` itself."""
        return model_output

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxOutputTarget:
    """The softmax over the last dim of the output: all probabilities (pytorch-grad-cam's ``SoftmaxOutputTarget``).

    Example:
        >>> SoftmaxOutputTarget()(torch.tensor([0.0, 0.0]))
        tensor([0.5000, 0.5000])
    """

    def __call__(self, model_output: Tensor) -> Tensor:
        """Return ``softmax(model_output, dim=-1)``."""
        return torch.softmax(model_output, dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
