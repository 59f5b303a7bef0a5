"""pytorch-grad-cam's metric classes, on camkit's batched, device-native metrics.

They take pytorch-grad-cam's constructor and call arguments, ``(input_tensor, cams, targets,
model)``, so code written for ``pytorch_grad_cam.metrics`` runs by changing the import. ``cams``
may be its numpy ``(N, H, W)`` maps or anything camkit's metrics accept (resized to the input);
``targets`` one target per sample, or any target camkit accepts.

What differs from pytorch-grad-cam 1.5.7, on purpose:

* The result is a float32 numpy array ``(N,)`` as pytorch-grad-cam's (a :class:`MetricScores`, which
  also keeps camkit's :class:`~camkit.metrics.MetricResult`: ``.per_sample``, ``.curve``, ``.fractions``).
* ``cams`` is read as pytorch-grad-cam's users pass it: ``(N, H, W)``, a list with one ``(H, W)`` map
  per sample (any dtype: bool thresholds, uint8 edge maps), or one ``(H, W)`` map for a batch of one
  (pytorch-grad-cam would take that map's first row as the "map" of the image and broadcast it).
* The model runs in eval mode (restored afterwards), batched, under ``inference_mode``, on its own
  device; pytorch-grad-cam uses whatever mode the model is in and copies through the CPU.
* ROAD removes exactly the pixels at or above the percentile's rank, where pytorch-grad-cam's
  value threshold (``map < np.percentile(map, p)``) removes every tied pixel: on a ReLU'd map whose
  zeros reach the threshold, its MoRF imputes the whole image from nothing. ``percentile="auto"``
  (Otsu) is not offered: pytorch-grad-cam's version swaps MoRF and LeRF (it keeps the pixels above
  the Otsu threshold in MoRF).
* ``ROAD*`` take ``noise`` and ``generator`` (pytorch-grad-cam fixes 0.01 and the global RNG; its
  ``NoisyLinearImputer(weighting=...)`` argument is ignored).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import Tensor, nn

from camkit.metrics import (
    DEFAULT_PERCENTILES,
    ConfidenceChange,
    MapsLike,
    MetricResult,
    TargetLike,
    checked_percentiles,
    confidence_change,
    make_result,
    prepare_maps,
    road,
    road_at,
    road_combined,
)

__all__ = [
    "CamMultImageConfidenceChange",
    "DropInConfidence",
    "IncreaseInConfidence",
    "MetricScores",
    "ROADCombined",
    "ROADLeastRelevantFirst",
    "ROADLeastRelevantFirstAverage",
    "ROADMostRelevantFirst",
    "ROADMostRelevantFirstAverage",
    "peer_maps",
]


class MetricScores(np.ndarray):
    """pytorch-grad-cam's metric value: a float32 numpy array ``(N,)``, one score per sample.

    The array a metric returns also keeps camkit's result (:attr:`result`): ``per_sample`` (the
    tensor), and for the averaged ROAD classes ``curve`` and ``fractions``. Arrays derived from it
    (slices, arithmetic) are plain values without it.

    Example:
        >>> scores = MetricScores.of(make_result(torch.tensor([0.5, -1.0])))
        >>> scores[0], scores.shape, scores.per_sample
        (np.float32(0.5), (2,), tensor([ 0.5000, -1.0000]))
    """

    result: MetricResult | None

    @classmethod
    def of(cls, result: MetricResult) -> MetricScores:
        """The scores of a camkit result (float32, on the CPU)."""
        values = result.per_sample.detach().float().cpu().numpy()
        scores = values.view(cls)
        scores.result = result
        return scores

    def __array_finalize__(self, obj: Any) -> None:
        self.result = None

    def _kept(self) -> MetricResult:
        if self.result is None:
            raise AttributeError("this array was derived from a metric's scores and keeps no camkit result")
        return self.result

    @property
    def per_sample(self) -> Tensor:
        """The per-sample values as a tensor (camkit's :class:`~camkit.metrics.MetricResult`)."""
        return self._kept().per_sample

    @property
    def curve(self) -> Tensor:
        """``(N, K)`` one value per percentile (the averaged ROAD classes)."""
        return self._kept().curve  # type: ignore[attr-defined, no-any-return]

    @property
    def fractions(self) -> Tensor:
        """``(K,)`` the removed fraction at each percentile (the averaged ROAD classes)."""
        return self._kept().fractions  # type: ignore[attr-defined, no-any-return]


def peer_maps(cams: Any, batch: int) -> MapsLike:
    """pytorch-grad-cam's ``cams`` as camkit's metrics read them: ``(N, *S)``.

    A list or tuple holds one map per sample (camkit's metrics read a list as one entry per
    layer); a single ``(H, W)`` map is the map of a batch of one.

    Args:
        cams: ``(N, H, W)`` maps, a list of ``(H, W)`` maps, or one ``(H, W)`` map when ``batch == 1``.
        batch: the number of samples.

    Returns:
        The maps, one per sample.

    Example:
        >>> peer_maps([np.ones((4, 4), dtype=bool)], 1).shape
        torch.Size([1, 4, 4])
    """
    if isinstance(cams, (list, tuple)):
        if not cams:
            raise ValueError("cams is an empty list: pass one map per sample")
        return torch.stack([torch.as_tensor(np.asarray(c) if not isinstance(c, Tensor) else c) for c in cams])
    ndim = getattr(cams, "ndim", None)
    if batch == 1 and ndim == 2:
        return cams[None]  # type: ignore[no-any-return]
    return cams  # type: ignore[no-any-return]


class CamMultImageConfidenceChange:
    """pytorch-grad-cam's ``CamMultImageConfidenceChange``: :math:`O - Y` per sample.

    Call it with pytorch-grad-cam's arguments ``(input_tensor, cams, targets, model)``; ``cams``
    may be numpy ``(N, H, W)`` or any maps camkit accepts, ``targets`` one target per sample or any
    target camkit accepts (see the module docstring for what differs from pytorch-grad-cam).

    Example:
        >>> from torch import nn
        >>> from camkit.targets import ClassifierOutputSoftmaxTarget
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> metric = CamMultImageConfidenceChange()
        >>> metric(torch.rand(1, 1, 4, 4), torch.ones(1, 4, 4), [ClassifierOutputSoftmaxTarget(0)], model)
        MetricScores([0.], dtype=float32)
    """

    def _values(self, change: ConfidenceChange, return_diff: bool) -> Tensor:
        return change.change.per_sample if return_diff else change.masked

    @overload
    def __call__(
        self,
        input_tensor: Tensor,
        cams: MapsLike,
        targets: TargetLike,
        model: nn.Module,
        return_visualization: Literal[False] = False,
        return_diff: bool = True,
        *,
        batch_size: int = 32,
    ) -> MetricScores: ...

    @overload
    def __call__(
        self,
        input_tensor: Tensor,
        cams: MapsLike,
        targets: TargetLike,
        model: nn.Module,
        return_visualization: Literal[True],
        return_diff: bool = True,
        *,
        batch_size: int = 32,
    ) -> tuple[MetricScores, Tensor]: ...

    def __call__(
        self,
        input_tensor: Tensor,
        cams: MapsLike,
        targets: TargetLike,
        model: nn.Module,
        return_visualization: bool = False,
        return_diff: bool = True,
        *,
        batch_size: int = 32,
    ) -> MetricScores | tuple[MetricScores, Tensor]:
        """Score change of the inputs multiplied by their maps.

        Args:
            input_tensor: ``(N, C, *S)`` inputs.
            cams: one map per sample.
            targets: one target per sample (or any camkit target).
            model: the model.
            return_visualization: also return the map-multiplied inputs.
            return_diff: :math:`O - Y` (True) or :math:`O` (False).
            batch_size: inputs per forward.

        Returns:
            ``(N,)`` float32 scores (and the perturbed inputs).
        """
        cams = peer_maps(cams, input_tensor.shape[0])
        change = confidence_change(model, input_tensor, cams, targets, batch_size=batch_size)
        result = MetricScores.of(make_result(self._values(change, return_diff)))
        if not return_visualization:
            return result
        weights = prepare_maps(cams, input_tensor.shape[0], input_tensor.shape[2:], input_tensor.device)
        return result, input_tensor.detach() * weights.unsqueeze(1).to(input_tensor.dtype)


class DropInConfidence(CamMultImageConfidenceChange):
    r"""pytorch-grad-cam's ``DropInConfidence``: :math:`\max(0, Y - O)` per sample (not divided by :math:`Y`).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> DropInConfidence()(torch.rand(1, 1, 4, 4), torch.ones(1, 4, 4), 0, model).tolist()
        [0.0]
    """

    def _values(self, change: ConfidenceChange, return_diff: bool) -> Tensor:
        return torch.clamp(-super()._values(change, return_diff), min=0) + 0.0  # no -0.0


class IncreaseInConfidence(CamMultImageConfidenceChange):
    r"""pytorch-grad-cam's ``IncreaseInConfidence``: :math:`\mathbb{1}[O - Y > 0]` per sample.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> IncreaseInConfidence()(torch.rand(1, 1, 4, 4), torch.ones(1, 4, 4), 0, model).tolist()
        [0.0]
    """

    def _values(self, change: ConfidenceChange, return_diff: bool) -> Tensor:
        values = super()._values(change, return_diff)
        return torch.where(torch.isnan(values), values, (values > 0).to(values.dtype))


class ROADMostRelevantFirst:
    """pytorch-grad-cam's ``ROADMostRelevantFirst``: impute the ``100 - percentile`` % most relevant pixels.

    ``percentile`` is the percent of pixels kept, as in pytorch-grad-cam (the default 80 removes
    20 %); :func:`camkit.metrics._road` takes the percent removed. The value is :math:`s_r - s_0`.

    Args:
        percentile: percent of pixels kept, in ``(0, 100)``.
        noise: standard deviation of the imputation noise.
        generator: random generator for the noise.
        batch_size: imputed inputs per forward.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> metric = ROADMostRelevantFirst(percentile=75, noise=0.0)
        >>> metric(torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4), [0], model).shape
        (1,)
    """

    order = "morf"

    def __init__(
        self,
        percentile: float = 80,
        *,
        noise: float = 0.01,
        generator: torch.Generator | None = None,
        batch_size: int = 32,
    ) -> None:
        self.percentile = checked_percentiles([percentile], "percentile")[0]
        self.noise = noise
        self.generator = generator
        self.batch_size = batch_size

    @overload
    def __call__(
        self,
        input_tensor: Tensor,
        cams: MapsLike,
        targets: TargetLike,
        model: nn.Module,
        return_visualization: Literal[False] = False,
        return_diff: bool = True,
    ) -> MetricScores: ...

    @overload
    def __call__(
        self,
        input_tensor: Tensor,
        cams: MapsLike,
        targets: TargetLike,
        model: nn.Module,
        return_visualization: Literal[True],
        return_diff: bool = True,
    ) -> tuple[MetricScores, Tensor]: ...

    def __call__(
        self,
        input_tensor: Tensor,
        cams: MapsLike,
        targets: TargetLike,
        model: nn.Module,
        return_visualization: bool = False,
        return_diff: bool = True,
    ) -> MetricScores | tuple[MetricScores, Tensor]:
        """Score change (or score, ``return_diff=False``) of the imputed inputs.

        Args:
            input_tensor: ``(N, C, H, W)`` inputs.
            cams: one map per sample.
            targets: one target per sample (or any camkit target).
            model: the model.
            return_visualization: also return the imputed inputs.
            return_diff: :math:`s_r - s_0` (True) or :math:`s_r` (False).

        Returns:
            ``(N,)`` float32 scores (and the imputed inputs).
        """
        out = road_at(
            self.order,
            self.percentile,
            input_tensor,
            peer_maps(cams, input_tensor.shape[0]),
            targets,
            model,
            return_visualization,
            return_diff,
            self.noise,
            self.generator,
            self.batch_size,
        )
        if isinstance(out, tuple):
            return MetricScores.of(out[0]), out[1]
        return MetricScores.of(out)


class ROADLeastRelevantFirst(ROADMostRelevantFirst):
    """pytorch-grad-cam's ``ROADLeastRelevantFirst``: impute the ``100 - percentile`` % least relevant pixels.

    ``percentile`` is the percent of pixels kept (the default 20 removes 80 %), as in pytorch-grad-cam.

    Args:
        percentile: percent of pixels kept, in ``(0, 100)``.
        noise: standard deviation of the imputation noise.
        generator: random generator for the noise.
        batch_size: imputed inputs per forward.
    """

    order = "lerf"

    def __init__(
        self,
        percentile: float = 20,
        *,
        noise: float = 0.01,
        generator: torch.Generator | None = None,
        batch_size: int = 32,
    ) -> None:
        super().__init__(percentile, noise=noise, generator=generator, batch_size=batch_size)


class ROADMostRelevantFirstAverage:
    """pytorch-grad-cam's ``ROADMostRelevantFirstAverage``: MoRF averaged over ``percentiles`` (percent kept).

    Args:
        percentiles: percents of pixels kept, each in ``(0, 100)``.
        noise: standard deviation of the imputation noise.
        generator: random generator for the noise.
        batch_size: imputed inputs per forward.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> metric = ROADMostRelevantFirstAverage([25, 75], noise=0.0)
        >>> metric(torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4), [0], model).curve.shape  # camkit's curve is kept
        torch.Size([1, 2])
    """

    order = "morf"

    def __init__(
        self,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        *,
        noise: float = 0.01,
        generator: torch.Generator | None = None,
        batch_size: int = 32,
    ) -> None:
        self.percentiles = checked_percentiles(percentiles)
        self.noise = noise
        self.generator = generator
        self.batch_size = batch_size

    def _options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`road` / :func:`road_combined` (percent kept → removed)."""
        removed = [100 - p for p in self.percentiles]
        return {"percentiles": removed, "noise": self.noise, "generator": self.generator, "batch_size": self.batch_size}

    def __call__(self, input_tensor: Tensor, cams: MapsLike, targets: TargetLike, model: nn.Module) -> MetricScores:
        """Mean score change over the percentiles; ``.curve`` holds each percentile's change.

        Args:
            input_tensor: ``(N, C, H, W)`` inputs.
            cams: one map per sample.
            targets: one target per sample (or any camkit target).
            model: the model.

        Returns:
            ``(N,)`` scores; ``.curve`` and ``.fractions`` (the removed fractions) are kept.
        """
        maps = peer_maps(cams, input_tensor.shape[0])
        return MetricScores.of(road(model, input_tensor, maps, targets, order=self.order, **self._options()))


class ROADLeastRelevantFirstAverage(ROADMostRelevantFirstAverage):
    """pytorch-grad-cam's ``ROADLeastRelevantFirstAverage``: LeRF averaged over ``percentiles`` (percent kept).

    Args:
        percentiles: percents of pixels kept, each in ``(0, 100)``.
        noise: standard deviation of the imputation noise.
        generator: random generator for the noise.
        batch_size: imputed inputs per forward.
    """

    order = "lerf"


class ROADCombined(ROADMostRelevantFirstAverage):
    r"""pytorch-grad-cam's ``ROADCombined``: :math:`(\mathrm{LeRF} - \mathrm{MoRF}) / 2` averaged over ``percentiles``.

    Both orders and all percentiles run in one batched pass.

    Args:
        percentiles: percents of pixels kept, each in ``(0, 100)``.
        noise: standard deviation of the imputation noise.
        generator: random generator for the noise.
        batch_size: imputed inputs per forward.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(1, 1, 4, 4)
        >>> ROADCombined([50], noise=0.0)(x, torch.full((1, 4, 4), 0.5), [0], model).tolist()  # a flat map
        [0.0]
    """

    def __call__(self, input_tensor: Tensor, cams: MapsLike, targets: TargetLike, model: nn.Module) -> MetricScores:
        """Combined score per sample; ``.curve`` holds each percentile's half difference.

        Args:
            input_tensor: ``(N, C, H, W)`` inputs.
            cams: one map per sample.
            targets: one target per sample (or any camkit target).
            model: the model.

        Returns:
            ``(N,)`` scores; ``.curve`` and ``.fractions`` (the removed fractions) are kept.
        """
        maps = peer_maps(cams, input_tensor.shape[0])
        return MetricScores.of(road_combined(model, input_tensor, maps, targets, **self._options()))
