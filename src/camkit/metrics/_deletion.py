r"""Deletion and insertion (Petsiuk et al., RISE, BMVC 2018).

Positions are ranked by map value, highest first (a stable sort: ties keep their row-major order).
Deletion starts from the input and replaces the top-ranked positions by a baseline, a growing
fraction at a time; insertion starts from the baseline and puts the top-ranked positions of the
input back. At point :math:`k` of :math:`K` steps the first :math:`c_k = \lfloor kP/K \rfloor` of
the :math:`P` positions are changed (all channels at once). The curve is the target score (by
default the predicted class's probability) at each point, and the metric its area, by the
trapezoid rule over the fractions :math:`c_k / P`:

.. math:: \mathrm{AUC} = \sum_{k=1}^{K} \frac{c_k - c_{k-1}}{P} \cdot \frac{s_{k-1} + s_k}{2}

A faithful map gives a low deletion AUC (the score falls fast) and a high insertion AUC. Following
the paper, deletion uses a constant baseline (0) and insertion a blurred copy of the input. The
perturbed inputs of all samples and steps are scored ``batch_size`` per forward, in eval mode,
under :func:`torch.inference_mode`; the clean input's score is reused for the unperturbed point.
A progress line with rate and ETA counts the scored inputs of long runs (see
:class:`camkit.engine.Progress`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camkit.engine import ImageArg, Progress, eval_mode
from camkit.metrics._common import (
    CurveResult,
    InputsLike,
    MapsLike,
    TargetLike,
    batch_of,
    clean_scores,
    forward_scores,
    nanmean,
    positive_int,
    prepare_maps,
    split_inputs,
    valid_rows,
)

__all__ = ["Baseline", "deletion", "gaussian_blur", "insertion"]

#: A baseline: ``"blur"``, a constant, a tensor broadcastable to the input, or a function of the input.
Baseline = str | float | Tensor | Callable[[Tensor], Tensor]


def gaussian_blur(inputs: Tensor, sigma: float = 5.0, kernel_size: int = 11) -> Tensor:
    r"""Blur every channel with a separable Gaussian over all spatial dims (edges replicated).

    .. math:: g(t) \propto e^{-t^2 / 2\sigma^2}, \quad t = -\tfrac{k-1}{2}, \dots, \tfrac{k-1}{2}

    The defaults (:math:`\sigma = 5`, :math:`k = 11`) are RISE's insertion substrate.

    Args:
        inputs: ``(N, C, *S)`` with 1 to 3 spatial dims.
        sigma: the Gaussian's standard deviation in pixels (> 0).
        kernel_size: odd kernel length.

    Returns:
        The blurred tensor, same shape and dtype.

    Raises:
        ValueError: for a non-positive ``sigma`` or an even/non-positive ``kernel_size``.

    Example:
        >>> gaussian_blur(torch.ones(1, 3, 8, 8)).allclose(torch.ones(1, 3, 8, 8))
        True
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd int >= 1, got {kernel_size!r}")
    half = kernel_size // 2
    t = torch.arange(kernel_size, device=inputs.device, dtype=inputs.dtype) - half
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    out = inputs
    for dim in range(2, inputs.ndim):
        moved = out.movedim(dim, -1)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        flat = F.conv1d(F.pad(flat, (half, half), mode="replicate"), kernel)
        out = flat.reshape(moved.shape).movedim(-1, dim)
    return out


def counted_target(target: Callable[..., Tensor], bar: Progress) -> Callable[..., Tensor]:
    """``target`` that also counts the inputs it scores on ``bar`` (one call per forward).

    Example:
        >>> import io
        >>> bar = Progress(3, "inputs", enabled=False, stream=io.StringIO())
        >>> scored = counted_target(lambda output, rows: output[:, 0], bar)
        >>> scored(torch.ones(3, 2), torch.arange(3)).tolist(), bar.done
        ([1.0, 1.0, 1.0], 3)
    """

    def scored(output: Any, rows: Tensor) -> Tensor:
        values = target(output, rows)
        bar.update(int(rows.shape[0]))
        return values

    return scored


def _baseline(baseline: Baseline, inputs: Tensor, sigma: float, kernel_size: int) -> Tensor:
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(f"baseline must be 'blur', a number, a tensor or a callable, got {baseline!r}")
        return gaussian_blur(inputs, sigma, kernel_size)
    if isinstance(baseline, bool):
        raise TypeError("baseline must be 'blur', a number, a tensor or a callable, got a bool")
    if isinstance(baseline, (int, float)):
        return torch.full_like(inputs, float(baseline))
    made = baseline(inputs) if callable(baseline) and not isinstance(baseline, Tensor) else baseline
    if not isinstance(made, Tensor):
        raise TypeError(
            f"baseline must be 'blur', a number, a tensor or a callable returning a tensor, got {type(made).__name__}"
        )
    try:
        return torch.broadcast_to(made.to(inputs), inputs.shape)
    except RuntimeError:
        raise ValueError(
            f"baseline of shape {tuple(made.shape)} does not broadcast to the input shape {tuple(inputs.shape)}"
        ) from None


def _curve(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike,
    steps: int,
    baseline: Baseline,
    batch_size: int | None,
    sigma: float,
    kernel_size: int,
    insert: bool,
    image_arg: ImageArg = None,
    progress: bool | None = None,
) -> CurveResult:
    inputs, call = split_inputs(inputs, image_arg)
    steps = positive_int(steps, "steps")
    batch_size = batch_of(batch_size, inputs.device)
    n = inputs.shape[0]
    cams = prepare_maps(maps, n, inputs.shape[2:], inputs.device)
    valid = valid_rows(cams)
    cams = torch.where(valid.view(-1, *[1] * (cams.ndim - 1)), cams, torch.zeros_like(cams))
    base = _baseline(baseline, inputs, sigma, kernel_size)
    positions = cams[0].numel()
    order = torch.argsort(cams.flatten(1), dim=1, descending=True, stable=True)
    ranks = torch.argsort(order, dim=1)
    counts = torch.tensor([k * positions // steps for k in range(steps + 1)], device=inputs.device)
    # every point but the clean input's needs a forward: deletion 1..K, insertion 0..K-1
    points = torch.arange(0, steps, device=inputs.device) + (0 if insert else 1)
    rows = torch.arange(n, device=inputs.device).repeat_interleave(steps)
    changed = counts[points.repeat(n)]
    first, second = (inputs.flatten(2), base.flatten(2)) if insert else (base.flatten(2), inputs.flatten(2))

    def make(part: slice) -> Tensor:
        sample = rows[part]
        top = (ranks[sample] < changed[part].unsqueeze(1)).unsqueeze(1)
        return torch.where(top, first[sample], second[sample]).view(-1, *inputs.shape[1:])

    with eval_mode(model):
        target, clean = clean_scores(model, inputs, targets, batch_size, call)
        bar = Progress(rows.shape[0], "insertion inputs" if insert else "deletion inputs", progress)
        try:
            scores = forward_scores(model, counted_target(target, bar), rows, make, batch_size, call)
        finally:
            bar.close()
        scores = scores.view(n, steps)
    clean = clean.to(scores.dtype).unsqueeze(1)
    curve = torch.cat([scores, clean] if insert else [clean, scores], dim=1)
    fractions = counts.to(curve.dtype) / positions
    auc = torch.trapezoid(curve, fractions, dim=1)
    auc = torch.where(valid, auc, torch.full_like(auc, float("nan")))
    return CurveResult(per_sample=auc, mean=nanmean(auc), curve=curve, fractions=fractions)


def deletion(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    steps: int = 20,
    baseline: Baseline = 0.0,
    batch_size: int | None = None,
    sigma: float = 5.0,
    kernel_size: int = 11,
    image_arg: ImageArg = None,
    progress: bool | None = None,
) -> CurveResult:
    r"""Deletion AUC: the score as the most relevant positions are replaced by a baseline (lower is better).

    See the module docstring for the formula (Petsiuk et al., RISE, BMVC 2018).

    Args:
        model: the classifier; run in eval mode (its flags are restored afterwards).
        inputs: ``(N, C, *S)`` model inputs.
        maps: one map per sample (any method's output; resized to ``S``).
        targets: the score to follow: a target object, a class index or one per sample (its softmax
            probability), or ``None`` for the predicted class's probability.
        steps: number of intervals :math:`K` (the curve has :math:`K + 1` points).
        baseline: what replaces deleted positions: a constant, ``"blur"`` (a Gaussian blur of the
            input), a tensor broadcastable to ``inputs``, or a function of ``inputs``.
        batch_size: perturbed inputs per forward (``None``: 8 on a CPU, 32 on a GPU).
        sigma: blur standard deviation, for ``baseline="blur"``.
        kernel_size: blur kernel length, for ``baseline="blur"``.
        image_arg: for tuple/dict ``inputs`` (a model with several inputs), which argument is the
            image; only the image is perturbed (see :class:`camkit.engine.ModelInput`).
        progress: a progress line (rate, ETA) counting the perturbed inputs scored: ``True``
            always, ``False`` never, ``None`` only for work that lasts a few seconds (see
            :class:`camkit.engine.Progress`).

    Returns:
        ``per_sample`` AUCs ``(N,)``, their ``mean``, the ``curve`` ``(N, K + 1)`` of scores and the
        ``fractions`` ``(K + 1,)`` of deleted positions.

    Raises:
        ValueError: for ``steps`` or ``batch_size`` < 1, maps of the wrong shape or batch, a bad baseline.
        TypeError: for arguments of the wrong type.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> result = deletion(model, torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4), steps=4)
        >>> result.fractions
        tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000])
        >>> result.curve.shape, result.per_sample.shape
        (torch.Size([2, 5]), torch.Size([2]))
    """
    return _curve(
        model, inputs, maps, targets, steps, baseline, batch_size, sigma, kernel_size, False, image_arg, progress
    )


def insertion(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    steps: int = 20,
    baseline: Baseline = "blur",
    batch_size: int | None = None,
    sigma: float = 5.0,
    kernel_size: int = 11,
    image_arg: ImageArg = None,
    progress: bool | None = None,
) -> CurveResult:
    r"""Insertion AUC: the score as the most relevant positions are restored onto a baseline (higher is better).

    See the module docstring for the formula (Petsiuk et al., RISE, BMVC 2018). Arguments are those
    of :func:`deletion`; the default baseline is a blurred copy of the input.

    Args:
        model: the classifier; run in eval mode (its flags are restored afterwards).
        inputs: ``(N, C, *S)`` model inputs.
        maps: one map per sample (any method's output; resized to ``S``).
        targets: as for :func:`deletion`.
        steps: number of intervals :math:`K`.
        baseline: the starting image: ``"blur"``, a constant, a tensor or a function of ``inputs``.
        batch_size: perturbed inputs per forward (``None``: 8 on a CPU, 32 on a GPU).
        sigma: blur standard deviation.
        kernel_size: blur kernel length.
        image_arg: as for :func:`deletion`.
        progress: as for :func:`deletion`.

    Returns:
        ``per_sample`` AUCs, their ``mean``, the ``curve`` ``(N, K + 1)`` and the ``fractions`` of
        inserted positions.

    Raises:
        ValueError: as for :func:`deletion`.
        TypeError: for arguments of the wrong type.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(1, 1, 4, 4)
        >>> result = insertion(model, x, torch.rand(1, 4, 4), targets=0, steps=2, baseline=0.0)
        >>> bool(result.curve[0, -1] == torch.softmax(model(x), 1)[0, 0])  # all restored: the clean score
        True
    """
    return _curve(
        model, inputs, maps, targets, steps, baseline, batch_size, sigma, kernel_size, True, image_arg, progress
    )
