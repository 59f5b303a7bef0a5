"""``torchcam.utils``: :func:`overlay_mask` with TorchCAM 0.5's signature, checks and pixels.

camkit's own :func:`camkit.viz.overlay_mask` reads every mask as values in ``[0, 1]`` (an ``L``
mask as ``value / 255``). TorchCAM's squares the mask's raw values in the mask's own dtype and
colours them with matplotlib's indexing, and this door keeps that, so its overlays equal
TorchCAM's pixel for pixel:

* a float mask (mode ``F``, as ``to_pil_image(cam, mode="F")`` gives) is squared and drawn with
  row ``floor(x^2 * K)`` of the colour table (``K - 1`` at 1; the end colours outside ``[0, 1]``);
* an integer mask (mode ``L``, ``I``, ...) is squared in its own integer type (``L``'s bytes wrap
  around modulo 256, as in TorchCAM) and the result indexes the table directly;
* the image is blended with Pillow's ``Image.blend`` for ``L``/``RGB`` images, and otherwise (a
  one- or three-band image of another mode, a NaN ``alpha``) mixed from its raw band values and
  truncated to bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image as _PIL
from PIL.Image import Image

from camkit.viz.colormaps import get_colormap

__all__ = ["overlay_mask"]


def _colours(values: np.ndarray[Any, Any], colormap: Any) -> np.ndarray[Any, Any]:
    """``(H, W, 3)`` uint8 colours of raw mask values, with matplotlib's indexing rules."""
    if not isinstance(colormap, str) and callable(colormap) and hasattr(colormap, "N"):
        colours: np.ndarray[Any, Any] = np.asarray(colormap(values, bytes=True))[..., :3]
        return colours  # a matplotlib Colormap: its own call
    table = get_colormap(colormap).numpy()
    size = table.shape[0]
    index = values.copy()
    bad = np.zeros(index.shape, dtype=bool)
    if index.dtype.kind == "f":
        index *= size  # in the mask's float type, as matplotlib does
        index[index == size] = size - 1
        bad = np.isnan(index)
    under, over = index < 0, index >= size
    with np.errstate(invalid="ignore"):
        rows = index.astype(np.int64)
    rows[under] = 0
    rows[over] = size - 1
    rows[bad] = 0
    out: np.ndarray[Any, Any] = table[rows]
    out[bad] = 0  # matplotlib's "bad" colour (transparent black) for NaN
    return out


def overlay_mask(img: Image, mask: Image, colormap: Any = "jet", alpha: float = 0.7) -> Image:
    r"""Overlay a colour-mapped mask on an image, TorchCAM's call and output.

    ``alpha \cdot img + (1 - alpha) \cdot cmap(mask^2)``, the mask resized bicubically to the
    image (see the module notes for how raw mask values are coloured).

    Args:
        img: the background image, one band (``L``, ``P``, ...) or three (``RGB``, ``HSV``, ...).
        mask: the map, a one-band PIL image: mode ``F`` with values in ``[0, 1]`` (what
            ``to_pil_image(cam, mode="F")`` gives), or an integer mode (raw values).
        colormap: a colormap name (``"jet"``, ...; names other than camkit's built-in ones need
            matplotlib) or a matplotlib ``Colormap``.
        alpha: the weight of the image, a float in ``[0, 1)``.

    Returns:
        The RGB overlay, of the image's size.

    Raises:
        TypeError: when ``img`` or ``mask`` is not a PIL image.
        ValueError: when ``alpha`` is not a float in ``[0, 1)``, ``img`` has neither one nor three
            bands, ``mask`` has more than one band, or ``colormap`` is unknown.

    Example:
        >>> from PIL import Image as PILImage
        >>> img = PILImage.new("RGB", (4, 4), (255, 255, 255))
        >>> overlay_mask(img, PILImage.new("F", (2, 2)), alpha=0.5).getpixel((0, 0))
        (127, 127, 191)
    """
    if not isinstance(img, Image) or not isinstance(mask, Image):
        raise TypeError(
            "img and mask arguments need to be PIL.Image images (for tensor masks use camkit.viz.overlay_mask, "
            "or torchvision's to_pil_image(cam, mode='F'))"
        )
    if not isinstance(alpha, float) or alpha < 0 or alpha >= 1:
        raise ValueError(
            f"alpha argument is expected to be of type float between 0 and 1 (0 <= alpha < 1, e.g. 0.7), got {alpha!r}"
        )
    if len(img.getbands()) not in {1, 3}:
        raise ValueError(
            f"img argument needs to be a grayscale or RGB image, got mode {img.mode!r}: use img.convert('RGB')"
        )
    if len(mask.getbands()) != 1:
        raise ValueError(
            f"mask needs to be a one-band (grayscale) image, got mode {mask.mode!r}: pass the map as "
            "to_pil_image(cam, mode='F')"
        )
    resized = mask.resize(img.size, resample=_PIL.Resampling.BICUBIC)
    values = np.asarray(resized)
    heatmap = _colours(values**2, colormap)
    if img.mode in {"L", "RGB"} and np.isfinite(alpha):
        return _PIL.blend(_PIL.fromarray(heatmap), img.convert("RGB"), alpha)
    background = np.asarray(img)
    if background.ndim == 2:
        background = np.repeat(background[..., None], 3, axis=-1)
    return _PIL.fromarray((alpha * background + (1 - alpha) * heatmap).astype(np.uint8))
