"""Video maps ``(T, H, W)``: one overlay per frame, as a frame strip or an animated GIF.

A video model's input is ``(N, C, T, H, W)`` and its maps are ``(N, T', H', W')`` (see
:mod:`camkit.ops`); pass one sample's map and, optionally, that sample's video. The map is
resized to the video (trilinear, in time too) and each frame is drawn with
:func:`~camkit.viz.overlay_mask`.

Example:
    >>> import torch
    >>> frames = video_frames(torch.rand(4, 7, 7), torch.rand(3, 8, 28, 28))
    >>> len(frames), frames[0].size
    (8, (28, 28))
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from camkit.ops import upsample
from camkit.viz.colormaps import ColormapLike
from camkit.viz.grid import check_size, montage
from camkit.viz.overlay import as_cpu_map, check_alpha, colorize, overlay_mask

__all__ = ["frame_strip", "save_gif", "video_frames"]

VideoLike = Tensor | np.ndarray[Any, Any] | Sequence[Image.Image]


def _video_images(video: VideoLike) -> list[Image.Image]:
    """One RGB image per frame from ``(C, T, H, W)`` (C = 1 or 3, any range) or a list of images."""
    if isinstance(video, (Tensor, np.ndarray)):
        tensor = torch.from_numpy(np.array(video)) if isinstance(video, np.ndarray) else video
        while tensor.ndim > 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 4 or tensor.shape[0] not in (1, 3) or tensor.numel() == 0 or tensor.is_complex():
            raise ValueError(
                f"video must be one sample of a video model's input, (C, T, H, W) with C = 1 or 3, got shape "
                f"{tuple(tensor.shape)}; for (T, H, W, C) frames pass video.permute(3, 0, 1, 2)"
            )
        values = tensor.detach().to("cpu", torch.float64)
        if not torch.isfinite(values).all():
            raise ValueError("video holds NaN or infinite values")
        low, span = values.min(), values.max() - values.min()
        scaled = ((values - low) / span if span > 0 else torch.zeros_like(values)) * 255
        frames = scaled.round().to(torch.uint8).permute(1, 2, 3, 0)  # (T, H, W, C)
        return [Image.fromarray(f.numpy()[..., 0] if f.shape[-1] == 1 else f.numpy()).convert("RGB") for f in frames]
    if isinstance(video, Sequence) and video and all(isinstance(f, Image.Image) for f in video):
        sizes = {f.size for f in video}
        if len(sizes) != 1:
            raise ValueError(f"video frames must all have one size, got {sorted(sizes)}")
        return [f.convert("RGB") for f in video]
    raise TypeError(
        f"video must be a (C, T, H, W) tensor or numpy array, or a list of PIL images (one per frame), "
        f"got {type(video).__name__}"
    )


def video_frames(
    cam: Tensor | np.ndarray[Any, Any],
    video: VideoLike | None = None,
    *,
    colormap: ColormapLike = "jet",
    alpha: float = 0.5,
    size: tuple[int, int] | None = None,
) -> list[Image.Image]:
    """One picture per frame of a video map: overlays on the video's frames, or the coloured map.

    With ``video``, the map is resized to the video's ``(T, H, W)`` (trilinear) and frame ``t`` is
    ``overlay_mask(frame_t, map_t, colormap, alpha)``. Without it, frame ``t`` is the map's frame
    coloured with the colormap, resized to ``size`` when given.

    Args:
        cam: one sample's map ``(T', H', W')`` in ``[0, 1]`` (leading singleton dims are dropped).
        video: that sample's video: ``(C, T, H, W)`` with C = 1 or 3 (the model input's layout, any
            range: min-max scaled to bytes), or a list of PIL images, one per frame.
        colormap: a colormap name or ``(K, 3)`` uint8 table.
        alpha: the weight of the video frame in each overlay, in ``[0, 1)``.
        size: ``(width, height)`` of the coloured frames without a video (default: the map's size).

    Returns:
        RGB images, one per video frame (or per map frame without a video).

    Raises:
        TypeError: for a map or video of a bad type.
        ValueError: for bad shapes or values.

    Example:
        >>> [f.size for f in video_frames(torch.rand(2, 4, 4), size=(16, 8))]
        [(16, 8), (16, 8)]
    """
    if not isinstance(cam, (Tensor, np.ndarray)):
        raise TypeError(f"cam must be a (T, H, W) tensor or numpy array, got {type(cam).__name__}")
    weight = check_alpha(alpha)
    volume = as_cpu_map(cam, "cam", ndim=3)
    if video is None:
        return [colorize(frame, colormap, size=size) for frame in volume]
    images = _video_images(video)
    shape = (len(images), images[0].height, images[0].width)
    resized = upsample(volume.unsqueeze(0), shape)[0].clamp(0.0, 1.0)
    return [overlay_mask(image, frame, colormap, weight) for image, frame in zip(images, resized, strict=True)]


def frame_strip(
    cam: Tensor | np.ndarray[Any, Any],
    video: VideoLike | None = None,
    *,
    num: int | None = None,
    columns: int | None = None,
    colormap: ColormapLike = "jet",
    alpha: float = 0.5,
    cell_size: int = 128,
    padding: int = 4,
) -> Image.Image:
    """A video map as a strip of frames side by side, each captioned with its index (``t=3``).

    Frame ``k`` of ``num`` is frame ``floor((k + 1/2) * T / num)`` (frames centred in equal parts
    of the clip); every frame when ``num`` is ``None`` or at least ``T``.

    Args:
        cam: one sample's map ``(T', H', W')`` in ``[0, 1]``.
        video: that sample's video (see :func:`video_frames`); without it the coloured map is drawn.
        num: how many frames to show (default: all).
        columns: frames per row (default: all in one row).
        colormap: a colormap name or ``(K, 3)`` uint8 table.
        alpha: the weight of the video frame in each overlay, in ``[0, 1)``.
        cell_size: the side of each frame's square cell, in pixels.
        padding: pixels between cells.

    Returns:
        The RGB image.

    Raises:
        TypeError: for a map or video of a bad type.
        ValueError: for bad shapes, values or sizes.

    Example:
        >>> frame_strip(torch.rand(6, 4, 4), num=3, cell_size=32).size  # 3 cells of 32 + 4 px padding
        (112, 54)
    """
    cell = check_size(cell_size, "cell_size", 8)
    pad = check_size(padding, "padding", 0)
    frames = video_frames(cam, video, colormap=colormap, alpha=alpha)
    count = len(frames) if num is None else min(check_size(num, "num", 1), len(frames))
    indices = [math.floor((k + 0.5) * len(frames) / count) for k in range(count)]
    pictures = [(f"t={t}", frames[t]) for t in indices]
    ncols = count if columns is None else min(check_size(columns, "columns", 1), count)
    return montage(pictures, ncols, cell, pad)


def save_gif(
    frames: Sequence[Image.Image], path: str | os.PathLike[str], *, duration: int = 100, loop: int = 0
) -> Path:
    """Write frames (e.g. from :func:`video_frames`) as an animated GIF.

    Args:
        frames: RGB images of one size, in order.
        path: the file to write (``.gif``).
        duration: milliseconds per frame.
        loop: how many times the animation repeats (0: forever).

    Returns:
        The path written.

    Raises:
        ValueError: for no frames, frames of different sizes, or a bad ``duration``/``loop``.
        TypeError: when a frame is not a PIL image.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     file = save_gif(video_frames(torch.rand(3, 4, 4), size=(8, 8)), f"{tmp}/map.gif")
        ...     Image.open(file).n_frames
        3
    """
    if isinstance(frames, Image.Image) or not isinstance(frames, Sequence) or not frames:
        raise ValueError("frames must be a non-empty list of PIL images, e.g. video_frames(cam, video)")
    for frame in frames:
        if not isinstance(frame, Image.Image):
            raise TypeError(f"every frame must be a PIL image, got {type(frame).__name__}")
    if len({frame.size for frame in frames}) != 1:
        raise ValueError(f"frames must all have one size, got {sorted({frame.size for frame in frames})}")
    delay = check_size(duration, "duration", 1)
    repeat = check_size(loop, "loop", 0)
    file = Path(path)
    rgb = [frame.convert("RGB") for frame in frames]
    rgb[0].save(file, format="GIF", save_all=True, append_images=rgb[1:], duration=delay, loop=repeat)
    return file
