"""Guided backpropagation and Guided Grad-CAM: input-space gradients, not per-layer maps.

These are not registry methods: they return ``(N, C_in, *S_in)`` gradients of the input rather than
a class activation map, and Guided Grad-CAM multiplies them by any CAM upsampled to the input size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from camkit import ops
from camkit.engine import eval_mode, guided_relus, paused
from camkit.targets import ClassTarget, Target

__all__ = ["guided_backprop", "guided_gradcam"]


def guided_backprop(
    model: nn.Module, x: Tensor, class_idx: int | list[int] | None = None, *, targets: Target | None = None
) -> Tensor:
    r"""Guided backpropagation: :math:`\partial Y^{(c)} / \partial x` through guided ReLUs.

    Each ReLU passes back only positive gradients where its input was positive (Springenberg et
    al., Striving for Simplicity: The All Convolutional Net, ICLR workshop 2015). The model runs
    in eval mode; its flags, hooks and parameters' ``.grad`` are left as they were.

    Args:
        model: the model (its ``nn.ReLU``/``nn.ReLU6`` modules are guided).
        x: the input batch.
        class_idx: class per sample (``None``: each sample's top class).
        targets: a camkit target instead of ``class_idx``.

    Returns:
        The guided gradient, shaped like ``x``.

    Example:
        >>> from torchvision.models import resnet18
        >>> guided_backprop(resnet18(), torch.rand(1, 3, 64, 64), 3).shape
        torch.Size([1, 3, 64, 64])
    """
    leaf = x.detach().clone().requires_grad_(True)
    with paused(), eval_mode(model), guided_relus(model), torch.enable_grad():
        output = model(leaf)
        target: Any = targets
        if target is None:
            chosen = class_idx if class_idx is not None else output.argmax(dim=1).tolist()
            target = ClassTarget(chosen)
        (grad,) = torch.autograd.grad(target(output).sum(), leaf)
    return grad


def guided_gradcam(guided: Tensor, cam: Tensor) -> Tensor:
    r"""Guided Grad-CAM: the guided gradient times the CAM upsampled to the input size.

    .. math:: G(x) \odot U(L^{(c)})

    Selvaraju et al., Grad-CAM, ICCV 2017 (section 3.1).

    Args:
        guided: ``(N, C, *S_in)`` from :func:`guided_backprop`.
        cam: ``(N, *S)`` maps of any CAM method.

    Returns:
        ``(N, C, *S_in)``.

    Example:
        >>> guided_gradcam(torch.ones(1, 3, 4, 4), torch.ones(1, 2, 2)).shape
        torch.Size([1, 3, 4, 4])
    """
    return guided * ops.upsample(cam, guided.shape[2:]).unsqueeze(1).to(guided.dtype)
