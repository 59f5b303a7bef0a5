r"""FullGrad: gradients with respect to every bias of the network, plus input-gradient × input.

Srinivas & Fleuret, Full-Gradient Representation for Neural Network Visualization, NeurIPS 2019.

.. math::
    S(x) = \sum_c \psi\big(|x_c \odot \nabla_{x_c} Y|\big)
         + \sum_{l} U\Big(\sum_c \psi\big(|b_{l,c}\, \nabla_{z_{l,c}} Y|\big)\Big)

where :math:`z_l` is the output of layer ``l`` with (effective) bias :math:`b_l`, :math:`\psi`
min-max normalizes one channel of one sample, and :math:`U` upsamples to the input size. For a
BatchNorm the effective bias is :math:`\beta - \mu\gamma/\sqrt{\sigma^2 + \epsilon}` (running
statistics, i.e. eval mode).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from camkit import ops
from camkit.registry import MethodContext, register

__all__ = ["bias_layers", "effective_bias", "fullgrad", "fullgrad_total"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def bias_layers(model: nn.Module) -> list[str]:
    """Names of the convolutions with a bias and the BatchNorms with running statistics.

    A BatchNorm that applies an activation inside its own forward (timm's ``BatchNormAct2d``:
    normalization, then its ``drop`` child, then its ``act`` child) is read at its ``drop`` child,
    whose output is the normalized tensor before the activation: FullGrad's bias term needs the
    gradient with respect to the layer's pre-activation output, not the activated one.

    Args:
        model: the model.

    Returns:
        Dotted names, in definition order.
    """
    names = []
    for name, m in model.named_modules():
        if isinstance(m, _CONV) and m.bias is not None:
            names.append(name)
        elif isinstance(m, _NORM) and m.running_mean is not None and m.bias is not None:
            fused = isinstance(getattr(m, "act", None), nn.Module) and isinstance(getattr(m, "drop", None), nn.Module)
            names.append(f"{name}.drop".lstrip(".") if fused else name)
    return names


def _bias_owner(model: nn.Module, name: str) -> nn.Module:
    """The layer whose bias the term of ``name`` uses (a norm-act layer's, for its ``drop`` child)."""
    module = model.get_submodule(name)
    if not isinstance(module, _CONV + _NORM) and name.rsplit(".", 1)[-1] == "drop":
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if isinstance(parent, _NORM):
            return parent
    return module


def effective_bias(module: nn.Module) -> Tensor | None:
    """The per-channel bias a layer adds to its output (``None`` when it has none).

    Args:
        module: a convolution or a BatchNorm.

    Returns:
        ``(C,)`` bias, detached.
    """
    bias = getattr(module, "bias", None)
    if not isinstance(bias, Tensor):
        return None
    if isinstance(module, _NORM) and module.running_mean is not None and module.running_var is not None:
        scale = module.weight if module.weight is not None else torch.ones_like(module.running_mean)
        bias = bias - module.running_mean * scale / torch.sqrt(module.running_var + module.eps)
    return bias.detach()


def _channel_normalized_sum(x: Tensor) -> Tensor:
    """Min-max normalize every (sample, channel) map of ``(N, C, *S)``, then sum the channels."""
    return ops.normalize(x.flatten(0, 1)).view_as(x).sum(dim=1)


def fullgrad_total(terms: Sequence[Tensor], x: Tensor | None, grad: Tensor | None) -> Tensor:
    r"""FullGrad's map: the input term :math:`\sum_c \psi(|x_c \nabla_{x_c} Y|)` plus every layer term, upsampled.

    Args:
        terms: one bias term ``(N, *S_l)`` per hooked layer (:func:`fullgrad`).
        x: the model input ``(N, C, *S_in)``.
        grad: its gradient.

    Returns:
        The map ``(N, *S_in)``, not normalized.

    Raises:
        ValueError: when the input or its gradient is missing (a forward without gradients).
    """
    if x is None or grad is None:
        raise ValueError("FullGrad needs the input gradient: run the forward with gradients enabled")
    dtype = terms[0].dtype  # the input term is weighted in the maps' (upcast) precision too
    total = _channel_normalized_sum((x.detach().to(dtype) * grad.to(dtype)).abs())
    for term in terms:
        total = total + ops.upsample(term, x.shape[2:])
    return total


@register(
    "fullgrad",
    class_name="FullGrad",
    peer_names=("FullGrad",),
    needs_gradients=True,
    input_gradient=True,
    reduce=fullgrad_total,
    notes=(
        "Every convolution with a bias and every BatchNorm is hooked (``target_layer=None``; a given "
        "``target_layer`` restricts the bias terms to those layers); run the forward in eval mode so BatchNorm "
        "biases are the running-statistics ones. The call returns a one-element list with the ``(N, *S_in)`` map."
    ),
    relu=False,
    output="map",
    family="gradient",
    layers=bias_layers,
    summary="FullGrad: |bias × gradient| of every biased layer (+ |input × gradient|), normalized per channel.",
    paper="Srinivas & Fleuret, Full-Gradient Representation for Neural Network Visualization, NeurIPS 2019",
)
def fullgrad(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""FullGrad: one layer's term :math:`\sum_c \psi(|b_c \, \nabla_{z_c} Y|)` at the layer's resolution.

    .. math::
        S(x) = \sum_c \psi(|x_c \odot \nabla_{x_c} Y|) + \sum_l U\Big(\sum_c \psi(|b_{l,c} \nabla_{z_{l,c}} Y|)\Big)

    :func:`fullgrad_total` (the spec's ``reduce``) sums the terms of every hooked layer after
    upsampling and adds the input-gradient term: the method gives one map.
    """
    bias = effective_bias(_bias_owner(ctx.model, ctx.layer_name))
    if bias is None or bias.shape[0] != g.shape[1]:
        return torch.zeros(g.shape[0], *g.shape[2:], dtype=g.dtype, device=g.device)
    b = bias.to(g.dtype).view(1, -1, *([1] * (g.ndim - 2)))
    return _channel_normalized_sum((b * g).abs())
