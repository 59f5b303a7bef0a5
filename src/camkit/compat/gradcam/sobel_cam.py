"""pytorch-grad-cam's ``sobel_cam``: an edge map as a baseline "explanation", without OpenCV."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["sobel_cam"]


def sobel_cam(img: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of an RGB image: ``0.5 |d/dx| + 0.5 |d/dy|`` of its gray levels.

    Follows OpenCV's pipeline of pytorch-grad-cam's function: ``RGB2GRAY`` (BT.601 weights), 3x3
    Sobel with reflect-101 borders, absolute values saturated to uint8, blended with weights 0.5.
    OpenCV's fixed-point gray conversion of uint8 images is emulated (exact for uint8 input).

    Args:
        img: RGB image ``(H, W, 3)``, uint8 (or float).

    Returns:
        ``(H, W)`` uint8 edge map.

    Example:
        >>> img = np.zeros((4, 4, 3), np.uint8)
        >>> img[:, 2:] = 255
        >>> sobel_cam(img)[0].tolist()
        [0, 128, 128, 0]
    """
    array = np.asarray(img)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"img must be an RGB image (H, W, 3), got shape {array.shape}")
    if array.dtype == np.uint8:
        # OpenCV's RGB2GRAY for 8-bit: fixed point with 15 fractional bits, rounded.
        weights = np.array([9798, 19235, 3735], dtype=np.int64)
        gray_int = (array.astype(np.int64) @ weights + (1 << 14)) >> 15
        gray = torch.from_numpy(gray_int.astype(np.float64))
    else:
        rgb = torch.from_numpy(array.astype(np.float64))
        gray = rgb @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    padded = F.pad(gray[None, None], (1, 1, 1, 1), mode="reflect")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    kernels = torch.stack([kx, kx.T])[:, None]
    grads = F.conv2d(padded, kernels)[0]
    # convertScaleAbs: round half to even, saturate to uint8
    absolute = torch.round(grads.abs()).clamp(0, 255)
    blended = torch.round(0.5 * absolute[0] + 0.5 * absolute[1]).clamp(0, 255)
    out: np.ndarray = blended.numpy().astype(np.uint8)
    return out
