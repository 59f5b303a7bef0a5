"""The figure of a model-randomisation check, drawn with Pillow: similarity curves and the maps in a strip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from camkit.viz import grid

if TYPE_CHECKING:
    from camkit.sanity._checks import ModelRandomization

_INK = (33, 37, 41)
_MUTED = (150, 155, 160)
_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
]
_TITLES = {"spearman": "Spearman rank correlation", "ssim": "SSIM", "hog_pearson": "HOG Pearson correlation"}


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _image(x: Tensor) -> Image.Image:
    """A preprocessed ``(C, H, W)`` input shown by min-max scaling (the normalization is not known here)."""
    pixels = x.detach().float()
    pixels = pixels[:3] if pixels.shape[0] >= 3 else pixels[:1].expand(3, -1, -1)
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / (high - low) if high > low else torch.zeros_like(pixels)
    array = (scaled.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def _chart(
    title: str, curves: Sequence[tuple[str, Tensor]], labels: Sequence[str], size: tuple[int, int]
) -> Image.Image:
    """One line chart: similarity (y) after each randomisation step (x: the trained model, then the layers)."""
    width, height = size
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    low = min(0.0, *(float(c.min()) for _, c in curves))
    low = -1.0 if low < -0.5 else -0.5 if low < 0 else 0.0
    left, top, right, bottom = 34, 20, width - 36, height - 34
    draw.text((left, 4), title, fill=_INK, font=font)

    def y_of(value: float) -> float:
        return bottom - (value - low) / (1.0 - low) * (bottom - top)

    steps = len(labels)

    def x_of(i: int) -> float:
        return left + i * (right - left) / max(steps - 1, 1)

    for tick in np.arange(low, 1.0001, 0.5):
        y = y_of(float(tick))
        draw.line((left, y, right, y), fill=(222, 226, 230) if tick else _MUTED)
        draw.text((4, y - 6), f"{tick:+.1f}" if tick else " 0", fill=_INK, font=font)
    draw.line((left, top, left, bottom), fill=_MUTED)
    for i in sorted({0, steps - 1, *range(0, steps, max(1, steps // 4))}):
        text = labels[i] if len(labels[i]) <= 12 else labels[i][:11] + "…"
        draw.line((x_of(i), bottom, x_of(i), bottom + 3), fill=_MUTED)
        draw.text((x_of(i) - draw.textlength(text, font=font) / 2, bottom + 5), text, fill=_INK, font=font)
    draw.text((left, bottom + 19), "randomised layers, top first ->", fill=_MUTED, font=font)
    for k, (_, values) in enumerate(curves):
        colour = _PALETTE[k % len(_PALETTE)]
        points = [(x_of(i), y_of(float(v))) for i, v in enumerate(values.tolist())]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    return canvas


def randomization_figure(result: ModelRandomization, sample: int, columns: int, cell_size: int) -> Image.Image:
    """Similarity against the randomised layers (one chart per measure, a legend), then one image's maps.

    The strip has one row per method: the input, the trained model's map, and the maps after up to
    ``columns`` randomisation steps (evenly spaced, the last one always shown).
    """
    if result.maps.shape[0] != len(result.layers) + 1:
        raise ValueError("this result kept only the trained model's maps: run the check with keep_maps=True")
    count = result.images.shape[0]
    if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample < count:
        raise ValueError(f"sample must be an image index in 0..{count - 1}, got {sample!r}")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    labels = ["trained", *result.layers]
    charts = []
    for measure, values in result.similarity.items():
        curves = []
        for j, name in enumerate(result.methods):
            mean = values[..., j].mean(dim=1)
            curves.append((name, torch.cat([torch.ones(1), mean])))  # the trained model's map is itself
        charts.append(_chart(_TITLES.get(measure, measure), curves, labels, (340, 220)))
    font = _font(12)
    legend_height = 22
    steps = len(result.layers)
    shown = sorted({round(i * (steps - 1) / max(columns - 1, 1)) for i in range(min(columns, steps))} | {steps - 1})
    image = _image(result.images[sample])
    maps = {"trained": [result.maps[0, sample, j] for j in range(len(result.methods))]}
    for i in shown:
        maps[f"{i + 1}: {result.layers[i]}"] = [result.maps[i + 1, sample, j] for j in range(len(result.methods))]
    strip = grid(
        [image] * len(result.methods), maps, cell_size=cell_size, row_labels=result.methods, original_label="input"
    )
    chart_width = sum(c.width for c in charts)
    width = max(chart_width, strip.width)
    canvas = Image.new("RGB", (width, charts[0].height + legend_height + strip.height), (255, 255, 255))
    x = 0
    for chart in charts:
        canvas.paste(chart, (x, 0))
        x += chart.width
    draw = ImageDraw.Draw(canvas)
    x, y = 34, charts[0].height + 4
    for k, name in enumerate(result.methods):
        passed = result.passed[name]
        draw.rectangle((x, y + 3, x + 10, y + 13), fill=_PALETTE[k % len(_PALETTE)])
        text = f"{name} ({'pass' if passed else 'FAIL'})"
        draw.text((x + 14, y), text, fill=_INK, font=font)
        x += 14 + int(draw.textlength(text, font=font)) + 16
    canvas.paste(strip, (0, charts[0].height + legend_height))
    return canvas
