"""Score-CAM family: channel weights from the model's scores on inputs masked by each channel.

For sample ``n`` and channel ``k`` the mask is the channel's activation min-max normalized over
its own spatial positions, upsampled to the input size. The input multiplied by the mask is run
through the model (in eval mode, under ``inference_mode``, ``batch_size`` masked inputs per
forward), and the weight is the softmax over channels of the score increase over the clean input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from camkit.ops import upsample
from camkit.registry import MethodContext, register

__all__ = ["iscam", "scorecam", "sscam"]

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


def _score_weights(a: Tensor, ctx: MethodContext, num_samples: int, transform: MaskTransform) -> Tensor:
    x, probe = ctx.input, ctx.probe
    if x is None or probe is None:
        raise ValueError("Score-CAM methods need the model input: run the forward after creating the extractor")
    if x.shape[0] != a.shape[0]:
        raise ValueError(
            f"the captured input has batch {x.shape[0]} but the activation has batch {a.shape[0]}: "
            "run one forward of the batch you explain"
        )
    n, c = a.shape[:2]
    masks = channel_masks(a).flatten(0, 1).unsqueeze(1)  # (N*C, 1, *S)
    rows = torch.arange(n, device=x.device).repeat_interleave(c)
    baseline = probe.scores(x, torch.arange(n, device=x.device)).to(a.dtype)
    total = torch.zeros(n * c, dtype=a.dtype, device=a.device)
    size = x.shape[2:]
    for sample, part in probe.chunks(n * c, num_samples, label="masked inputs"):
        mask = transform(upsample(masks[part], size), sample).to(x.dtype)
        scores = probe.scores(mask * x[rows[part]], rows[part]).to(a.dtype)
        total[part] += scores - baseline[rows[part]]
    return torch.softmax(total.view(n, c) / num_samples, dim=1)


def _option_int(ctx: MethodContext, key: str, default: int) -> int:
    value = int(ctx.options.get(key, default))
    if value < 1:
        raise ValueError(f"{key} must be >= 1, got {value}")
    return value


@register(
    "scorecam",
    needs_gradients=False,
    needs_input=True,
    family="perturbation",
    summary="Score-CAM: softmax of the score gain of the input masked by each channel.",
    paper="Wang et al., Score-CAM, CVPR Workshops 2020",
)
def scorecam(a: Tensor, g: Tensor | None, ctx: MethodContext) -> Tensor:
    r"""Score-CAM weights :math:`w_k = \mathrm{softmax}_k(Y(M_k \odot X) - Y(X))`."""
    return _score_weights(a, ctx, 1, lambda m, _s: m)


@register(
    "sscam",
    needs_gradients=False,
    needs_input=True,
    family="perturbation",
    summary="SS-CAM: Score-CAM averaged over masks with Gaussian noise added.",
    paper="Wang et al., SS-CAM, arXiv:2006.14255, 2020",
)
def sscam(a: Tensor, g: Tensor | None, ctx: MethodContext) -> Tensor:
    r"""SS-CAM weights :math:`w_k = \mathrm{softmax}_k(\frac1N\sum_i Y((M_k+\delta_i)\odot X) - Y(X))`."""
    num_samples = _option_int(ctx, "num_samples", 35)
    std = float(ctx.options.get("std", 2.0))
    generator = ctx.options.get("generator")

    def noisy(m: Tensor, _s: int) -> Tensor:
        noise = torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)
        return m + std * noise

    return _score_weights(a, ctx, num_samples, noisy)


@register(
    "iscam",
    needs_gradients=False,
    needs_input=True,
    family="perturbation",
    summary="IS-CAM: Score-CAM integrated over masks scaled from 0 towards full strength.",
    paper="Naidu et al., IS-CAM, arXiv:2010.03023, 2020",
)
def iscam(a: Tensor, g: Tensor | None, ctx: MethodContext) -> Tensor:
    r"""IS-CAM weights with masks :math:`M_i = \sum_{j=0}^{i-1} \frac{j}{N} M_k`, i = 1..N."""
    num_samples = _option_int(ctx, "num_samples", 10)

    def scaled(m: Tensor, s: int) -> Tensor:
        i = s + 1
        return m * (i * (i - 1) / (2 * num_samples))

    return _score_weights(a, ctx, num_samples, scaled)
