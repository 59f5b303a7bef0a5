"""Drawing pieces shared by camkit's Pillow figures: the built-in font, fitted text, pictures fitted to a square.

Internal to camkit: :func:`camkit.viz.grid.cell_grid` (column headers, square cells, row titles)
is the public layout built from them.

Example:
    >>> from PIL import Image, ImageDraw
    >>> canvas = Image.new("RGB", (64, 32), BACKGROUND)
    >>> centered_text(ImageDraw.Draw(canvas), (0, 0, 64), "a long header text", load_font(10), INK)
    >>> line_height(load_font(10)) > 0
    True
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

from PIL import Image, ImageDraw, ImageFont, ImageOps

__all__ = [
    "BACKGROUND",
    "INK",
    "MUTED",
    "Font",
    "centered_text",
    "fitted_text",
    "line_height",
    "load_font",
    "paste_fitted",
]

Font: TypeAlias = "ImageFont.FreeTypeFont | ImageFont.ImageFont"
#: the figures' colours: the canvas, headers and titles, secondary text
BACKGROUND = (255, 255, 255)
INK = (33, 37, 41)
MUTED = (108, 117, 125)


def load_font(size: int) -> Font:
    """Pillow's built-in font at ``size`` pixels (a fixed-size bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def line_height(font: Font) -> int:
    """The height in pixels of one line of ``font``, with 2 pixels of spacing."""
    bottom = font.getbbox("Ag")[3]
    return math.ceil(bottom) + 2


def fitted_text(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> str:
    """``text``, shortened with "..." until it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def centered_text(draw: ImageDraw.ImageDraw, box: tuple[int, int, int], text: str, font: Font, fill: Any) -> None:
    """Draw ``text`` centred in the span ``(left, top, width)``."""
    left, top, width = box
    text = fitted_text(draw, text, font, width)
    draw.text((left + (width - draw.textlength(text, font=font)) / 2, top), text, fill=fill, font=font)


def paste_fitted(canvas: Image.Image, image: Image.Image, left: int, top: int, size: int) -> None:
    """Paste ``image`` scaled to fit a ``size`` x ``size`` box, centred in it."""
    fitted = ImageOps.contain(image, (size, size), method=Image.Resampling.LANCZOS)
    canvas.paste(fitted, (left + (size - fitted.width) // 2, top + (size - fitted.height) // 2))
