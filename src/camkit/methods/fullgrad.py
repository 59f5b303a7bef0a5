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
from typing import Any

import torch
from torch import Tensor, nn

from camkit import ops
from camkit.extractor import CAMExtractor
from camkit.layers import LayerSpec
from camkit.registry import MethodContext, register
from camkit.targets import Target

__all__ = ["FullGrad", "bias_layers", "effective_bias", "fullgrad"]

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


@register(
    "fullgrad",
    needs_gradients=True,
    relu=False,
    output="map",
    family="gradient",
    layers=bias_layers,
    summary="FullGrad: |bias × gradient| of every biased layer (+ |input × gradient|), normalized per channel.",
    paper="Srinivas & Fleuret, Full-Gradient Representation for Neural Network Visualization, NeurIPS 2019",
)
def fullgrad(a: Tensor, g: Tensor | None, ctx: MethodContext) -> Tensor:
    r"""One layer's FullGrad term :math:`\sum_c \psi(|b_c \, \nabla_{z_c} Y|)` at the layer's resolution.

    :class:`FullGrad` sums these terms over every biased layer after upsampling and adds the
    input-gradient term; with an explicit ``target_layer`` only the named layers' terms are
    returned, one map per layer.
    """
    if g is None:
        raise ValueError("fullgrad needs gradients")
    bias = effective_bias(_bias_owner(ctx.model, ctx.layer_name))
    if bias is None or bias.shape[0] != g.shape[1]:
        return torch.zeros(g.shape[0], *g.shape[2:], dtype=g.dtype, device=g.device)
    b = bias.to(g.dtype).view(1, -1, *([1] * (g.ndim - 2)))
    return _channel_normalized_sum((b * g).abs())


class FullGrad(CAMExtractor):
    r"""FullGrad saliency: every biased layer's gradient term plus the input term, at input size.

    .. math::
        S(x) = \sum_c \psi(|x_c \odot \nabla_{x_c} Y|) + \sum_l U\Big(\sum_c \psi(|b_{l,c} \nabla_{z_{l,c}} Y|)\Big)

    Srinivas & Fleuret, NeurIPS 2019. Every convolution with a bias and every BatchNorm is hooked
    (``target_layer`` is ignored unless given); run the forward in eval mode so BatchNorm biases
    are the running-statistics ones. The call returns a one-element list with the ``(N, *S_in)``
    map.

    Args:
        model: input model.
        target_layer: restrict the bias terms to these layers (default: every biased layer).
        input_shape: input shape without batch dim.
        **kwargs: passed to :class:`~camkit.extractor.CAMExtractor`.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with FullGrad(model) as extractor:
        ...     cams = extractor(3, model(torch.rand(1, 3, 64, 64)))
        >>> cams[0].shape
        torch.Size([1, 64, 64])
    """

    method = "fullgrad"
    input_gradient = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        input_shape: Sequence[int] = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, input_shape, **kwargs)

    def __call__(
        self,
        class_idx: int | Sequence[int] | None = None,
        scores: Any = None,
        normalized: bool = True,
        retain_graph: bool = False,
        *,
        targets: Target | None = None,
        create_graph: bool = False,
    ) -> list[Tensor]:
        """Compute the FullGrad map of the last forward.

        Args:
            class_idx: class to explain: one int for the batch, or one per sample.
            scores: the model output of that forward.
            normalized: min-max normalize each map to ``[0, 1]``.
            retain_graph: keep the autograd graph for another call.
            targets: a :mod:`camkit.targets` object instead of ``class_idx``.
            create_graph: not available for FullGrad (raises); see :meth:`CAMExtractor.__call__`.

        Returns:
            ``[map]`` with the map ``(N, *S_in)``.

        Raises:
            ValueError: when the input gradient is missing (forward without gradients), or for ``create_graph``.
        """
        if create_graph:
            raise ValueError("create_graph=True is not available for FullGrad: use Grad-CAM, LayerCAM, ...")
        layer_terms = super().__call__(class_idx, scores, False, retain_graph, targets=targets)
        x, grad = self._capture.input, self._capture.input_grad
        if x is None or grad is None:
            raise ValueError("FullGrad needs the input gradient: run the forward with gradients enabled")
        with torch.no_grad():
            dtype = layer_terms[0].dtype  # the input term is weighted in the maps' (upcast) precision too
            total = _channel_normalized_sum((x.detach().to(dtype) * grad.to(dtype)).abs())
            for term in layer_terms:
                total = total + ops.upsample(term, x.shape[2:])
        return [ops.normalize(total) if normalized else total]
