"""Metrics that say whether a map can be trusted: faithfulness and localization.

Every metric takes maps from any method (an extractor's list, a tensor ``(N, H, W)`` or
``(N, 1, H, W)``, numpy arrays), resizes them to the input, runs the model batched in eval mode
under ``inference_mode`` on its own device, and returns per-sample values with their mean.

* Confidence (Grad-CAM++): :func:`confidence_change`, :func:`average_drop`,
  :func:`increase_in_confidence`, and TorchCAM's :class:`ClassificationMetric`.
* ROAD (Rong et al. 2022): :func:`road`, :func:`road_combined`, :func:`noisy_linear_imputation`.
* Deletion and insertion (RISE, Petsiuk et al. 2018): :func:`deletion`, :func:`insertion`.
* Pointing game and energy-based pointing game: :func:`pointing_game`, :func:`energy_pointing_game`.
* pytorch-grad-cam's metric classes (``CamMultImageConfidenceChange``, ``ROADMostRelevantFirst``,
  ...) are in :mod:`camkit.compat.gradcam.metrics`, the front door of that convention.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camkit import metrics
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, cam = torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4)
    >>> metrics.deletion(model, x, cam, steps=4).per_sample.shape
    torch.Size([2])
"""

from camkit.metrics._common import CurveResult as CurveResult
from camkit.metrics._common import MapsLike as MapsLike
from camkit.metrics._common import MetricResult as MetricResult
from camkit.metrics._common import TargetLike as TargetLike
from camkit.metrics._common import make_result as make_result
from camkit.metrics._common import prepare_maps as prepare_maps
from camkit.metrics._confidence import CAMExtractorLike as CAMExtractorLike
from camkit.metrics._confidence import ClassificationMetric as ClassificationMetric
from camkit.metrics._confidence import ConfidenceChange as ConfidenceChange
from camkit.metrics._confidence import average_drop as average_drop
from camkit.metrics._confidence import confidence_change as confidence_change
from camkit.metrics._confidence import increase_in_confidence as increase_in_confidence
from camkit.metrics._deletion import deletion as deletion
from camkit.metrics._deletion import gaussian_blur as gaussian_blur
from camkit.metrics._deletion import insertion as insertion
from camkit.metrics._pointing import boxes_to_masks as boxes_to_masks
from camkit.metrics._pointing import energy_pointing_game as energy_pointing_game
from camkit.metrics._pointing import pointing_game as pointing_game
from camkit.metrics._road import DEFAULT_PERCENTILES as DEFAULT_PERCENTILES
from camkit.metrics._road import checked_percentiles as checked_percentiles
from camkit.metrics._road import noisy_linear_imputation as noisy_linear_imputation
from camkit.metrics._road import removal_masks as removal_masks
from camkit.metrics._road import road as road
from camkit.metrics._road import road_at as road_at
from camkit.metrics._road import road_combined as road_combined

__all__ = [
    "DEFAULT_PERCENTILES",
    "CAMExtractorLike",
    "ClassificationMetric",
    "ConfidenceChange",
    "CurveResult",
    "MapsLike",
    "MetricResult",
    "TargetLike",
    "average_drop",
    "boxes_to_masks",
    "checked_percentiles",
    "confidence_change",
    "deletion",
    "energy_pointing_game",
    "gaussian_blur",
    "increase_in_confidence",
    "insertion",
    "make_result",
    "noisy_linear_imputation",
    "pointing_game",
    "prepare_maps",
    "removal_masks",
    "road",
    "road_at",
    "road_combined",
]
