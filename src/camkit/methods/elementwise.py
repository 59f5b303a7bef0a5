r"""Element-wise gradient methods: spatial weights from ``G`` itself instead of a spatial mean.

Grad-CAM averages the gradient over space before weighting a channel; the methods here keep the
gradient at every position, so the map is a sum of element-wise products :math:`g_k \odot A_k`.
Both return *spatial* weights ``(N, C, *S)`` for the one combine step, chosen so that
:math:`w \odot A` is exactly the per-channel term of the formula; the ``eigen_smooth`` option of
the extractor therefore projects exactly those terms, as pytorch-grad-cam does.

Notation: :math:`A_k(i,j)` is channel ``k`` of the target layer's activation and
:math:`g_k(i,j) = \partial Y^{(c)} / \partial A_k(i,j)` its gradient.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camkit.methods import HiResCAM
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> with HiResCAM(model, "0") as extractor:
    ...     cams = extractor([0, 1], model(torch.rand(2, 3, 8, 8)))
    >>> cams[0].shape
    torch.Size([2, 6, 6])
"""

from __future__ import annotations

import torch
from torch import Tensor

from camkit.registry import MethodContext, register

__all__ = ["gradcamelementwise", "hirescam"]


@register(
    "hirescam",
    class_name="HiResCAM",
    peer_names=("HiResCAM",),
    needs_gradients=True,
    family="gradient",
    summary="HiResCAM: element-wise gradient x activation, summed over channels (no spatial averaging).",
    paper=(
        "Draelos and Carin, Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional "
        "neural networks, arXiv:2011.08891, 2020"
    ),
)
def hirescam(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""HiResCAM spatial weights: the gradient itself.

    .. math:: L^{(c)}(i,j) = \mathrm{ReLU}\Big(\sum_k g_k(i,j)\, A_k(i,j)\Big), \qquad w_k(i,j) = g_k(i,j)

    Draelos and Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", arXiv:2011.08891, 2020.
    """
    return g


@register(
    "gradcamelementwise",
    class_name="GradCAMElementWise",
    peer_names=("GradCAMElementWise",),
    needs_gradients=True,
    family="gradient",
    summary="Grad-CAM element-wise: ReLU of each gradient x activation product, summed over channels.",
    paper="Gildenblat et al., pytorch-grad-cam (GradCAMElementWise), GitHub, 2021",
)
def gradcamelementwise(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""Grad-CAM element-wise spatial weights: the gradient where its product with ``A`` is positive.

    .. math:: L^{(c)}(i,j) = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}\big(g_k(i,j)\, A_k(i,j)\big)\Big),
        \qquad w_k(i,j) = g_k(i,j)\,[g_k(i,j) A_k(i,j) > 0]

    so that :math:`w_k A_k = \mathrm{ReLU}(g_k A_k)` exactly, also where :math:`A_k = 0`.
    A variant of HiResCAM introduced by pytorch-grad-cam (Gildenblat et al., GitHub, 2021).
    """
    return torch.where(g * a > 0, g, torch.zeros_like(g))
