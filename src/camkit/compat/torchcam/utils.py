"""``torchcam.utils``: :func:`overlay_mask` with TorchCAM's signature, over :func:`camkit.viz.overlay_mask`."""

from __future__ import annotations

from typing import Any

from PIL.Image import Image

from camkit.viz import overlay_mask as _overlay_mask

__all__ = ["overlay_mask"]


def overlay_mask(img: Image, mask: Image, colormap: Any = "jet", alpha: float = 0.7) -> Image:
    r"""Overlay a colour-mapped mask on an image, TorchCAM's call.

    ``alpha \cdot img + (1 - alpha) \cdot cmap(mask^2)``, the mask resized bicubically to the image
    (see :func:`camkit.viz.overlay_mask`, which also takes tensors and arrays as masks).

    Args:
        img: the background image (grayscale or RGB).
        mask: the map, a PIL image in grayscale (mode ``F`` with values in ``[0, 1]``, or ``L``).
        colormap: a colormap name (``"jet"``, ...), or a matplotlib ``Colormap`` when matplotlib
            is installed.
        alpha: the weight of the image, a float in ``[0, 1)``.

    Returns:
        The RGB overlay, of the image's size.

    Raises:
        TypeError: when ``img`` or ``mask`` is not a PIL image.
        ValueError: when ``alpha`` is not a float in ``[0, 1)`` or ``img`` is not grayscale/RGB.

    Example:
        >>> from PIL import Image as PILImage
        >>> img = PILImage.new("RGB", (4, 4), (255, 255, 255))
        >>> overlay_mask(img, PILImage.new("F", (2, 2)), alpha=0.5).getpixel((0, 0))
        (127, 127, 191)
    """
    if not isinstance(img, Image) or not isinstance(mask, Image):
        raise TypeError("img and mask must be PIL images (for tensor masks use camkit.viz.overlay_mask)")
    if not isinstance(alpha, float) or not 0 <= alpha < 1:
        raise ValueError(f"alpha must be a float in [0, 1) (e.g. 0.7), got {alpha!r}")
    if len(img.getbands()) not in {1, 3}:
        raise ValueError(f"img must be a grayscale or RGB image, got mode {img.mode!r}: use img.convert('RGB')")
    if not isinstance(colormap, str) and hasattr(colormap, "name") and callable(colormap):
        return _overlay_mask(img, mask, _table(colormap), alpha)
    return _overlay_mask(img, mask, colormap, alpha)


def _table(colormap: Any) -> Any:
    """A matplotlib ``Colormap`` as the ``(N, 3)`` uint8 table camkit takes."""
    import numpy as np

    return np.asarray(colormap(np.arange(colormap.N), bytes=True))[:, :3]  # integers index the table
