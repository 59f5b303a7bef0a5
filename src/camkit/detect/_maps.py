"""Map post-processing shared by every detection method: min-max per box, layer grid → image pixels.

Example:
    >>> import torch
    >>> from camkit.detect import Frame
    >>> grid = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # one box, a 2x2 grid spanning a 64x64 padded batch
    >>> to_pixels(grid, Frame(size=(16, 32), resized=(32, 64), padded=(64, 64))).shape
    torch.Size([1, 16, 32])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from camkit.detect._types import Frame

__all__ = ["normalize_maps", "to_pixels"]


def normalize_maps(maps: Tensor) -> Tensor:
    """Min-max each map ``(K, ...)`` to ``[0, 1]`` (float32); a flat map becomes zeros."""
    flat = maps.flatten(1).float()
    low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    span = high - low
    out = torch.where(span > 0, (flat - low) / span.clamp(min=torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return out.view(maps.shape)


def to_pixels(grid: Tensor, frame: Frame) -> Tensor:
    """Maps on a layer's grid ``(K, h, w)`` spanning the padded batch → the image's pixels ``(K, H, W)``, min-maxed.

    The grid covers the padded batch tensor; the image is its top-left ``frame.resized`` corner,
    which is the input image resized. The grid is upsampled (bilinear) straight to the input
    image's scale over the whole padded extent, then cropped to the image.
    """
    height, width = frame.size
    full_h = max(height, round(frame.padded[0] * height / frame.resized[0]))
    full_w = max(width, round(frame.padded[1] * width / frame.resized[1]))
    up = F.interpolate(grid[:, None].float(), size=(full_h, full_w), mode="bilinear", align_corners=False)
    return normalize_maps(up[:, 0, :height, :width])
