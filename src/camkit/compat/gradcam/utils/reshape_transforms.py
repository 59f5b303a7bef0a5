"""Token-to-grid reshapes for transformers (``pytorch_grad_cam.utils.reshape_transforms``).

Pass one as ``reshape_transform=`` so a transformer layer's ``(N, tokens, C)`` output becomes a
``(N, C, height, width)`` map.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["swinT_reshape_transform", "vit_reshape_transform"]


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
