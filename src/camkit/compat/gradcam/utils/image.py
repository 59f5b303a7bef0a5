"""pytorch-grad-cam's image helpers (``pytorch_grad_cam.utils.image``) without OpenCV.

The JET colormap is built here as OpenCV's ``COLORMAP_JET`` lookup table (piecewise linear, equal
to ``cv2.applyColorMap`` within 1 per channel), so overlays look the same without the cv2
dependency. Resizing uses torch's bilinear interpolation (cv2's ``INTER_LINEAR`` for 2-D maps,
pytorch-grad-cam uses cubic ``scipy.ndimage.zoom`` for 3-D volumes; camkit: trilinear).
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from camkit import ops

__all__ = [
    "JET",
    "concept_colors",
    "create_labels_legend",
    "deprocess_image",
    "jet_table",
    "preprocess_image",
    "scale_accross_batch_and_channels",
    "scale_cam_image",
    "show_cam_on_image",
    "show_factorization_on_image",
]

#: OpenCV's id of the JET colormap (``cv2.COLORMAP_JET``), the default of :func:`show_cam_on_image`.
JET = 2


@lru_cache(maxsize=1)
def _jet() -> np.ndarray:
    value = np.arange(256, dtype=np.float64) / 255.0
    # Each channel is a trapezoid of slope 4: B peaks on [1/8, 3/8], G on [3/8, 5/8], R on [5/8, 7/8].
    channels = [np.clip(1.5 - np.abs(4.0 * value - centre), 0.0, 1.0) for centre in (1.0, 2.0, 3.0)]
    table = np.rint(np.stack(channels, axis=1) * 255.0).astype(np.uint8)
    table.setflags(write=False)
    return table


def jet_table() -> np.ndarray:
    """OpenCV's JET colormap as a ``(256, 3)`` uint8 lookup table in **BGR** order (as cv2 uses).

    Returns:
        A read-only array: row ``i`` is the color of gray level ``i``.

    Example:
        >>> jet_table()[[0, 255]].tolist()
        [[128, 0, 0], [0, 0, 128]]
    """
    return _jet()


def _lookup_table(colormap: Any) -> np.ndarray:
    if isinstance(colormap, str) and colormap.lower() == "jet":
        return _jet()
    if isinstance(colormap, (int, np.integer)) and not isinstance(colormap, bool):
        if int(colormap) == JET:
            return _jet()
        raise ValueError(
            f"colormap={colormap!r}: only OpenCV's COLORMAP_JET ({JET}) is built in; pass a (256, 3) uint8 "
            "BGR lookup table for another colormap"
        )
    table = np.asarray(colormap)
    if table.shape != (256, 3):
        raise ValueError(f"colormap must be {JET} (JET), 'jet' or a (256, 3) BGR lookup table, got shape {table.shape}")
    return table.astype(np.uint8)


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def show_cam_on_image(
    img: np.ndarray,
    mask: np.ndarray,
    use_rgb: bool = False,
    colormap: Any = JET,
    image_weight: float = 0.5,
) -> np.ndarray:
    r"""Overlay a map on an image as a JET heatmap.

    .. math:: \mathrm{out} = 255 \cdot \frac{v}{\max v}, \quad
              v = (1 - w)\,\mathrm{jet}(\lfloor 255\,m \rfloor) / 255 + w\,\mathrm{img}

    Args:
        img: the image, float ``(H, W, 3)`` in ``[0, 1]`` (RGB or BGR).
        mask: the map ``(H, W)`` in ``[0, 1]`` (numpy or tensor).
        use_rgb: the heatmap in RGB order (set it when ``img`` is RGB); default BGR, as OpenCV.
        colormap: :data:`JET` (OpenCV's id), ``"jet"``, or a ``(256, 3)`` uint8 BGR lookup table.
        image_weight: weight ``w`` of the image in the blend, in ``[0, 1]``.

    Returns:
        The overlay, uint8 ``(H, W, 3)``.

    Raises:
        ValueError: when ``img`` exceeds 1, ``image_weight`` is outside ``[0, 1]``, or the colormap is unknown.

    Example:
        >>> out = show_cam_on_image(np.zeros((2, 2, 3), np.float32), np.ones((2, 2), np.float32), use_rgb=True)
        >>> out[0, 0].tolist()  # JET of 1.0 is dark red; the black image only darkens it
        [255, 0, 0]
    """
    image = _numpy(img)
    gray = (255 * _numpy(mask)).astype(np.uint8)
    heatmap = _lookup_table(colormap)[gray]
    if use_rgb:
        heatmap = heatmap[..., ::-1]
    heatmap = np.float32(heatmap) / 255
    if np.max(image) > 1:
        raise ValueError("img must be a float image with values in [0, 1] (np.float32(img) / 255)")
    if image_weight < 0 or image_weight > 1:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
    cam = (1 - image_weight) * heatmap + image_weight * image
    cam = cam / np.max(cam)
    out: np.ndarray = (255 * cam).astype(np.uint8)
    return out


def preprocess_image(
    img: np.ndarray, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)
) -> Tensor:
    """Turn an ``(H, W, C)`` image into a normalized ``(1, C, H, W)`` tensor.

    uint8 images are scaled by 1/255 (float images are used as they are, keeping their dtype),
    then each channel becomes ``(x - mean) / std`` (torchvision's ``ToTensor`` + ``Normalize``).

    Args:
        img: the image ``(H, W, C)`` or ``(H, W)``.
        mean: per-channel mean.
        std: per-channel standard deviation.

    Returns:
        The batch of one image.

    Example:
        >>> preprocess_image(np.full((2, 2, 3), 255, np.uint8)).shape
        torch.Size([1, 3, 2, 2])
    """
    array = np.array(img, copy=True)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    if tensor.dtype == torch.uint8:
        tensor = tensor.to(torch.get_default_dtype()).div(255)
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype).view(-1, 1, 1)
    return ((tensor - mean_t) / std_t).unsqueeze(0)


def deprocess_image(img: np.ndarray) -> np.ndarray:
    """Map any array (e.g. guided-backprop gradients) to a viewable uint8 image.

    Standardize, scale the standard deviation to 0.1, centre on 0.5, clip to ``[0, 1]``, times 255.

    Args:
        img: the array.

    Returns:
        uint8 array of the same shape.

    Example:
        >>> deprocess_image(np.array([0.0, 1.0])).tolist()
        [102, 152]
    """
    array = _numpy(img)
    array = array - np.mean(array)
    array = array / (np.std(array) + 1e-5)
    array = np.clip(array * 0.1 + 0.5, 0, 1)
    out: np.ndarray = (array * 255).astype(np.uint8)
    return out


def scale_cam_image(cam: np.ndarray, target_size: Sequence[int] | None = None) -> np.ndarray:
    """Min-max normalize each map, then resize it (pytorch-grad-cam's helper).

    Args:
        cam: maps ``(N, h, w)`` or ``(N, d, h, w)``.
        target_size: OpenCV order: ``(width, height)``, or ``(width, height, depth)`` for volumes;
            ``None`` keeps the size.

    Returns:
        float32 maps ``(N, height, width)`` (or ``(N, depth, height, width)``).

    Example:
        >>> scale_cam_image(np.array([[[0.0, 2.0]]]), (4, 1)).round(3).tolist()
        [[[0.0, 0.25, 0.75, 1.0]]]
    """
    maps = torch.as_tensor(np.asarray(cam, dtype=np.float32))
    if maps.ndim < 2:
        raise ValueError(f"cam must be a batch of maps (N, h, w), got shape {tuple(maps.shape)}")
    flat = maps.flatten(1)
    flat = flat - flat.amin(dim=1, keepdim=True)
    flat = flat / (1e-7 + flat.amax(dim=1, keepdim=True))
    maps = flat.view_as(maps)
    if target_size is not None:
        size = tuple(int(s) for s in target_size)[::-1]
        if len(size) != maps.ndim - 1:
            raise ValueError(f"target_size {tuple(target_size)} does not match maps of shape {tuple(maps.shape)}")
        mode = ops.interpolation_mode(len(size))
        maps = F.interpolate(maps.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)
    return maps.numpy()


def scale_accross_batch_and_channels(tensor: np.ndarray, target_size: Sequence[int]) -> np.ndarray:
    """:func:`scale_cam_image` on every channel of every sample (pytorch-grad-cam's spelling of the name).

    Args:
        tensor: ``(N, C, h, w)`` maps (numpy or tensor).
        target_size: ``(width, height)`` (OpenCV order).

    Returns:
        float32 ``(N, C, height, width)``, each ``(h, w)`` map min-max normalized then resized.

    Example:
        >>> scale_accross_batch_and_channels(np.array([[[[0.0, 2.0]]]]), (4, 1)).round(3).tolist()
        [[[[0.0, 0.25, 0.75, 1.0]]]]
    """
    array = _numpy(tensor)
    if array.ndim < 3:
        raise ValueError(f"tensor must be (N, C, h, w) maps, got shape {array.shape}")
    if len(target_size) != 2:
        raise ValueError(f"target_size must be (width, height), got {tuple(target_size)}")
    batch, channels = array.shape[:2]
    scaled = scale_cam_image(array.reshape(batch * channels, *array.shape[2:]), target_size)
    return scaled.reshape(batch, channels, int(target_size[1]), int(target_size[0]))


def concept_colors(n: int) -> np.ndarray:
    """``n`` evenly spaced hues at full saturation and value: the default colors of the concepts.

    Args:
        n: the number of colors.

    Returns:
        float ``(n, 3)`` RGB in ``[0, 1]``.

    Example:
        >>> concept_colors(3).tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    return np.array([colorsys.hsv_to_rgb(i / n, 1.0, 1.0) for i in range(n)], dtype=np.float64).reshape(n, 3)


def create_labels_legend(concept_scores: np.ndarray, labels: Mapping[int, str], top_k: int = 2) -> list[str]:
    r"""One legend text per concept: its ``top_k`` categories and scores, one per line (pytorch-grad-cam's helper).

    Args:
        concept_scores: ``(K, classes)`` scores of the concepts (e.g. softmax of the head's output).
        labels: category index to name (only the first three comma-separated names are kept).
        top_k: categories per concept.

    Returns:
        ``K`` strings ``"name:0.93\nother:0.02"``.

    Example:
        >>> create_labels_legend(np.array([[0.1, 0.9]]), {0: "cat", 1: "dog, puppy"}, top_k=1)
        ['dog, puppy:0.90']
    """
    scores = np.asarray(concept_scores)
    legends = []
    for row in scores:
        best = np.argsort(row)[::-1][:top_k]
        legends.append("\n".join(f"{','.join(labels[int(c)].split(',')[:3])}:{row[c]:.2f}" for c in best))
    return legends


def _legend(colors: np.ndarray, labels: Sequence[str], height: int, width: int) -> np.ndarray:
    """A white ``(height, width, 3)`` panel: per concept a line of its color and its label."""
    panel = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(panel)
    size = max(6, int(14 * height / 256 / max(1, len(labels) / 6)))
    try:
        font: Any = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    line_width, margin, y = max(1, round(5 * height / 256)), max(2, size // 2), max(2, size // 2)
    for color, label in zip(colors, labels, strict=True):
        fill = tuple(round(255 * float(c)) for c in color[:3])
        draw.line([(margin, y + size // 2), (margin + 2 * size, y + size // 2)], fill=fill, width=line_width)
        for text in str(label).split("\n"):
            draw.text((margin + 3 * size, y), text, fill="black", font=font)
            y += round(1.2 * size)
        y += size // 2
    return np.asarray(panel, dtype=np.uint8)


def _hsv_multipliers(color: np.ndarray) -> np.ndarray:
    """Per RGB channel, the factor of the HSV value for ``color``'s hue and saturation (float32, ``(3,)``).

    Emulates OpenCV's 8-bit ``RGB2HSV`` (fixed-point hue / 2 and saturation) and its ``HSV2RGB``
    (float32), so a concept drawn at value ``V`` is ``round(V / 255 * multipliers * 255)`` as there.
    """
    r, g, b = (int(c) for c in (np.clip(np.asarray(color, np.float64), 0, 1) * 255).astype(np.uint8))
    top, diff = max(r, g, b), max(r, g, b) - min(r, g, b)
    shift, half = 12, 1 << 11
    saturation = (diff * (round((255 << shift) / top) if top else 0) + half) >> shift
    if top == r:
        hue = g - b
    elif top == g:
        hue = b - r + 2 * diff
    else:
        hue = r - g + 4 * diff
    hue = (hue * (round((180 << shift) / (6 * diff)) if diff else 0) + half) >> shift
    hue += 180 if hue < 0 else 0
    h = np.float32(hue) * (np.float32(6) / np.float32(180))
    h = h - np.float32(6) if h >= 6 else h
    sector = int(np.floor(h))
    f, s = h - np.float32(sector), np.float32(saturation) * (np.float32(1) / np.float32(255))
    one = np.float32(1)
    tab = [one, one - s, one - s * f, one - s * (one - f)]
    red, green, blue = {0: (0, 3, 1), 1: (2, 0, 1), 2: (1, 0, 3), 3: (1, 2, 0), 4: (3, 1, 0), 5: (0, 1, 2)}[sector]
    return np.array([tab[red], tab[green], tab[blue]], dtype=np.float32)


def show_factorization_on_image(
    img: np.ndarray,
    explanations: np.ndarray,
    colors: Sequence[Any] | None = None,
    image_weight: float = 0.5,
    concept_labels: Sequence[str] | None = None,
) -> np.ndarray:
    r"""Color each pixel by its strongest concept, with brightness its map value, over the image.

    Pixel :math:`p` takes the concept :math:`k = \arg\max_k E_k(p)`, drawn in its color at HSV value
    :math:`\lfloor 255 E_k(p) \rfloor` (same hue and saturation); the result is
    ``uint8(255 * (w * img + (1 - w) * colored))``, as pytorch-grad-cam's function. Differences:
    Pillow/numpy only; default colors are :func:`concept_colors` (evenly spaced hues; the peer samples
    matplotlib's ``gist_rainbow``: pass ``colors`` for its exact ones); the peer's 8-bit OpenCV
    HSV round trip is emulated (equal for pure hues, within 1 level otherwise: OpenCV's own
    scalar and SIMD paths round differently); ``concept_labels`` adds a legend panel drawn with
    Pillow (the peer: matplotlib), same size, to the right; ``explanations`` is not modified (the
    peer zeroes it in place) and values outside ``[0, 1]`` are clipped (the peer's uint8 wraps).

    Args:
        img: RGB image, float ``(H, W, 3)`` in ``[0, 1]``.
        explanations: the concept maps ``(K, H, W)`` in ``[0, 1]`` (one image's maps from
            :class:`~camkit.compat.gradcam.DeepFeatureFactorization`).
        colors: ``K`` RGB(A) colors in ``[0, 1]``; ``None``: :func:`concept_colors`.
        image_weight: weight ``w`` of the image.
        concept_labels: ``K`` legend texts (e.g. from :func:`create_labels_legend`); adds the legend.

    Returns:
        uint8 ``(H, W, 3)``, or ``(H, 2W, 3)`` with the legend.

    Raises:
        ValueError: when the maps do not match the image or the number of colors/labels.

    Example:
        >>> maps = np.stack([np.eye(2), 1 - np.eye(2)]).astype(np.float32)
        >>> show_factorization_on_image(np.zeros((2, 2, 3)), maps, image_weight=0.0)[:, :, 0].tolist()
        [[255, 0], [0, 255]]
    """
    image = _numpy(img)
    image = image if np.issubdtype(image.dtype, np.floating) else image.astype(np.float64)
    maps = _numpy(explanations)
    if maps.ndim != 3 or maps.shape[1:] != image.shape[:2]:
        raise ValueError(f"explanations must be (K, H, W) with (H, W) = {image.shape[:2]}, got shape {maps.shape}")
    k = maps.shape[0]
    palette = concept_colors(k) if colors is None else np.array([np.asarray(c, np.float64)[:3] for c in colors])
    if palette.shape != (k, 3):
        raise ValueError(f"colors must give one RGB color per concept ({k}), got {len(palette)}")
    if concept_labels is not None and len(concept_labels) != k:
        raise ValueError(f"concept_labels must give one label per concept ({k}), got {len(concept_labels)}")
    multipliers = np.stack([_hsv_multipliers(color) for color in palette])
    winner = maps.argmax(axis=0)
    value = (255 * np.clip(np.take_along_axis(maps, winner[None], axis=0)[0], 0, 1)).astype(np.uint8)
    scaled = value.astype(np.float32)[..., None] * (np.float32(1) / np.float32(255))
    colored = np.rint(scaled * multipliers[winner] * np.float32(255)) / np.float32(255)
    out: np.ndarray = (255 * (image * image_weight + colored * (1 - image_weight))).astype(np.uint8)
    if concept_labels is not None:
        out = np.hstack([out, _legend(palette, concept_labels, out.shape[0], out.shape[1])])
    return out
