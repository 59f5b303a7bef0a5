"""Token-to-grid reshapes for transformers (``pytorch_grad_cam.utils.reshape_transforms``).

Pass one as ``reshape_transform=`` so a transformer layer's ``(N, tokens, C)`` output becomes a
``(N, C, height, width)`` map (and a torchvision FPN's dict of levels one ``(N, C, h, w)`` map).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fasterrcnn_reshape_transform", "swinT_reshape_transform", "vit_reshape_transform"]


def _grid(tokens: Tensor, height: int, width: int) -> Tensor:
    if tokens.ndim != 3 or tokens.shape[1] != height * width:
        raise ValueError(
            f"expected (N, {height}*{width}, C) tokens, got shape {tuple(tokens.shape)}: pass height= and width= "
            "of the token grid"
        )
    return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)


def vit_reshape_transform(tensor: Tensor, height: int = 14, width: int = 14) -> Tensor:
    """ViT tokens ``(N, 1 + height*width, C)`` (class token first) to ``(N, C, height, width)``.

    Args:
        tensor: the layer output.
        height: token rows.
        width: token columns.

    Returns:
        The grid, class token dropped.

    Example:
        >>> import torch
        >>> vit_reshape_transform(torch.zeros(2, 1 + 4, 8), 2, 2).shape
        torch.Size([2, 8, 2, 2])
    """
    return _grid(tensor[:, 1:, :], height, width)


def swinT_reshape_transform(tensor: Tensor, height: int = 7, width: int = 7) -> Tensor:
    """Swin tokens ``(N, height*width, C)`` to ``(N, C, height, width)``.

    Args:
        tensor: the layer output (already 4-D ``(N, height, width, C)`` outputs are accepted too).
        height: token rows.
        width: token columns.

    Returns:
        The grid.

    Example:
        >>> import torch
        >>> swinT_reshape_transform(torch.zeros(2, 4, 8), 2, 2).shape
        torch.Size([2, 8, 2, 2])
    """
    return _grid(tensor.reshape(tensor.shape[0], -1, tensor.shape[-1]), height, width)


def fasterrcnn_reshape_transform(x: Mapping[str, Tensor]) -> Tensor:
    """A torchvision FPN's levels (a dict of ``(N, C_l, h_l, w_l)``) as one ``(N, sum C_l, h, w)`` map.

    Each level's absolute value is resized (bilinear) to the size of the ``"pool"`` level and the
    levels are concatenated along the channels in the dict's order, as pytorch-grad-cam's
    ``fasterrcnn_reshape_transform`` (for ``model.backbone`` of a Faster R-CNN).

    Args:
        x: the FPN output, with a ``"pool"`` entry.

    Returns:
        The concatenated levels.

    Raises:
        KeyError: when ``x`` has no ``"pool"`` level.

    Example:
        >>> levels = {"0": torch.ones(1, 2, 4, 4), "pool": -torch.ones(1, 2, 1, 1)}
        >>> fasterrcnn_reshape_transform(levels).flatten().tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    if "pool" not in x:
        raise KeyError(f"fasterrcnn_reshape_transform needs the FPN's 'pool' level, got keys {list(x)}")
    size = tuple(x["pool"].shape[-2:])
    return torch.cat([F.interpolate(value.abs(), size=size, mode="bilinear") for value in x.values()], dim=1)
