"""Figures drawn with Pillow: methods side by side, slices of 3D maps, and strips of 1D maps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from camkit.ops import upsample
from camkit.viz._draw import BACKGROUND, INK, MUTED, centered_text, line_height, load_font, paste_fitted
from camkit.viz.colormaps import ColormapLike
from camkit.viz.overlay import MaskLike, as_cpu_map, check_alpha, check_image, colorize, overlay_mask

__all__ = ["cell_grid", "grid", "slices", "strip"]


def check_size(value: object, name: str, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_labels(labels: Sequence[str] | None, count: int, name: str) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str) or len(labels) != count or not all(isinstance(t, str) for t in labels):
        raise ValueError(f"{name} must be a sequence of {count} strings (one per row), got {labels!r}")
    return list(labels)


def cell_grid(
    cells: Sequence[Sequence[Image.Image]],
    headers: Sequence[str],
    *,
    row_titles: Sequence[str] | None = None,
    cell_size: int = 224,
    padding: int = 8,
) -> Image.Image:
    """Pictures laid out in rows of square cells under column headers, with optional rotated row titles.

    The layout of :func:`grid` (and of the boxes x methods figure of ``camkit explain --task
    detect``): a header line over each column, each picture scaled to fit its ``cell_size`` square
    and centred in it, ``padding`` pixels between cells, and with ``row_titles`` a title per row
    written upwards at its left. Text is drawn with Pillow's built-in font and shortened with "..."
    when it is wider than a cell.

    Args:
        cells: the rows, each a sequence of pictures (one per header; a shorter row leaves cells blank).
        headers: the column headers.
        row_titles: optional text per row.
        cell_size: each cell is a square of this many pixels.
        padding: pixels between cells.

    Returns:
        The RGB figure, ``left + padding + len(headers) * (cell_size + padding)`` pixels wide
        (``left`` is 0 without row titles, else the header line's height plus ``padding``).

    Raises:
        ValueError: for bad ``cell_size``/``padding``, a row with more pictures than headers, or
            ``row_titles`` that are not one string per row.

    Example:
        >>> from PIL import Image
        >>> cell_grid([[Image.new("RGB", (32, 16)), Image.new("L", (8, 8))]], ["image", "map"], cell_size=64).width
        152
    """
    cell = check_size(cell_size, "cell_size", 16)
    pad = check_size(padding, "padding", 0)
    titles = _check_labels(row_titles, len(cells), "row_titles")
    columns = list(headers)
    for i, row in enumerate(cells):
        if len(row) > len(columns):
            raise ValueError(f"cells[{i}] has {len(row)} pictures for {len(columns)} headers: give one per header")
    font = load_font(max(10, cell // 14))
    line = line_height(font)
    left = line + pad if titles else 0
    width = left + pad + len(columns) * (cell + pad)
    height = line + pad + len(cells) * (cell + pad)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(columns):
        centered_text(draw, (left + pad + j * (cell + pad), pad // 2, cell), name, font, INK)
    for i, row in enumerate(cells):
        top = line + pad + i * (cell + pad)
        for j, picture in enumerate(row):
            paste_fitted(canvas, picture, left + pad + j * (cell + pad), top, cell)
        if titles:
            title = Image.new("RGB", (cell, line), BACKGROUND)
            centered_text(ImageDraw.Draw(title), (0, 0, cell), titles[i], font, MUTED)
            canvas.paste(title.rotate(90, expand=True), (pad // 2, top))
    return canvas


def grid(
    images: Sequence[Image.Image],
    maps: Mapping[str, Sequence[MaskLike]],
    *,
    colormap: ColormapLike = "jet",
    alpha: float = 0.5,
    cell_size: int = 224,
    row_labels: Sequence[str] | None = None,
    original_label: str = "image",
    padding: int = 8,
) -> Image.Image:
    """A figure of several methods side by side: one row per image, one column per method.

    The first column shows the image itself, the others its :func:`~camkit.viz.overlay_mask`
    overlay with each method's map; column headers (and optional row labels) are drawn with
    Pillow's built-in font.

    Args:
        images: the images, one per row.
        maps: method name -> one map per image (``(H, W)`` in ``[0, 1]``, any size and device).
        colormap: a colormap name or ``(K, 3)`` uint8 table.
        alpha: the weight of the image in each overlay, in ``[0, 1)``.
        cell_size: each cell is a square of this many pixels; images are scaled to fit.
        row_labels: optional text per row (e.g. file names or predicted classes).
        original_label: the header of the image column.
        padding: pixels between cells.

    Returns:
        The RGB figure.

    Raises:
        TypeError: for an image that is not a PIL image or a map of a bad type.
        ValueError: for an empty ``images``, a method with the wrong number of maps, or bad
            ``cell_size``/``padding``/``row_labels``/``alpha``/map values.

    Example:
        >>> from PIL import Image
        >>> img = Image.new("RGB", (32, 32))
        >>> grid([img], {"gradcam": [torch.rand(7, 7)]}, cell_size=64).width  # 2 columns of 64 + 8 px padding
        152
    """
    if isinstance(images, Image.Image) or len(images) == 0:
        raise ValueError("images must be a non-empty sequence of PIL images (one per row)")
    rows = [check_image(image, f"images[{i}]") for i, image in enumerate(images)]
    if not isinstance(maps, Mapping):
        raise TypeError(f"maps must be a mapping of method name -> one map per image, got {type(maps).__name__}")
    for method, per_image in maps.items():
        if isinstance(per_image, (Tensor, np.ndarray)) and per_image.ndim == 2:
            raise ValueError(f"maps[{method!r}] must hold one map per image, got a single map")
        if len(per_image) != len(rows):
            raise ValueError(f"maps[{method!r}] has {len(per_image)} maps for {len(rows)} images: give one per image")
    weight = check_alpha(alpha)
    cell = check_size(cell_size, "cell_size", 16)
    pad = check_size(padding, "padding", 0)
    labels = _check_labels(row_labels, len(rows), "row_labels")

    columns = [original_label, *maps]
    cells = [
        [image.convert("RGB"), *(overlay_mask(image, per_image[i], colormap, weight) for per_image in maps.values())]
        for i, image in enumerate(rows)
    ]
    return cell_grid(cells, columns, row_titles=labels, cell_size=cell, padding=pad)


def _gray_volume(volume: Tensor | np.ndarray[Any, Any]) -> Tensor:
    """A ``(D, H, W)`` uint8 CPU volume, min-max scaled, from any real-valued volume."""
    tensor = torch.from_numpy(np.array(volume)) if isinstance(volume, np.ndarray) else volume
    if not isinstance(tensor, Tensor):
        raise TypeError(f"image must be a (D, H, W) tensor or numpy array, got {type(volume).__name__}")
    while tensor.ndim > 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.numel() == 0 or tensor.is_complex():
        raise ValueError(f"image must be a real (D, H, W) volume, got shape {tuple(tensor.shape)}")
    tensor = tensor.detach().to("cpu", torch.float64)
    if not torch.isfinite(tensor).all():
        raise ValueError("image holds NaN or infinite values")
    low, span = tensor.min(), tensor.max() - tensor.min()
    scaled = (tensor - low) / span if span > 0 else torch.zeros_like(tensor)
    return (scaled * 255).round().to(torch.uint8)


def montage(pictures: Sequence[tuple[str, Image.Image]], columns: int, cell: int, pad: int) -> Image.Image:
    """Captioned pictures laid out in ``columns`` columns of ``cell``-pixel cells with ``pad`` pixels between."""
    font = load_font(max(10, cell // 10))
    line = line_height(font)
    rows = math.ceil(len(pictures) / columns)
    canvas = Image.new("RGB", (pad + columns * (cell + pad), pad + rows * (cell + line + pad)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for k, (caption, picture) in enumerate(pictures):
        left, top = pad + (k % columns) * (cell + pad), pad + (k // columns) * (cell + line + pad)
        paste_fitted(canvas, picture, left, top, cell)
        centered_text(draw, (left, top + cell, cell), caption, font, MUTED)
    return canvas


def slices(
    volume: Tensor | np.ndarray[Any, Any],
    image: Tensor | np.ndarray[Any, Any] | None = None,
    *,
    num: int = 8,
    axis: int = 0,
    columns: int | None = None,
    colormap: ColormapLike = "jet",
    alpha: float = 0.5,
    cell_size: int = 128,
    padding: int = 4,
) -> Image.Image:
    """A montage of evenly spaced slices of a 3D map, overlaid on an image volume when given.

    Slice ``k`` of ``num`` is taken at index ``floor((k + 1/2) * D / num)`` along ``axis``, so the
    slices are centred in equal parts of the volume. With ``image``, the map is resized to the
    image volume (trilinear) and each slice is an :func:`~camkit.viz.overlay_mask` overlay on the
    min-max scaled grayscale image; without it, each slice is the coloured map.

    Args:
        volume: the map, ``(D, H, W)`` in ``[0, 1]`` (leading singleton dims are dropped).
        image: optional grayscale volume ``(D', H', W')`` of any range.
        num: how many slices (all of them when the volume has fewer).
        axis: the axis to slice along, 0, 1 or 2 (negative values count from the end).
        columns: slices per montage row (at most the number of slices); default ``max(4, ceil(sqrt(num)))``.
        colormap: a colormap name or ``(K, 3)`` uint8 table.
        alpha: the weight of the image in each overlay, in ``[0, 1)``.
        cell_size: the side of each slice's square cell, in pixels.
        padding: pixels between cells.

    Returns:
        The RGB montage, each slice captioned with its index (``d=12``).

    Raises:
        TypeError: for a volume or image of a bad type.
        ValueError: for bad shapes, values, or ``num``/``axis``/``columns``/``cell_size``.

    Example:
        >>> slices(torch.rand(16, 8, 8), num=4, cell_size=32).width  # 4 slices of 32 + 4 px padding
        148
    """
    count = check_size(num, "num", 1)
    if isinstance(axis, bool) or not isinstance(axis, int) or not -3 <= axis <= 2:
        raise ValueError(f"axis must be 0, 1 or 2 (or -3..-1), got {axis!r}")
    axis %= 3
    cell = check_size(cell_size, "cell_size", 8)
    pad = check_size(padding, "padding", 0)
    weight = check_alpha(alpha)
    if not isinstance(volume, (Tensor, np.ndarray)):
        raise TypeError(f"volume must be a (D, H, W) tensor or numpy array, got {type(volume).__name__}")
    cam = as_cpu_map(volume, "volume", ndim=3)
    gray = _gray_volume(image) if image is not None else None
    if gray is not None:
        cam = upsample(cam.unsqueeze(0), tuple(gray.shape))[0].clamp(0.0, 1.0)
        gray = gray.movedim(axis, 0)
    cam = cam.movedim(axis, 0)
    depth = cam.shape[0]
    count = min(count, depth)
    indices = [math.floor((k + 0.5) * depth / count) for k in range(count)]
    pictures = []
    for index in indices:
        if gray is None:
            picture = colorize(cam[index], colormap)
        else:
            picture = overlay_mask(Image.fromarray(gray[index].numpy()), cam[index], colormap, weight)
        pictures.append((f"{'dhw'[axis]}={index}", picture))
    ncols = max(4, math.ceil(math.sqrt(len(pictures)))) if columns is None else check_size(columns, "columns", 1)
    return montage(pictures, min(ncols, len(pictures)), cell, pad)


#: Line colours of a signal's channels in the panel above its bar (channel 0 in the text colour).
_CHANNEL_COLORS = (INK, (31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


def _signal_rows(signals: Tensor | np.ndarray[Any, Any], rows: int) -> Tensor:
    """Signals as a float64 CPU ``(rows, C, L')`` tensor, from ``(N, L')``, ``(N, C, L')``, ``(L',)`` or ``(C, L')``."""
    if not isinstance(signals, (Tensor, np.ndarray)):
        raise TypeError(f"signals must be an (N, L) or (N, C, L) tensor or numpy array, got {type(signals).__name__}")
    tensor = torch.from_numpy(np.array(signals)) if isinstance(signals, np.ndarray) else signals
    lines = tensor.detach().to("cpu", torch.float64)
    if lines.ndim == 1 or (lines.ndim == 2 and rows == 1 and lines.shape[0] != 1):
        lines = lines.reshape(1, -1, lines.shape[-1])  # one row: (L',) or its channels (C, L')
    elif lines.ndim == 2:
        lines = lines.unsqueeze(1)
    if lines.ndim != 3 or lines.shape[0] != rows or lines.shape[2] < 2 or not torch.isfinite(lines).all():
        raise ValueError(
            f"signals must be finite, (N, L') or (N, C, L') with N = {rows} rows and L' >= 2, got {tuple(tensor.shape)}"
        )
    return lines


def _draw_signal(draw: ImageDraw.ImageDraw, channels: Tensor, box: tuple[int, int, int, int], panel: bool) -> None:
    """Draw a row's channels ``(C, L')`` as lines across ``box`` (left, top, width, height), scaled jointly."""
    left, top, width, height = box
    span = (channels.max() - channels.min()).item()
    levels = (channels - channels.min()) / span if span > 0 else torch.full_like(channels, 0.5)
    xs = torch.linspace(left, left + width - 1, channels.shape[1]).tolist()
    for c, level in enumerate(levels):
        points = list(zip(xs, (top + (1 - level) * (height - 1)).tolist(), strict=True))
        if panel:
            draw.line(points, fill=_CHANNEL_COLORS[c % len(_CHANNEL_COLORS)], width=2)
        else:  # a dark halo keeps the white line visible on any colour of the bar
            draw.line(points, fill=INK, width=3)
            draw.line(points, fill=BACKGROUND, width=1)


def strip(
    maps: Tensor | np.ndarray[Any, Any],
    signals: Tensor | np.ndarray[Any, Any] | None = None,
    *,
    colormap: ColormapLike = "jet",
    width: int = 512,
    row_height: int = 24,
    labels: Sequence[str] | None = None,
    padding: int = 4,
    signal_height: int = 0,
) -> Image.Image:
    """Heat bars of 1D maps (sequences, time series, audio), one per row, with their signals.

    With ``signal_height=0`` each signal is drawn as a line over its bar. With a positive
    ``signal_height`` it is drawn in a white panel of that height above its bar, so the map is a
    heat band right under its signal (the usual figure for time series and audio); the channels of
    an ``(N, C, L')`` signal are drawn as lines of different colours, scaled together.

    Args:
        maps: ``(N, L)`` or ``(L,)`` maps in ``[0, 1]`` (e.g. an extractor's ``(N, L)`` output).
        signals: optional signals of any range, drawn as lines: ``(N, L')``, ``(N, C, L')`` (the
            model input of a 1D CNN), or for one row ``(L',)`` or ``(C, L')``; ``L'`` may differ
            from ``L`` (both span the same width).
        colormap: a colormap name or ``(K, 3)`` uint8 table.
        width: the bar width in pixels (maps are resized bicubically to it; none when equal to ``L``).
        row_height: the bar height in pixels.
        labels: optional text per row, drawn left of the bars.
        padding: pixels around the bars.
        signal_height: height in pixels of the signal panel above each bar (0: lines over the bars).

    Returns:
        The RGB image, ``width + 2 * padding`` (+ the labels' width) by
        ``padding + N * (signal_height + row_height + padding)`` pixels.

    Raises:
        TypeError: for maps or signals of a bad type.
        ValueError: for bad shapes or values, or mismatched row counts.

    Example:
        >>> strip(torch.rand(3, 100), width=64, row_height=8).size
        (72, 40)
        >>> strip(torch.rand(2, 100), torch.randn(2, 3, 400), width=64, row_height=8, signal_height=20).size
        (72, 68)
    """
    if not isinstance(maps, (Tensor, np.ndarray)):
        raise TypeError(f"maps must be an (N, L) tensor or numpy array, got {type(maps).__name__}")
    bars = as_cpu_map(maps.reshape(1, -1) if maps.ndim == 1 else maps, "maps", ndim=2)
    bar_width, bar_height = check_size(width, "width", 2), check_size(row_height, "row_height", 2)
    pad = check_size(padding, "padding", 0)
    panel = check_size(signal_height, "signal_height", 0)
    if panel and signals is None:
        raise ValueError(f"signal_height={panel} draws the signals above the bars: pass signals=, or signal_height=0")
    lines = None if signals is None else _signal_rows(signals, bars.shape[0])
    names = _check_labels(labels, bars.shape[0], "labels")
    font = load_font(max(10, min(bar_height + panel - 2, 14)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = pad + (int(max(probe.textlength(name, font=font) for name in names)) + pad if names else 0)
    step = panel + bar_height + pad
    canvas = Image.new("RGB", (left + bar_width + pad, pad + bars.shape[0] * step), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i in range(bars.shape[0]):
        top = pad + i * step
        canvas.paste(colorize(bars[i : i + 1], colormap, size=(bar_width, bar_height)), (left, top + panel))
        if names:
            draw.text((pad, top + (panel + bar_height - line_height(font)) / 2), names[i], fill=INK, font=font)
        if lines is not None and panel:
            draw.rectangle((left, top, left + bar_width - 1, top + panel - 1), outline=(222, 226, 230))
            _draw_signal(draw, lines[i], (left, top + 1, bar_width, panel - 2), panel=True)
        elif lines is not None:
            _draw_signal(draw, lines[i], (left, top, bar_width, bar_height), panel=False)
    return canvas
