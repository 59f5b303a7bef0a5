"""``torchcam.methods.core``: the extractor base class and the output-target type.

``_CAM`` is camkit's :class:`camkit.engine.CAMExtractor`, the base of every class in
:mod:`camkit.methods` (``isinstance(extractor, _CAM)`` holds for them). Subclassing it the
TorchCAM way (overriding ``_get_weights``) is not supported: register a weight function with
:func:`camkit.register` instead (see ``docs/methods.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from camkit.engine import CAMExtractor

__all__ = ["_CAM", "OutputTarget"]

#: TorchCAM's scalar output target: called on ONE sample's model output, returns a scalar tensor.
#: camkit's extractors take it (one for the batch, or a list with one per sample; see
#: :mod:`camkit.targets.samples`) as well as camkit's batched targets
#: (``target(output, rows=None) -> (B,)``, e.g. ``camkit.targets.ClassTarget``).
OutputTarget = Callable[[Any], Tensor]

_CAM = CAMExtractor
