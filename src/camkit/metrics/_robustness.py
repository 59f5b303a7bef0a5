r"""Robustness: how much the map moves when the input moves a little.

These metrics re-run the explanation on perturbed inputs. ``explain`` is either

* a camkit extractor (``camkit.methods.GradCAM(model, "layer4")``, any :class:`camkit.engine.CAMExtractor`):
  camkit runs the model through it and asks for the maps of the explained classes, or
* any callable ``explain(inputs, classes) -> maps``: ``inputs`` ``(B, C, *S)``, ``classes`` ``(B,)``
  class indices, returning one map per input (any accepted map form, resized to the input).

The explained classes are ``targets`` (an int or one per sample) or, for ``None``, the classes the
model predicts for the clean inputs; the perturbed inputs are explained for the same classes.
Explanations of ``batch_size`` perturbed inputs run at once, in eval mode (flags restored).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

import numpy as np
import torch
from torch import Tensor, nn

from camkit.engine import CAMExtractor, eval_mode
from camkit.metrics._common import (
    MapsLike,
    MetricResult,
    batch_of,
    check_inputs,
    make_result,
    positive_int,
    prepare_maps,
)

__all__ = [
    "ExplainLike",
    "avg_sensitivity",
    "explain_maps",
    "explained_classes",
    "local_lipschitz_estimate",
    "max_sensitivity",
]

#: A camkit extractor, or a callable ``(inputs, classes) -> maps``.
ExplainLike: TypeAlias = "CAMExtractor | Callable[[Tensor, Tensor], MapsLike]"


def explained_classes(model: nn.Module, inputs: Tensor, targets: int | Sequence[int] | Tensor | None) -> Tensor:
    """``(N,)`` class indices: ``targets`` broadcast to the batch, or the model's predictions for ``None``.

    Raises:
        TypeError: for targets that are not class indices.
        ValueError: for a list whose length is not the batch size.
    """
    n = inputs.shape[0]
    if targets is None:
        with eval_mode(model), torch.no_grad():
            output: Tensor = model(inputs)
        return output.argmax(dim=-1).reshape(n).to(inputs.device)
    if isinstance(targets, bool) or callable(targets):
        raise TypeError(
            "targets of a robustness metric must be class indices (an int, one per sample, or None for the "
            f"predicted class), got {type(targets).__name__}: the explanation is re-run for these classes"
        )
    classes = torch.as_tensor(np.asarray(targets) if not isinstance(targets, Tensor) else targets).long().reshape(-1)
    if classes.numel() == 1:
        classes = classes.expand(n)
    if classes.numel() != n:
        raise ValueError(f"targets has {classes.numel()} entries but the batch has {n} samples: pass one per sample")
    return classes.to(inputs.device)


def explain_maps(explain: ExplainLike, inputs: Tensor, classes: Tensor) -> Tensor:
    """The maps ``(B, *S)`` of ``inputs`` for ``classes`` at input resolution, by an extractor or a callable.

    Raises:
        TypeError: when ``explain`` is neither.
        ValueError: for maps of the wrong shape or holding NaN/inf.
    """
    if isinstance(explain, CAMExtractor):
        with torch.enable_grad():
            scores = explain.model(inputs)
            got: MapsLike = explain([int(c) for c in classes.tolist()], scores)
    elif callable(explain):
        got = explain(inputs, classes)
    else:
        raise TypeError(
            "explain must be a camkit extractor (e.g. camkit.methods.GradCAM(model, 'layer4')) or a callable "
            f"explain(inputs, classes) -> maps, got {type(explain).__name__}"
        )
    return prepare_maps(got, inputs.shape[0], inputs.shape[2:], inputs.device, name="the explanation's maps")


def _perturbed_maps(
    model: nn.Module,
    explain: ExplainLike,
    inputs: Tensor,
    maps: MapsLike | None,
    targets: int | Sequence[int] | Tensor | None,
    noise: Tensor,
    batch_size: int | None,
) -> tuple[Tensor, Tensor]:
    """The clean maps ``(N, *S)`` and those of ``inputs + noise`` ``(N, M, *S)``."""
    n, draws = inputs.shape[0], noise.shape[1]
    batch_size = batch_of(batch_size, inputs.device)
    classes = explained_classes(model, inputs, targets)
    with eval_mode(model):
        clean = explain_maps(explain, inputs, classes) if maps is None else None
        rows = torch.arange(n, device=inputs.device).repeat_interleave(draws)
        flat = noise.reshape(n * draws, *inputs.shape[1:])
        parts = [
            explain_maps(
                explain,
                inputs[rows[start : start + batch_size]] + flat[start : start + batch_size],
                classes[rows[start : start + batch_size]],
            )
            for start in range(0, rows.shape[0], batch_size)
        ]
    if clean is None:
        clean = prepare_maps(maps, n, inputs.shape[2:], inputs.device)  # type: ignore[arg-type]
    return clean, torch.cat(parts).view(n, draws, *inputs.shape[2:])


def _noise(inputs: Tensor, noise: Tensor | None, nr_samples: int, draw: Callable[[tuple[int, ...]], Tensor]) -> Tensor:
    if noise is None:
        shape = (inputs.shape[0], positive_int(nr_samples, "nr_samples"), *inputs.shape[1:])
        return draw(shape).to(inputs)
    if noise.ndim != inputs.ndim + 1 or noise.shape[0] != inputs.shape[0] or noise.shape[2:] != inputs.shape[1:]:
        raise ValueError(
            f"noise must be (N, M, C, *S) with N, C, *S of the input {tuple(inputs.shape)}, got {tuple(noise.shape)}"
        )
    return noise.to(inputs)


def _sensitivities(
    model: nn.Module,
    inputs: Tensor,
    explain: ExplainLike,
    targets: int | Sequence[int] | Tensor | None,
    maps: MapsLike | None,
    nr_samples: int,
    radius: float,
    normalise: bool,
    noise: Tensor | None,
    generator: torch.Generator | None,
    batch_size: int | None,
) -> Tensor:
    inputs = check_inputs(inputs)
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius!r}")
    shifts = _noise(inputs, noise, nr_samples, lambda shape: (torch.rand(shape, generator=generator) * 2 - 1) * radius)
    clean, moved = _perturbed_maps(model, explain, inputs, maps, targets, shifts, batch_size)
    distance: Tensor = (moved.double() - clean.double().unsqueeze(1)).flatten(2).norm(dim=-1)
    if normalise:
        distance = distance / clean.double().flatten(1).norm(dim=-1, keepdim=True)
    return distance


def max_sensitivity(
    model: nn.Module,
    inputs: Tensor,
    explain: ExplainLike,
    targets: int | Sequence[int] | Tensor | None = None,
    *,
    maps: MapsLike | None = None,
    nr_samples: int = 200,
    radius: float = 0.2,
    normalise: bool = False,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> MetricResult:
    r"""Max-sensitivity: the largest change of the map within an :math:`L_\infty` ball around the input (lower better).

    Yeh et al., On the (In)fidelity and Sensitivity of Explanations, NeurIPS 2019:

    .. math:: \mathrm{SENS}_{\max}(\Phi, f, x, r) = \max_{\|y - x\|_\infty \le r} \|\Phi(f, y) - \Phi(f, x)\|_2

    estimated by Monte Carlo over ``nr_samples`` points :math:`y = x + \delta`,
    :math:`\delta \sim U[-r, r]` per value.

    Args:
        model: the classifier (its predictions pick the classes when ``targets`` is ``None``).
        inputs: ``(N, C, *S)`` model inputs.
        explain: a camkit extractor or ``explain(inputs, classes) -> maps`` (see the module docstring).
        targets: the explained classes (an int or one per sample; ``None``: predicted).
        maps: the clean maps :math:`\Phi(f, x)` when already computed (default: ``explain(inputs)``).
        nr_samples: Monte-Carlo draws (Quantus's default, 200).
        radius: :math:`r` (Quantus's default, 0.2).
        normalise: divide by :math:`\|\Phi(f, x)\|_2`, as Quantus does (not in the paper).
        noise: ``(N, M, C, *S)`` explicit :math:`\delta` instead of random draws.
        generator: random generator for the draws.
        batch_size: perturbed inputs explained at once (``None``: 8 on a CPU, 32 on a GPU).

    Returns:
        Per-sample sensitivities and their mean.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> gradient = lambda x, classes: model[1].weight[classes].detach().view(-1, 4, 4)  # constant in x
        >>> max_sensitivity(model, torch.rand(2, 1, 4, 4), gradient, 0, nr_samples=3).mean
        0.0
    """
    values = _sensitivities(
        model, inputs, explain, targets, maps, nr_samples, radius, normalise, noise, generator, batch_size
    )
    return make_result(values.amax(dim=1))


def avg_sensitivity(
    model: nn.Module,
    inputs: Tensor,
    explain: ExplainLike,
    targets: int | Sequence[int] | Tensor | None = None,
    *,
    maps: MapsLike | None = None,
    nr_samples: int = 200,
    radius: float = 0.2,
    normalise: bool = False,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> MetricResult:
    r"""Average sensitivity: the expected change of the map within an :math:`L_\infty` ball (lower is better).

    Yeh et al., On the (In)fidelity and Sensitivity of Explanations, NeurIPS 2019:
    :math:`\mathrm{SENS}_{\mathrm{avg}} = \mathbb{E}_{y \sim U(B_r(x))} \|\Phi(f, y) - \Phi(f, x)\|_2`,
    the mean over ``nr_samples`` draws. Arguments as for :func:`max_sensitivity`.

    Args:
        model: the classifier.
        inputs: ``(N, C, *S)`` model inputs.
        explain: a camkit extractor or ``explain(inputs, classes) -> maps``.
        targets: the explained classes.
        maps: the clean maps, when already computed.
        nr_samples: Monte-Carlo draws (Quantus's default, 200).
        radius: :math:`r` (0.2).
        normalise: divide by :math:`\|\Phi(f, x)\|_2` (Quantus).
        noise: explicit ``(N, M, C, *S)`` :math:`\delta`.
        generator: random generator for the draws.
        batch_size: perturbed inputs explained at once (``None``: 8 on a CPU, 32 on a GPU).

    Returns:
        Per-sample mean sensitivities and their mean.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> explain = lambda x, classes: x[:, 0]  # the map is the input: moves exactly as the input
        >>> noise = torch.full((1, 1, 1, 4, 4), 0.1)
        >>> round(avg_sensitivity(model, torch.rand(1, 1, 4, 4), explain, 0, noise=noise).mean, 6)  # 0.1 * sqrt(16)
        0.4
    """
    values = _sensitivities(
        model, inputs, explain, targets, maps, nr_samples, radius, normalise, noise, generator, batch_size
    )
    return make_result(values.mean(dim=1))


def local_lipschitz_estimate(
    model: nn.Module,
    inputs: Tensor,
    explain: ExplainLike,
    targets: int | Sequence[int] | Tensor | None = None,
    *,
    maps: MapsLike | None = None,
    nr_samples: int = 200,
    std: float = 0.1,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> MetricResult:
    r"""Local Lipschitz estimate: the largest ratio of map change to input change near the input (lower is better).

    Alvarez-Melis & Jaakkola, On the Robustness of Interpretability Methods, ICML Workshop 2018:

    .. math:: \hat L(x) = \max_{x' \in B_\epsilon(x)} \frac{\|\Phi(x) - \Phi(x')\|_2}{\|x - x'\|_2}

    estimated over ``nr_samples`` points :math:`x' = x + \delta`, :math:`\delta \sim \mathcal N(0, \sigma^2)`
    per value (the neighbourhood Quantus samples).

    Args:
        model: the classifier.
        inputs: ``(N, C, *S)`` model inputs.
        explain: a camkit extractor or ``explain(inputs, classes) -> maps``.
        targets: the explained classes.
        maps: the clean maps, when already computed.
        nr_samples: draws (Quantus's default, 200).
        std: :math:`\sigma` of the Gaussian neighbourhood (Quantus's default, 0.1).
        noise: explicit ``(N, M, C, *S)`` :math:`\delta`.
        generator: random generator for the draws.
        batch_size: perturbed inputs explained at once (``None``: 8 on a CPU, 32 on a GPU).

    Returns:
        Per-sample estimates and their mean.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> explain = lambda x, classes: 3 * x[:, 0]  # a 3-Lipschitz map (float32: 3 within ~1e-6)
        >>> round(local_lipschitz_estimate(model, torch.rand(1, 1, 4, 4), explain, 0, nr_samples=4).mean, 4)
        3.0
    """
    inputs = check_inputs(inputs)
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    shifts = _noise(inputs, noise, nr_samples, lambda shape: torch.randn(shape, generator=generator) * std)
    clean, moved = _perturbed_maps(model, explain, inputs, maps, targets, shifts, batch_size)
    numerator = (moved.double() - clean.double().unsqueeze(1)).flatten(2).norm(dim=-1)
    denominator = shifts.double().flatten(2).norm(dim=-1)
    return make_result((numerator / denominator).amax(dim=1))
