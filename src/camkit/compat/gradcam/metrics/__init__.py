"""pytorch-grad-cam's metric classes, at its module paths: ``metrics.cam_mult_image`` and ``metrics.road``.

``from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst`` becomes
``from camkit.compat.gradcam.metrics.road import ROADMostRelevantFirst``; the classes run on
camkit's batched, device-native metrics (:mod:`camkit.metrics`). How they differ from
pytorch-grad-cam 1.5.7 is listed in :mod:`camkit.compat.gradcam.metrics._classes`.
"""

from ._classes import CamMultImageConfidenceChange as CamMultImageConfidenceChange
from ._classes import DropInConfidence as DropInConfidence
from ._classes import IncreaseInConfidence as IncreaseInConfidence
from ._classes import ROADCombined as ROADCombined
from ._classes import ROADLeastRelevantFirst as ROADLeastRelevantFirst
from ._classes import ROADLeastRelevantFirstAverage as ROADLeastRelevantFirstAverage
from ._classes import ROADMostRelevantFirst as ROADMostRelevantFirst
from ._classes import ROADMostRelevantFirstAverage as ROADMostRelevantFirstAverage

__all__ = [
    "CamMultImageConfidenceChange",
    "DropInConfidence",
    "IncreaseInConfidence",
    "ROADCombined",
    "ROADLeastRelevantFirst",
    "ROADLeastRelevantFirstAverage",
    "ROADMostRelevantFirst",
    "ROADMostRelevantFirstAverage",
]
