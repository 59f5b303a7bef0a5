"""Score-CAM family: channel weights from the model's scores on inputs masked by each channel.

For sample ``n`` and channel ``k`` the mask is the channel's activation min-max normalized over
its own spatial positions, upsampled to the input size. The input multiplied by the mask is run
through the model (in eval mode, under ``inference_mode``, ``batch_size`` masked inputs per
forward), and the weight is the softmax over channels of the score increase over the clean input.
The softmax does not change when the same number is subtracted from every channel's score, so the
clean input's score :math:`Y(X)` is never computed. A masked input that is all zero (a flat
channel's mask is 0; so is IS-CAM's first, zero-strength step) is not forwarded either: every such
input of a sample is the same zero tensor, whose score is computed once. On a trained network
many channels are flat (EfficientNet-Lite0's ``bn2`` ends in a ReLU6: 429 to 832 of its 1280
channels are all zero on the bundled photos), so this often halves the forwards, exactly.

Channel budget (``max_channels=K``, every method of the family): only the ``K`` channels whose
activation varies most over its spatial positions are scored, per sample; the softmax runs over
those ``K`` and every other channel gets weight 0. See :func:`select_channels` for the rule and its
source.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from camkit.ops import upsample
from camkit.registry import MethodContext, Option, Probe, register

__all__ = ["all_channels", "budgeted_masks", "channel_budget", "iscam", "scorecam", "select_channels", "sscam"]

# (masks (b, 1, *S_in), sample index s) -> transformed masks
MaskTransform = Callable[[Tensor, int], Tensor]


def channel_masks(a: Tensor) -> Tensor:
    """Min-max normalize every channel of ``a`` over its spatial positions (flat channels → 0).

    Args:
        a: activations ``(N, C, *S)``.

    Returns:
        Masks in ``[0, 1]`` of the same shape.
    """
    flat = a.flatten(2)
    low = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (flat - low) / safe, torch.zeros_like(flat)).view_as(a)


def budgeted_masks(a: Tensor, max_channels: Any) -> tuple[Tensor, Tensor | None]:
    """The channel masks of the channels a ``max_channels`` budget keeps, one row per (sample, channel).

    Args:
        a: activations ``(N, C, *S)``.
        max_channels: the option as given (:func:`channel_budget`).

    Returns:
        ``masks`` ``(N*K, 1, *S)`` (:func:`channel_masks`, row ``r`` = sample ``r // K``) and the kept
        channels ``(N, K)`` of :func:`select_channels` (``None``: every channel, ``K = C``).
    """
    budget = channel_budget(max_channels)
    keep = None if budget is None or budget >= a.shape[1] else select_channels(a, budget)
    masks = channel_masks(a)
    if keep is not None:
        masks = masks.gather(1, keep.view(*keep.shape, *[1] * (a.ndim - 2)).expand(-1, -1, *a.shape[2:]))
    return masks.flatten(0, 1).unsqueeze(1), keep


def all_channels(weights: Tensor, keep: Tensor | None, channels: int) -> Tensor:
    """Weights ``(N, K)`` of the kept channels as ``(N, C)``, 0 for the channels left out."""
    if keep is None:
        return weights
    out = torch.zeros(weights.shape[0], channels, dtype=weights.dtype, device=weights.device)
    return out.scatter(1, keep.to(weights.device), weights)


def channel_budget(value: Any) -> int | None:
    """Check a ``max_channels`` option: a positive int, or ``None`` for no budget (every channel).

    Args:
        value: the option as given.

    Returns:
        The budget as an ``int``, or ``None``.

    Raises:
        ValueError: for anything else (``0``, negatives, floats, bools, strings).

    Example:
        >>> channel_budget(64), channel_budget(None)
        (64, None)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(
            f"max_channels must be a positive int (how many channels to score) or None (score every channel), "
            f"got {value!r}; e.g. max_channels=64"
        )
    return int(value)


def select_channels(a: Tensor, k: int) -> Tensor:
    r"""Indices of the ``k`` channels of each sample whose activation has the largest spatial variance.

    The rule of Faster Score-CAM (Tabayashi, 2020, https://github.com/tabayashi0117/Score-CAM, also
    tf-keras-vis' ``Scorecam(max_N=...)``): for sample :math:`n` rank the channels by
    :math:`\operatorname{Var}_{x,y} A^n_k(x, y)` and keep the top ``k``. Why this rule: it needs
    no gradient and no extra forward (Score-CAM stays gradient-free, and choosing costs one
    reduction over ``A``), and it measures what a Score-CAM mask can carry: a channel that is
    nearly constant over space gives a nearly uniform mask, which dims the whole input evenly and
    tells nothing about *where* the evidence is, while a high-variance channel gives a mask that
    keeps some regions and removes others. Ties are broken by the lower channel index (a stable
    sort), so the choice is deterministic.

    Args:
        a: activations ``(N, C, *S)``.
        k: channels to keep, ``1 <= k <= C``.

    Returns:
        ``(N, k)`` channel indices (int64), highest variance first.

    Example:
        >>> a = torch.zeros(1, 3, 2, 2)
        >>> a[0, 1] = torch.tensor([[0.0, 4.0], [0.0, 4.0]])
        >>> a[0, 2] = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
        >>> select_channels(a, 2)
        tensor([[1, 2]])
    """
    variance = a.flatten(2).var(dim=-1, correction=0)
    return variance.argsort(dim=1, descending=True, stable=True)[:, :k]


class _ZeroScores:
    """Each sample's score of an all-zero input, computed once (one forward) when first needed."""

    def __init__(self, probe: Probe, x: Tensor, dtype: torch.dtype) -> None:
        self.probe, self.x, self.dtype = probe, x, dtype
        self.scores: Tensor | None = None

    def __call__(self, rows: Tensor) -> Tensor:
        if self.scores is None:
            samples = torch.arange(self.x.shape[0], device=self.x.device)
            self.scores = self.probe.scores(torch.zeros_like(self.x), samples).to(self.dtype)
        return self.scores[rows.to(self.scores.device)]


def _score_weights(
    a: Tensor, ctx: MethodContext, num_samples: int, transform: MaskTransform, zero_stays_zero: bool
) -> Tensor:
    """Softmax over channels of the mean score of the transformed masks times the input.

    With ``zero_stays_zero`` (the transform maps a zero mask to zero: no added noise), a masked
    input that is all zero is not forwarded: flat channels (mask 0) and zero-strength steps all
    take the sample's score of a zero input, computed once.
    """
    x, probe = ctx.input, ctx.probe
    if x is None or probe is None:
        raise ValueError("Score-CAM methods need the model input: run the forward after creating the extractor")
    if x.shape[0] != a.shape[0]:
        raise ValueError(
            f"the captured input has batch {x.shape[0]} but the activation has batch {a.shape[0]}: "
            "run one forward of the batch you explain"
        )
    n, c = a.shape[:2]
    masks, keep = budgeted_masks(a, ctx.options.get("max_channels"))
    k = c if keep is None else keep.shape[1]
    rows = torch.arange(n, device=a.device).repeat_interleave(k)
    total = torch.zeros(n * k, dtype=a.dtype, device=a.device)
    zero = _ZeroScores(probe, x, a.dtype)
    todo = torch.arange(n * k, device=a.device)
    if zero_stays_zero:
        flat = masks.flatten(1).amax(1) == 0  # masks are >= 0
        if bool(flat.any()):
            total[flat] = num_samples * zero(rows[flat])
            todo = todo[~flat]
    size = x.shape[2:]
    for sample, part in probe.chunks(todo.numel(), num_samples, label="masked inputs"):
        index = todo[part]
        mask = transform(upsample(masks[index], size), sample).to(x.dtype)
        if zero_stays_zero:
            live = mask.flatten(1).ne(0).any(1)
            if not bool(live.all()):
                total[index[~live]] += zero(rows[index[~live]])
                index, mask = index[live], mask[live]
                if index.numel() == 0:
                    continue
        picked = rows[index].to(x.device)
        total[index] += probe.scores(mask * x[picked], picked).to(a.dtype)
    return all_channels(torch.softmax(total.view(n, k) / num_samples, dim=1), keep, c)


_MAX_CHANNELS = Option(None, (), "score only the K channels of largest variance (a positive int); None: all")
_SCORE_NOTES = (
    "Masked inputs run in eval mode under ``inference_mode``, ``batch_size`` per forward; :math:`X` is the input "
    "of the last forward (the baseline of the seed formula)."
)


def _option_int(ctx: MethodContext, key: str, default: int) -> int:
    value = int(ctx.options.get(key, default))
    if value < 1:
        raise ValueError(f"{key} must be >= 1, got {value}")
    return value


@register(
    "scorecam",
    class_name="ScoreCAM",
    peer_names=("ScoreCAM",),
    options={"max_channels": _MAX_CHANNELS},
    positional=("batch_size",),
    notes=_SCORE_NOTES,
    cost="min(C, max_channels or C)",
    needs_gradients=False,
    needs_input=True,
    family="perturbation",
    summary="Score-CAM: softmax of the score gain of the input masked by each channel.",
    paper="Wang et al., Score-CAM, CVPR Workshops 2020",
)
def scorecam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""Score-CAM weights :math:`w_k = \mathrm{softmax}_k(Y(M_k \odot X) - Y(X))`.

    Options: ``max_channels=K`` scores only the ``K`` channels of :func:`select_channels` (the softmax
    runs over them, the others get 0).
    """
    return _score_weights(a, ctx, 1, lambda m, _s: m, zero_stays_zero=True)


@register(
    "sscam",
    class_name="SSCAM",
    options={
        "num_samples": Option(35, (int,), "number of noisy masks per channel"),
        "std": Option(2.0, (float, int), "standard deviation of the noise added to the masks"),
        "generator": Option(None, (torch.Generator,), "a torch.Generator for reproducible noise"),
        "max_channels": _MAX_CHANNELS,
    },
    positional=("batch_size", "num_samples", "std"),
    notes=_SCORE_NOTES,
    cost="min(C, max_channels or C) * num_samples",
    needs_gradients=False,
    needs_input=True,
    family="perturbation",
    summary="SS-CAM: Score-CAM averaged over masks with Gaussian noise added.",
    paper="Wang et al., SS-CAM, arXiv:2006.14255, 2020",
)
def sscam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""SS-CAM weights :math:`w_k = \mathrm{softmax}_k(\frac1N\sum_i Y((M_k+\delta_i)\odot X) - Y(X))`.

    Options: ``num_samples``, ``std``, ``generator``, and ``max_channels`` as in :func:`scorecam`.
    """
    num_samples = _option_int(ctx, "num_samples", 35)
    std = float(ctx.options["std"])
    generator = ctx.options["generator"]

    def noisy(m: Tensor, _s: int) -> Tensor:
        noise = torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)
        return m + std * noise

    return _score_weights(a, ctx, num_samples, noisy, zero_stays_zero=False)


@register(
    "iscam",
    class_name="ISCAM",
    options={"num_samples": Option(10, (int,), "number of integration steps"), "max_channels": _MAX_CHANNELS},
    positional=("batch_size", "num_samples"),
    cost="min(C, max_channels or C) * (num_samples - 1) + 1",
    notes=_SCORE_NOTES
    + " The mask strength of step ``i`` is :math:`i(i-1)/(2N)`, as in the documented formula (TorchCAM 0.5's "
    "loop is shifted by one sample and reaches :math:`(N+1)/2`).",
    needs_gradients=False,
    needs_input=True,
    family="perturbation",
    summary="IS-CAM: Score-CAM integrated over masks scaled from 0 towards full strength.",
    paper="Naidu et al., IS-CAM, arXiv:2010.03023, 2020",
)
def iscam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""IS-CAM weights with masks :math:`M_i = \sum_{j=0}^{i-1} \frac{j}{N} M_k`, i = 1..N.

    Options: ``num_samples``, and ``max_channels`` as in :func:`scorecam`.
    """
    num_samples = _option_int(ctx, "num_samples", 10)

    def scaled(m: Tensor, s: int) -> Tensor:
        i = s + 1
        return m * (i * (i - 1) / (2 * num_samples))

    return _score_weights(a, ctx, num_samples, scaled, zero_stays_zero=True)
