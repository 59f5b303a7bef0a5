"""pytorch-grad-cam's ``metrics.road`` module: the ROAD classes."""

from ._classes import ROADCombined as ROADCombined
from ._classes import ROADLeastRelevantFirst as ROADLeastRelevantFirst
from ._classes import ROADLeastRelevantFirstAverage as ROADLeastRelevantFirstAverage
from ._classes import ROADMostRelevantFirst as ROADMostRelevantFirst
from ._classes import ROADMostRelevantFirstAverage as ROADMostRelevantFirstAverage

__all__ = [
    "ROADCombined",
    "ROADLeastRelevantFirst",
    "ROADLeastRelevantFirstAverage",
    "ROADMostRelevantFirst",
    "ROADMostRelevantFirstAverage",
]
