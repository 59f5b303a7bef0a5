"""Heatmap overlays with TorchCAM's ``overlay_mask`` signature, drawn with Pillow and a colour table.

Maps stay torch tensors (on any device) until this drawing boundary, where they become Pillow
float images on the CPU.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, TypeAlias

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from camkit.viz.colormaps import ColormapLike, apply_colormap

__all__ = ["MaskLike", "colorize", "heat_layer", "overlay_mask", "to_mask_image"]

MaskLike: TypeAlias = "Image.Image | Tensor | np.ndarray[Any, Any]"
"""A map: a Pillow image (mode ``F``, ``L`` or ``1``) or a ``(H, W)`` tensor/array in ``[0, 1]``."""

# Image modes that Pillow converts to RGB (alpha, if any, is dropped).
_IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
_MASK_MODES = ("F", "L", "1")
# Values this far outside [0, 1] are rounding noise, clamped silently; farther is an error.
_RANGE_TOLERANCE = 1e-4


def as_cpu_map(mask: Tensor | np.ndarray[Any, Any], name: str, ndim: int) -> Tensor:
    """A float32 CPU copy of a map, leading singleton dims dropped down to ``ndim`` dims, in [0, 1].

    uint8 maps are read as bytes (``/ 255``); bool maps as 0/1.
    """
    tensor = torch.from_numpy(np.array(mask)) if isinstance(mask, np.ndarray) else mask
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif tensor.dtype == torch.bool:
        tensor = tensor.float()
    elif not tensor.is_floating_point():
        raise TypeError(f"{name} must hold floats in [0, 1] (or bool/uint8), got dtype {tensor.dtype}")
    while tensor.ndim > ndim and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != ndim or tensor.numel() == 0:
        expected = {1: "(L,)", 2: "(H, W)", 3: "(D, H, W)"}.get(ndim, f"{ndim} dims")
        raise ValueError(f"{name} must have shape {expected}, got {tuple(mask.shape)}")
    tensor = tensor.detach().to("cpu", torch.float32)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} holds NaN or infinite values: pass a finite map in [0, 1]")
    low, high = tensor.min().item(), tensor.max().item()
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"{name} values must lie in [0, 1], got [{low:.4g}, {high:.4g}]: normalize the map first "
            "(e.g. extractor(..., normalized=True) or camkit.ops.normalize)"
        )
    return tensor.clamp(0.0, 1.0)


def to_mask_image(mask: MaskLike, name: str = "mask") -> Image.Image:
    """Convert a map to a Pillow float image (mode ``F``) with values in ``[0, 1]``.

    Args:
        mask: a Pillow image of mode ``F`` (values in ``[0, 1]``), ``L`` (bytes, read as
            ``value / 255``) or ``1``; or a ``(H, W)`` tensor (any device) or array in ``[0, 1]``
            (leading singleton dims, as in ``(1, H, W)``, are dropped).
        name: the argument name used in error messages.

    Returns:
        A mode ``F`` image of the map's size.

    Raises:
        TypeError: for another type, or an integer tensor other than uint8.
        ValueError: for another image mode or shape, non-finite values, or values outside [0, 1].

    Example:
        >>> to_mask_image(torch.tensor([[0.0, 1.0]])).size
        (2, 1)
    """
    if isinstance(mask, Image.Image):
        if mask.mode not in _MASK_MODES:
            raise ValueError(f"{name} image mode must be one of {', '.join(_MASK_MODES)}, got {mask.mode!r}")
        array = np.array(mask.convert("F"), dtype=np.float32)
        if mask.mode == "L":
            array = array / np.float32(255.0)
        elif mask.mode == "1":
            array = np.minimum(array, np.float32(1.0))
        mask = torch.from_numpy(array)
    if not isinstance(mask, (Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a PIL image, a torch tensor or a numpy array, got {type(mask).__name__}")
    return Image.fromarray(as_cpu_map(mask, name, ndim=2).numpy())


def check_image(img: object, name: str = "img") -> Image.Image:
    """``img`` if it is a PIL image, else a ``TypeError`` naming ``name``."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"{name} must be a PIL.Image.Image, got {type(img).__name__}")
    if img.mode not in _IMAGE_MODES:
        raise ValueError(f"{name} mode must be one of {', '.join(_IMAGE_MODES)}, got {img.mode!r}")
    return img


def check_alpha(alpha: object) -> float:
    """``alpha`` as a float in [0, 1), else a ``TypeError``/``ValueError`` that says so."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise TypeError(f"alpha must be a float in [0, 1), got {alpha!r} ({type(alpha).__name__})")
    value = float(alpha)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"alpha must be a float in [0, 1) (the weight of the image), got {alpha!r}")
    return value


def _resized_map(mask: MaskLike, size: tuple[int, int], name: str) -> Tensor:
    """The map as a CPU float tensor ``(H, W)`` of ``size`` (width, height), resized bicubically."""
    image = to_mask_image(mask, name)
    if image.size != size:
        image = image.resize(size, resample=Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(image, dtype=np.float32))


def colorize(mask: MaskLike, colormap: ColormapLike = "jet", size: tuple[int, int] | None = None) -> Image.Image:
    """Draw a map as an RGB heatmap (value ``x`` gets the colour of ``x``, no blending).

    Args:
        mask: a map, as accepted by :func:`to_mask_image`.
        colormap: a name from :func:`camkit.viz.list_colormaps` or a ``(K, 3)`` uint8 table.
        size: output ``(width, height)``; the map is resized bicubically. Default: the map's size.

    Returns:
        An RGB image.

    Raises:
        TypeError: for a bad ``mask`` or ``colormap`` type.
        ValueError: for a bad ``mask`` shape/range or an unknown ``colormap``.

    Example:
        >>> colorize(torch.tensor([[0.0, 1.0]]), "gray").getpixel((1, 0))
        (255, 255, 255)
    """
    image = to_mask_image(mask)
    values = _resized_map(image, size or image.size, "mask")
    return Image.fromarray(apply_colormap(values, colormap).numpy())


def overlay_mask(img: Image.Image, mask: MaskLike, colormap: ColormapLike = "jet", alpha: float = 0.7) -> Image.Image:
    r"""Overlay a colour-mapped mask on an image, as TorchCAM's ``torchcam.utils.overlay_mask``.

    The mask is resized to the image with bicubic interpolation, **squared** (TorchCAM's
    convention, which tones down weak activations), coloured with the colormap and blended:

    .. math:: \text{out} = \alpha \cdot \text{img} + (1 - \alpha) \cdot \text{cmap}(\text{mask}^2)

    rounded down to bytes (Pillow's ``Image.blend``). With the same inputs the result equals
    TorchCAM's pixel for pixel.

    Args:
        img: the background image (grayscale, RGB, or any mode Pillow converts to RGB; alpha
            channels are dropped).
        mask: the map: a Pillow image of mode ``F`` (as ``to_pil_image(cam, mode="F")`` gives),
            ``L`` or ``1``, or a ``(H, W)`` tensor (any device) or numpy array in ``[0, 1]``;
            any size.
        colormap: a name from :func:`camkit.viz.list_colormaps` (``"jet"`` and ``"gray"`` are
            built in; others such as ``"viridis"`` need matplotlib), or a ``(K, 3)`` uint8 table.
        alpha: the weight of the image, in ``[0, 1)``.

    Returns:
        The RGB overlay, of the image's size.

    Raises:
        TypeError: when ``img`` is not a PIL image, or ``mask``/``alpha``/``colormap`` has a bad type.
        ValueError: for ``alpha`` outside ``[0, 1)``, an unsupported image mode, or a mask of bad
            shape, non-finite or outside ``[0, 1]``.

    Example:
        >>> from PIL import Image
        >>> img = Image.new("RGB", (4, 4), (255, 255, 255))
        >>> overlay_mask(img, torch.zeros(2, 2), alpha=0.5).getpixel((0, 0))
        (127, 127, 191)
    """
    img = check_image(img)
    weight = check_alpha(alpha)
    return Image.blend(heat_layer(mask, img.size, colormap), img.convert("RGB"), weight)


def heat_layer(
    mask: MaskLike, size: tuple[int, int], colormap: ColormapLike = "jet", name: str = "mask"
) -> Image.Image:
    """The coloured layer that :func:`overlay_mask` blends over the image: the squared map, resized bicubically.

    Drawn over the image with opacity ``1 - alpha`` (as the report and the viewer do) it gives
    ``overlay_mask(img, mask, colormap, alpha)``.

    Args:
        mask: a map, as :func:`overlay_mask` takes it.
        size: ``(width, height)`` of the layer (the image's size).
        colormap: a colormap name or ``(K, 3)`` uint8 table.
        name: the map's name in error messages.

    Returns:
        An RGB image of ``size``.

    Example:
        >>> heat_layer(torch.zeros(2, 2), (4, 4)).getpixel((0, 0))
        (0, 0, 127)
    """
    values = _resized_map(mask, size, name)
    return Image.fromarray(apply_colormap(values.square(), colormap).numpy())
