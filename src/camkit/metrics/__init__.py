"""Metrics that say whether a map can be trusted: faithfulness and localization.

Every metric takes maps from any method (an extractor's list, a tensor ``(N, H, W)`` or
``(N, 1, H, W)``, numpy arrays), resizes them to the input, runs the model batched in eval mode
under ``inference_mode`` on its own device, and returns per-sample values with their mean.

* Confidence (Grad-CAM++): :func:`confidence_change`, :func:`average_drop`,
  :func:`increase_in_confidence`, and TorchCAM's :class:`ClassificationMetric`.
* ROAD (Rong et al. 2022): :func:`road`, :func:`road_combined`, :func:`noisy_linear_imputation`.
* Deletion and insertion (RISE, Petsiuk et al. 2018): :func:`deletion`, :func:`insertion`.
* Pointing game and energy-based pointing game: :func:`pointing_game`, :func:`energy_pointing_game`.
* Faithfulness families: :func:`faithfulness_correlation`, :func:`monotonicity`, :func:`pixel_flipping`,
  :func:`region_perturbation`, :func:`selectivity`, :func:`irof`, :func:`infidelity`, :func:`average_gain`,
  :func:`adcc`, :func:`arcc` (and its :func:`coherency`).
* Robustness (re-run the explanation): :func:`max_sensitivity`, :func:`avg_sensitivity`,
  :func:`local_lipschitz_estimate`.
* Localisation against masks or boxes: :func:`relevance_mass_accuracy`, :func:`relevance_rank_accuracy`,
  :func:`top_k_intersection`, :func:`attribution_localisation`, :func:`auc`.
* Complexity: :func:`sparseness`, :func:`complexity`, :func:`effective_complexity`, :func:`l1_complexity`.
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

from camkit.metrics._cam_scores import adcc as adcc
from camkit.metrics._cam_scores import arcc as arcc
from camkit.metrics._cam_scores import average_gain as average_gain
from camkit.metrics._cam_scores import coherency as coherency
from camkit.metrics._common import CurveResult as CurveResult
from camkit.metrics._common import MapsLike as MapsLike
from camkit.metrics._common import MetricResult as MetricResult
from camkit.metrics._common import TargetLike as TargetLike
from camkit.metrics._common import make_result as make_result
from camkit.metrics._common import prepare_maps as prepare_maps
from camkit.metrics._complexity import complexity as complexity
from camkit.metrics._complexity import effective_complexity as effective_complexity
from camkit.metrics._complexity import l1_complexity as l1_complexity
from camkit.metrics._complexity import sparseness as sparseness
from camkit.metrics._confidence import CAMExtractorLike as CAMExtractorLike
from camkit.metrics._confidence import ClassificationMetric as ClassificationMetric
from camkit.metrics._confidence import ConfidenceChange as ConfidenceChange
from camkit.metrics._confidence import average_drop as average_drop
from camkit.metrics._confidence import confidence_change as confidence_change
from camkit.metrics._confidence import increase_in_confidence as increase_in_confidence
from camkit.metrics._deletion import deletion as deletion
from camkit.metrics._deletion import gaussian_blur as gaussian_blur
from camkit.metrics._deletion import insertion as insertion
from camkit.metrics._faithfulness import faithfulness_correlation as faithfulness_correlation
from camkit.metrics._faithfulness import infidelity as infidelity
from camkit.metrics._faithfulness import monotonicity as monotonicity
from camkit.metrics._faithfulness import pixel_flipping as pixel_flipping
from camkit.metrics._localisation import attribution_localisation as attribution_localisation
from camkit.metrics._localisation import auc as auc
from camkit.metrics._localisation import relevance_mass_accuracy as relevance_mass_accuracy
from camkit.metrics._localisation import relevance_rank_accuracy as relevance_rank_accuracy
from camkit.metrics._localisation import top_k_intersection as top_k_intersection
from camkit.metrics._pointing import boxes_to_masks as boxes_to_masks
from camkit.metrics._pointing import energy_pointing_game as energy_pointing_game
from camkit.metrics._pointing import pointing_game as pointing_game
from camkit.metrics._regions import irof as irof
from camkit.metrics._regions import region_perturbation as region_perturbation
from camkit.metrics._regions import selectivity as selectivity
from camkit.metrics._road import DEFAULT_PERCENTILES as DEFAULT_PERCENTILES
from camkit.metrics._road import checked_percentiles as checked_percentiles
from camkit.metrics._road import noisy_linear_imputation as noisy_linear_imputation
from camkit.metrics._road import removal_masks as removal_masks
from camkit.metrics._road import road as road
from camkit.metrics._road import road_at as road_at
from camkit.metrics._road import road_combined as road_combined
from camkit.metrics._robustness import ExplainLike as ExplainLike
from camkit.metrics._robustness import avg_sensitivity as avg_sensitivity
from camkit.metrics._robustness import local_lipschitz_estimate as local_lipschitz_estimate
from camkit.metrics._robustness import max_sensitivity as max_sensitivity

__all__ = [
    "DEFAULT_PERCENTILES",
    "CAMExtractorLike",
    "ClassificationMetric",
    "ConfidenceChange",
    "CurveResult",
    "ExplainLike",
    "MapsLike",
    "MetricResult",
    "TargetLike",
    "adcc",
    "arcc",
    "attribution_localisation",
    "auc",
    "average_drop",
    "average_gain",
    "avg_sensitivity",
    "boxes_to_masks",
    "checked_percentiles",
    "coherency",
    "complexity",
    "confidence_change",
    "deletion",
    "effective_complexity",
    "energy_pointing_game",
    "faithfulness_correlation",
    "gaussian_blur",
    "increase_in_confidence",
    "infidelity",
    "insertion",
    "irof",
    "l1_complexity",
    "local_lipschitz_estimate",
    "make_result",
    "max_sensitivity",
    "monotonicity",
    "noisy_linear_imputation",
    "pixel_flipping",
    "pointing_game",
    "prepare_maps",
    "region_perturbation",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "removal_masks",
    "road",
    "road_at",
    "road_combined",
    "selectivity",
    "sparseness",
    "top_k_intersection",
]
