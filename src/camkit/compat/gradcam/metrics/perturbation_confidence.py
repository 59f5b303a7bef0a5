"""pytorch-grad-cam's ``metrics.perturbation_confidence`` module: the building blocks of its metrics.

``PerturbationConfidenceMetric(perturbation)`` scores the inputs changed by a user's
``perturbation(image, map)``; ``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst`` turn a
map into a keep-mask at a percentile and hand it to an imputer; ``AveragerAcrossThresholds``
averages a metric over percentiles. Same arguments and numpy results as pytorch-grad-cam 1.5.7;
the forwards run batched, in eval mode (restored) under ``inference_mode``, on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camkit.engine import eval_mode

from .._adapter import batched_target
from ._classes import peer_maps

__all__ = [
    "AveragerAcrossThresholds",
    "PerturbationConfidenceMetric",
    "RemoveLeastRelevantFirst",
    "RemoveMostRelevantFirst",
]


def _scores(model: nn.Module, x: Tensor, targets: Any) -> Tensor:
    with eval_mode(model), torch.inference_mode():
        outputs = model(x)
        return batched_target(targets, outputs, x.shape[0])(outputs).float()


class PerturbationConfidenceMetric:
    """Score change of the inputs after ``perturbation(input_tensor[i], cams[i])``, per sample.

    Args:
        perturbation: ``(image (C, *S), map (*S)) -> perturbed image``.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> metric = PerturbationConfidenceMetric(lambda image, cam: image * cam)
        >>> metric(torch.rand(2, 1, 4, 4), np.ones((2, 4, 4), np.float32), None, model).tolist()
        [0.0, 0.0]
    """

    def __init__(self, perturbation: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.perturbation = perturbation

    def __call__(
        self,
        input_tensor: Tensor,
        cams: Any,
        targets: Sequence[Callable[[Any], Any]] | None,
        model: nn.Module,
        return_visualization: bool = False,
        return_diff: bool = True,
    ) -> np.ndarray | tuple[np.ndarray, Tensor]:
        """Scores after the perturbation (minus those before with ``return_diff``).

        Args:
            input_tensor: ``(N, C, *S)`` inputs.
            cams: ``(N, *S)`` maps or a list of one map per sample.
            targets: one target per sample; ``None``: each image's top class.
            model: the model.
            return_visualization: also return the perturbed inputs.
            return_diff: the change instead of the perturbed score.

        Returns:
            ``(N,)`` float32 scores (and the perturbed inputs).
        """
        maps = torch.as_tensor(peer_maps(cams, input_tensor.shape[0])).to(input_tensor.device)
        perturbed = torch.stack([self.perturbation(input_tensor[i], maps[i]) for i in range(input_tensor.shape[0])])
        after = _scores(model, perturbed, targets)
        result = after - _scores(model, input_tensor, targets) if return_diff else after
        out: np.ndarray = result.cpu().numpy().astype(np.float32)
        return (out, perturbed) if return_visualization else out


class RemoveMostRelevantFirst:
    """Keep the pixels below the ``percentile``-th percentile of the map, and impute the rest.

    Args:
        percentile: percent of pixels kept (numpy's linear percentile of the map).
        imputer: ``(image, keep_mask) -> image``.

    Example:
        >>> keep = RemoveMostRelevantFirst(50, lambda image, mask: image * mask)
        >>> keep(torch.ones(1, 2, 2), torch.tensor([[0.0, 1.0], [2.0, 3.0]])).tolist()
        [[[1.0, 1.0], [0.0, 0.0]]]
    """

    def __init__(self, percentile: float | str, imputer: Callable[[Tensor, Tensor], Tensor]) -> None:
        if not isinstance(percentile, (int, float)):
            raise ValueError("percentile='auto' (Otsu) is not offered: pass a percentile in [0, 100]")
        self.percentile = percentile
        self.imputer = imputer

    def __call__(self, input_tensor: Tensor, mask: Tensor) -> Tensor:
        """The imputed image.

        Args:
            input_tensor: one image ``(C, *S)``.
            mask: its map ``(*S)``.

        Returns:
            The imputer's result.
        """
        threshold = torch.quantile(mask.double().flatten(), float(self.percentile) / 100)
        return self.imputer(input_tensor, (mask < threshold).to(torch.float32))


class RemoveLeastRelevantFirst(RemoveMostRelevantFirst):
    """:class:`RemoveMostRelevantFirst` of ``1 - mask``: keep the most relevant pixels."""

    def __call__(self, input_tensor: Tensor, mask: Tensor) -> Tensor:
        """The imputed image (see :class:`RemoveMostRelevantFirst`)."""
        return super().__call__(input_tensor, 1 - mask)


class AveragerAcrossThresholds:
    """The mean of ``imputer(percentile)(...)`` over ``percentiles``, per sample.

    Args:
        imputer: ``percentile -> metric`` (e.g. a ROAD class).
        percentiles: the percentiles.

    Example:
        >>> from camkit.compat.gradcam.metrics.road import ROADMostRelevantFirst
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> average = AveragerAcrossThresholds(ROADMostRelevantFirst, [25, 75])
        >>> average(torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4), [0], model).shape
        (1,)
    """

    def __init__(
        self, imputer: Callable[[float], Any], percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
    ) -> None:
        self.imputer = imputer
        self.percentiles = list(percentiles)

    def __call__(
        self, input_tensor: Tensor, cams: Any, targets: Sequence[Callable[[Any], Any]] | None, model: nn.Module
    ) -> np.ndarray:
        """Mean score over the percentiles, ``(N,)`` float32."""
        scores = [np.asarray(self.imputer(p)(input_tensor, cams, targets, model)) for p in self.percentiles]
        out: np.ndarray = np.mean(np.stack(scores).astype(np.float32), axis=0)
        return out
