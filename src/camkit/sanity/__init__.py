"""Can this map be trusted? Sanity checks of CAM methods: model randomisation and random logit.

* :func:`model_randomization`: the model-parameter randomisation test of Adebayo et al. (2018),
  Sanity Checks for Saliency Maps: a map that explains the model must change when its learned
  parameters are replaced by random ones (layer by layer from the top, on a copy of the model).
* :func:`random_logit`: the random-logit test of Sixt et al. (2020), When Explanations Lie: the
  map of the explained class must differ from the map of a random other class.

Similarities (:data:`MEASURES`, batched in torch): Spearman rank correlation of the absolute maps,
SSIM, Pearson correlation of HOG features. :func:`edges` is a baseline that ignores the model (a
Sobel edge map of the input); it fails both checks, and shows what failing looks like.
See docs/sanity.md.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camkit.sanity import model_randomization
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                     nn.Linear(8, 4)).eval()
    >>> result = model_randomization(net, torch.rand(1, 3, 32, 32), ["gradcam", "edges"], target_layer="1")
    >>> result.layers, result.passed["edges"], result.similarity["spearman"].shape  # layers x images x methods
    (['4', '0'], False, torch.Size([2, 1, 2]))
"""

from camkit.sanity._checks import BASELINES as BASELINES
from camkit.sanity._checks import DEFAULT_THRESHOLD as DEFAULT_THRESHOLD
from camkit.sanity._checks import MODES as MODES
from camkit.sanity._checks import Explainer as Explainer
from camkit.sanity._checks import ModelRandomization as ModelRandomization
from camkit.sanity._checks import RandomLogit as RandomLogit
from camkit.sanity._checks import edges as edges
from camkit.sanity._checks import model_randomization as model_randomization
from camkit.sanity._checks import parameter_layers as parameter_layers
from camkit.sanity._checks import random_logit as random_logit
from camkit.sanity._similarity import MEASURES as MEASURES
from camkit.sanity._similarity import hog as hog
from camkit.sanity._similarity import hog_pearson as hog_pearson
from camkit.sanity._similarity import pearson as pearson
from camkit.sanity._similarity import spearman as spearman
from camkit.sanity._similarity import ssim as ssim

__all__ = [
    "BASELINES",
    "DEFAULT_THRESHOLD",
    "MEASURES",
    "MODES",
    "Explainer",
    "ModelRandomization",
    "RandomLogit",
    "edges",
    "hog",
    "hog_pearson",
    "model_randomization",
    "parameter_layers",
    "pearson",
    "random_logit",
    "spearman",
    "ssim",
]
