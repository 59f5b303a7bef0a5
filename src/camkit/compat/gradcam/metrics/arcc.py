"""pytorch-grad-cam's ``metrics.arcc`` module: Complexity, Coherency and their ARCC summary.

Rong et al. / Poppi et al.'s "ADCC"-style scores (arXiv:2104.10252) as pytorch-grad-cam 1.5.7
defines them, numpy in and out: ``Complexity`` is the mean absolute map value, ``Coherency`` the
Pearson correlation (mapped to ``[0, 1]``) between the maps and the maps recomputed on the input
multiplied by them, and ``ARCC`` the harmonic mean of coherency, ``1 - complexity`` and the ROAD
score (:class:`~camkit.compat.gradcam.metrics.road.ROADCombined`, camkit's batched ROAD, scaled by 2
and clipped to ``[0, 1]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._classes import ROADCombined

__all__ = ["ARCC", "Coherency", "Complexity", "batch_pearson_coherency"]


def batch_pearson_coherency(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of maps ``A[n]``, ``B[n]`` (``1e-8`` added to the denominator).

    Args:
        A: ``(N, ...)`` maps.
        B: ``(N, ...)`` maps.

    Returns:
        ``(N,)`` correlations in ``[-1, 1]``.

    Example:
        >>> batch_pearson_coherency(np.array([[0.0, 1.0, 2.0]]), np.array([[0.0, 2.0, 4.0]])).round(6).tolist()
        [1.0]
    """
    a = torch.as_tensor(np.asarray(A)).flatten(1).double()
    b = torch.as_tensor(np.asarray(B)).flatten(1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    dof = a.shape[1] - 1
    cov = (a * b).sum(dim=1) / dof
    std = ((a**2).sum(dim=1) / dof).sqrt() * ((b**2).sum(dim=1) / dof).sqrt()
    out: np.ndarray = (cov / (std + 1e-8)).numpy()
    return out


class Complexity:
    """Mean absolute value of each map (its L1 norm over the number of pixels), in ``[0, 1]`` for maps in ``[0, 1]``.

    Example:
        >>> Complexity()(np.array([[[0.0, 1.0], [1.0, 0.0]]])).tolist()
        [0.5]
    """

    def __call__(self, grayscale_cams: np.ndarray) -> np.ndarray:
        """Complexity per map.

        Args:
            grayscale_cams: ``(N, H, W)`` maps.

        Returns:
            ``(N,)`` values.
        """
        cams = np.asarray(grayscale_cams)
        out: np.ndarray = np.abs(cams.reshape(cams.shape[0], -1)).mean(axis=1)
        return out


class Coherency:
    """``(pearson(maps, maps of input * maps) + 1) / 2`` per sample, in ``[0, 1]`` (1: the map explains itself)."""

    def __call__(
        self,
        input_tensor: Tensor,
        grayscale_cams: np.ndarray,
        targets: Sequence[Callable[[Any], Any]] | None,
        model: nn.Module,
        base_method: Callable[..., np.ndarray],
    ) -> np.ndarray:
        """Coherency per sample.

        Args:
            input_tensor: ``(N, C, H, W)`` images.
            grayscale_cams: ``(N, H, W)`` maps of ``base_method`` on them.
            targets: the targets the maps explain.
            model: the model (pytorch-grad-cam's signature; ``base_method`` holds it).
            base_method: a CAM object of this front door (``GradCAM(model, layers)``).

        Returns:
            ``(N,)`` values.
        """
        cams = torch.as_tensor(np.asarray(grayscale_cams)).unsqueeze(1).to(input_tensor.device)
        mixed_cams = base_method(input_tensor=input_tensor * cams, targets=targets)
        result: np.ndarray = (batch_pearson_coherency(np.asarray(mixed_cams), np.asarray(grayscale_cams)) + 1) / 2
        return result


class ARCC:
    """Harmonic mean of coherency, ``1 - complexity`` and ROAD (scaled by 2, clipped to ``[0, 1]``).

    Args:
        base_method: a CAM object of this front door, used by :class:`Coherency`.
        road_percentiles: the percentiles of :class:`~camkit.compat.gradcam.metrics.road.ROADCombined`.
    """

    def __init__(self, base_method: Callable[..., np.ndarray], road_percentiles: Sequence[int] = (20, 40, 60, 80)):
        self.complexity = Complexity()
        self.coherency = Coherency()
        self.road = ROADCombined(percentiles=list(road_percentiles))
        self.base_method = base_method

    def __call__(
        self,
        input_tensor: Tensor,
        grayscale_cams: np.ndarray,
        targets: Sequence[Callable[[Any], Any]] | None,
        model: nn.Module,
    ) -> np.ndarray:
        """ARCC per sample.

        Args:
            input_tensor: ``(N, C, H, W)`` images.
            grayscale_cams: ``(N, H, W)`` maps in ``[0, 1]``.
            targets: the targets the maps explain.
            model: the model.

        Returns:
            ``(N,)`` values in ``[0, 1]``.
        """
        complexity = self.complexity(grayscale_cams)
        coherency = self.coherency(input_tensor, grayscale_cams, targets, model, self.base_method)
        road_result: Any = self.road(input_tensor, grayscale_cams, targets, model)
        road = (np.asarray(road_result, dtype=np.float64) * 2).clip(0, 1)
        out: np.ndarray = 3 / (1 / (coherency + 1e-8) + 1 / ((1 - complexity) + 1e-8) + 1 / (road + 1e-8))
        return out
