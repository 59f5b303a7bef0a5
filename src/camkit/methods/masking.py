r"""Layer-guided input masks: Group-CAM (score-weighted groups of channels) and Opti-CAM (optimised weights).

Both build masks of the input from the target layer's channels, run the model on the masked
inputs through the engine's probe (eval mode, hooks paused, ``batch_size`` rows per forward) and
turn the scores into the map:

* Group-CAM sums Grad-CAM-weighted channels in groups, keeps each group's strongest values as a
  mask, and weights the masks by the score gain of the input they keep over a blurred input;
* Opti-CAM optimises the channel weights with Adam so that the input masked by the normalised map
  scores as high as possible; its gradients with respect to the masked input come from
  :meth:`camkit.engine.ModelProbe.input_gradients` (``torch.autograd.grad``, no ``.grad`` touched).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from camkit.methods.perturbation import gaussian_blur, input_and_probe, positive_int
from camkit.ops import normalize, upsample
from camkit.registry import MethodContext, Option, register

__all__ = ["group_masks", "groupcam", "opticam", "opticam_mask"]


def group_masks(a: Tensor, g: Tensor, groups: int, threshold: float, size: tuple[int, ...]) -> Tensor:
    r"""Group-CAM's initial masks ``(N, G, *size)``: grouped Grad-CAM maps, de-noised, upsampled, min-max normalised.

    The ``C`` channels are split into consecutive groups of :math:`\lceil C/G \rceil`
    (:meth:`torch.Tensor.chunk`); group :math:`l`'s map is
    :math:`M_l = \mathrm{ReLU}(\sum_{k \in l} \alpha_k A_k)` with :math:`\alpha_k` the spatial mean of
    the gradient. Values at or below the map's ``threshold``-th percentile (linear interpolation, as
    :func:`numpy.percentile`) are set to 0 before upsampling; a flat upsampled map is all zero.

    Args:
        a: activations ``(N, C, *S)``.
        g: their gradients.
        groups: the number of groups :math:`G` asked for (at most ``C`` are formed).
        threshold: the de-noising percentile, in ``[0, 100]``.
        size: the input's spatial size.

    Returns:
        The masks in ``[0, 1]``.
    """
    n, c = a.shape[:2]
    alpha = g.flatten(2).mean(-1).view(n, c, *[1] * (a.ndim - 2))
    weighted = alpha * a
    maps = torch.relu(torch.stack([part.sum(1) for part in weighted.chunk(min(groups, c), dim=1)], dim=1))
    flat = maps.flatten(2)
    cut = torch.quantile(flat, threshold / 100.0, dim=-1, keepdim=True)
    maps = torch.where(flat > cut, flat, torch.zeros_like(flat)).view_as(maps)
    up = upsample(maps, size)
    return normalize(up.flatten(0, 1)).view_as(up)


@register(
    "groupcam",
    class_name="GroupCAM",
    options={
        "groups": Option(32, (int,), "number of channel groups G"),
        "threshold": Option(70.0, (float, int), "de-noising percentile: smaller values of a group map are set to 0"),
        "kernel_size": Option(51, (int,), "width of the Gaussian kernel of the blurred baseline"),
        "sigma": Option(50.0, (float, int), "standard deviation of the Gaussian of the blurred baseline"),
    },
    positional=("batch_size",),
    cost="min(C, groups) + 1",
    output="map",
    notes=(
        "The map has the input's size. The blurred baseline is the paper's (Gaussian kernel 51, sigma 50, "
        "reflected borders, cut to the input's size on small inputs). The score is the target's (the logit "
        "for a class index, as in Score-CAM); the paper uses the softmax probability. A group whose upsampled "
        "map is flat is skipped (weight 0, no forward)."
    ),
    needs_gradients=True,
    needs_scores=True,
    needs_input=True,
    family="perturbation",
    summary="Group-CAM: grouped Grad-CAM masks weighted by their score gain over a blurred input.",
    paper="Zhang et al., Group-CAM, arXiv:2103.13859, 2021",
)
def groupcam(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""Group-CAM map: group masks weighted by the score gain of the input they keep over a blurred input.

    .. math:: L = \mathrm{ReLU}\Big(\sum_{l=1}^{G} \big(Y(X \odot M'_l + \tilde X \odot (1 - M'_l))
              - Y(\tilde X)\big)\, M'_l\Big)

    :math:`M'_l` are the initial masks of :func:`group_masks` (grouped :math:`\sum_{k} \alpha_k A_k`,
    de-noised, upsampled, min-max normalised) and :math:`\tilde X` the blurred input
    (:func:`camkit.methods.perturbation.gaussian_blur`). Options: ``groups`` (:math:`G`),
    ``threshold`` (de-noising percentile, the paper's 70), ``kernel_size`` and ``sigma`` of the blur.
    """
    x, probe = input_and_probe(ctx, "Group-CAM")
    groups = positive_int("groups", ctx.options["groups"])
    threshold = float(ctx.options["threshold"])
    if not 0 <= threshold <= 100:
        raise ValueError(f"threshold must be a percentile in [0, 100], got {ctx.options['threshold']!r}")
    n, size = x.shape[0], tuple(x.shape[2:])
    masks = group_masks(a, g, groups, threshold, size)  # (N, G, *S)
    k = masks.shape[1]
    blurred = gaussian_blur(x, positive_int("kernel_size", ctx.options["kernel_size"]), float(ctx.options["sigma"]))
    base = probe.scores(blurred, torch.arange(n, device=x.device)).to(a.dtype)
    flat = masks.flatten(0, 1)  # (N*G, *S), row r = sample r // G, group r % G
    live = flat.flatten(1).amax(1).gt(0).nonzero().squeeze(1)  # normalised masks: 0 everywhere iff flat
    gains = torch.zeros(n * k, dtype=a.dtype, device=a.device)
    for _, part in probe.chunks(live.numel(), label="group masks"):
        index = live[part]
        sample = (index // k).to(x.device)
        mask = flat[index].unsqueeze(1).to(x.device, x.dtype)
        kept = x[sample] * mask + blurred[sample] * (1 - mask)
        gains[index] = probe.scores(kept, sample).to(a.dtype) - base[sample]
    return (gains.view(n, k, *[1] * len(size)) * masks).sum(1)


def opticam_mask(u: Tensor, a: Tensor, size: tuple[int, ...]) -> Tensor:
    r"""Opti-CAM's mask :math:`n(\mathrm{up}(\sum_k \mathrm{softmax}(u)_k A_k))`, differentiable in ``u``.

    Args:
        u: the weight logits ``(N, C)``.
        a: activations ``(N, C, *S)``.
        size: the input's spatial size.

    Returns:
        The upsampled map, min-max normalised per sample (a flat map is 0).
    """
    w = torch.softmax(u, dim=1).view(*u.shape, *[1] * (a.ndim - 2))
    return normalize(upsample((w * a).sum(1), size))


@register(
    "opticam",
    class_name="OptiCAM",
    options={
        "steps": Option(100, (int,), "Adam iterations"),
        "lr": Option(0.1, (float, int), "Adam's learning rate"),
    },
    positional=("batch_size",),
    cost="steps",
    notes=(
        "Each step is one forward and one backward of the masked batch (``batch_size`` samples at a time); "
        "the gradient reaches the weights through the mask by ``torch.autograd.grad``, and no parameter's "
        "``.grad`` changes. The weights start uniform (:math:`u = 0`); nothing is random, so the maps are "
        "deterministic. The score is the target's (the logit for a class index, as in the paper)."
    ),
    needs_gradients=False,
    needs_scores=False,
    needs_input=True,
    family="perturbation",
    summary="Opti-CAM: channel weights optimised so that the input masked by the map scores highest.",
    paper="Zhang et al., Opti-CAM, Computer Vision and Image Understanding 2024 (arXiv:2301.07002)",
)
def opticam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""Opti-CAM weights :math:`w = \mathrm{softmax}(u^*)`, optimised for the score of the masked input.

    .. math:: u^* = \arg\max_u Y\Big(X \odot n\big(\mathrm{up}\big(\sum_k \mathrm{softmax}(u)_k A_k\big)\big)\Big)

    :math:`n` is min-max normalisation over the input's positions; :math:`u` starts at 0 and takes
    ``steps`` Adam steps of learning rate ``lr`` (the paper's 100 and 0.1) on :math:`-Y`
    (:func:`opticam_mask`).
    """
    x, probe = input_and_probe(ctx, "Opti-CAM")
    steps = ctx.options["steps"]
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    lr = float(ctx.options["lr"])
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {ctx.options['lr']!r}")
    n, c = a.shape[:2]
    size = tuple(x.shape[2:])
    weights = torch.empty(n, c, dtype=a.dtype, device=a.device)
    for _, part in probe.chunks(n, label="samples"):
        with torch.inference_mode(False):  # copies: the forward may have run in inference mode
            acts, image = a[part].detach().clone(), x[part].detach().clone()
            u = torch.zeros(acts.shape[:2], dtype=a.dtype, device=a.device, requires_grad=True)
        rows = torch.arange(part.start, part.stop, device=x.device)
        optimiser = torch.optim.Adam([u], lr=lr)
        for _ in range(int(steps)):
            with torch.inference_mode(False), torch.enable_grad():
                masked = image * opticam_mask(u, acts, size).unsqueeze(1).to(image.dtype)
            _, grad = probe.input_gradients(masked.detach(), rows)
            (du,) = torch.autograd.grad(masked, u, grad_outputs=grad.to(masked.dtype))
            u.grad = -du  # maximise the score
            optimiser.step()
        weights[part] = torch.softmax(u.detach(), dim=1)
    return weights
