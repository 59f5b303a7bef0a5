"""``torchcam.methods.gradient``: the gradient-based CAM classes, camkit's own classes (:mod:`camkit.methods`).

Same constructor arguments and call as TorchCAM's (``extractor(class_idx, scores)``); the maps
follow each method's paper where TorchCAM's code departs from it (see
``docs/coming-from-peers.md``). ``targets=`` takes TorchCAM's per-sample ``OutputTarget``s (one
callable of one sample's output, or a list with one per sample) as well as camkit targets
(:mod:`camkit.targets`).

``FinerCAM`` is the one class with a default of its own here: TorchCAM averages the reference
classes uniformly, camkit's native class weighs them by softmax as the authors' code does, so the
mirror defaults to ``weighting="uniform"`` and code written for TorchCAM gets TorchCAM's maps.
"""

from __future__ import annotations

from typing import Any

from torch import nn

import camkit.methods
from camkit.engine import CAMExtractor
from camkit.methods import GradCAM, GradCAMpp, LayerCAM, LeGrad, RefineCAM, SmoothGradCAMpp, XGradCAM

__all__ = ["FinerCAM", "GradCAM", "GradCAMpp", "LayerCAM", "LeGrad", "RefineCAM", "SmoothGradCAMpp", "XGradCAM"]


class FinerCAM(camkit.methods.FinerCAM):
    """:class:`camkit.methods.FinerCAM` with TorchCAM 0.5's defaults and checks.

    References are weighted uniformly, and the base method is one of TorchCAM's (``GradCAM``,
    ``GradCAMpp`` or ``LayerCAM``; camkit's own :class:`camkit.methods.FinerCAM` takes any
    registry method).

    Example:
        >>> from torchvision.models import resnet18
        >>> cam = FinerCAM(resnet18().eval(), "layer4")
        >>> cam.weighting
        'uniform'
        >>> cam.remove_hooks()
    """

    def __init__(
        self,
        model: nn.Module | CAMExtractor,
        target_layer: Any = None,
        input_shape: tuple[int, ...] = (3, 224, 224),
        *,
        base_method: type[CAMExtractor] = GradCAM,
        gamma: float = 0.6,
        num_references: int = 3,
        weighting: str = "uniform",
        **base_kwargs: Any,
    ) -> None:
        if not (isinstance(base_method, type) and issubclass(base_method, (GradCAM, GradCAMpp, LayerCAM))):
            raise TypeError(
                "base_method must be GradCAM, GradCAMpp, or LayerCAM (TorchCAM's FinerCAM; camkit.methods.FinerCAM "
                f"takes any registry method), got {getattr(base_method, '__name__', base_method)!r}"
            )
        super().__init__(
            model,
            target_layer,
            input_shape,
            base_method=base_method,
            gamma=gamma,
            num_references=num_references,
            weighting=weighting,
            **base_kwargs,
        )
