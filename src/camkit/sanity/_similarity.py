r"""Similarity of two maps, batched in torch: Spearman rank correlation, SSIM, Pearson correlation of HOG features.

Every measure takes two batches of maps ``(..., H, W)`` of the same shape and returns one value
per pair, shape ``(...)``, float64; 1 means the same map. They are the three measures of Adebayo
et al. (2018), Sanity Checks for Saliency Maps:

* ``spearman``: the rank correlation of the absolute maps (ties get their average rank, as
  ``scipy.stats.spearmanr``);
* ``ssim``: the structural similarity index of Wang et al. (2004) with the defaults of
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, data_range=1)``: a Gaussian
  window of :math:`\sigma = 1.5` truncated at :math:`3.5\sigma` (11 x 11), population
  (co)variances, :math:`K_1 = 0.01`, :math:`K_2 = 0.03`, the mean over the positions where the
  window lies inside the map (maps must be at least 11 x 11);
* ``hog_pearson``: the Pearson correlation of the maps' histograms of oriented gradients
  (:func:`hog`: 9 unsigned orientation bins, 8 x 8-pixel cells, 2 x 2-cell blocks, L2-Hys).

A correlation of a constant map (no ranking, no gradients) is 0: it says nothing about the other map.

Example:
    >>> import torch
    >>> a = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> [round(float(v), 6) for v in spearman(a, a)], [round(float(v), 6) for v in ssim(a, a)]
    ([1.0, 1.0], [1.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["MEASURES", "hog", "hog_pearson", "pearson", "ranks", "spearman", "ssim"]


def _pair(a: Tensor, b: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{name}: the maps must be tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"{name}: the maps must have one shape (..., H, W), got {tuple(a.shape)} and {tuple(b.shape)}")
    b = b.to(a.device)
    return torch.nan_to_num(a.double()), torch.nan_to_num(b.double())


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation along the last dimension, ``(..., D)`` → ``(...)``; 0 where either side is constant.

    Example:
        >>> float(pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0])))  # doctest: +ELLIPSIS
        0.99...
    """
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    scale = a.norm(dim=-1) * b.norm(dim=-1)
    ok = scale > 0
    return torch.where(ok, (a * b).sum(-1) / torch.where(ok, scale, torch.ones_like(scale)), torch.zeros_like(scale))


def ranks(values: Tensor) -> Tensor:
    """The ranks (1-based) of ``values`` along the last dimension, ties getting their average rank.

    Example:
        >>> ranks(torch.tensor([[10.0, 30.0, 20.0, 30.0]])).tolist()
        [[1.0, 3.5, 2.0, 3.5]]
    """
    flat = values.reshape(-1, values.shape[-1])
    length = flat.shape[1]
    ordered, order = flat.sort(dim=-1, stable=True)
    position = torch.arange(length, device=flat.device).expand_as(ordered)
    start = torch.ones_like(ordered, dtype=torch.bool)
    start[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    end = torch.ones_like(start)
    end[:, :-1] = start[:, 1:]
    first = torch.where(start, position, 0).cummax(dim=-1).values  # where each run of ties starts
    last = torch.where(end, position, length).flip(-1).cummin(dim=-1).values.flip(-1)  # ... and ends
    sorted_ranks = (first + last).double() / 2 + 1
    result = torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)
    return result.reshape(values.shape)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of the absolute maps ``(..., H, W)`` → ``(...)`` (Adebayo et al. 2018).

    Example:
        >>> a = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
        >>> round(float(spearman(a, a ** 2)), 12), round(float(spearman(a, 3 - a)), 12)
        (1.0, -1.0)
    """
    a, b = _pair(a, b, "spearman")
    return pearson(ranks(a.abs().flatten(-2)), ranks(b.abs().flatten(-2)))


#: the SSIM parameters (skimage's defaults with ``gaussian_weights=True``)
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _gaussian_window(sigma: float, truncate: float, device: torch.device) -> Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    window = torch.exp(-(x**2) / (2 * sigma**2))
    return window / window.sum()


def _band(size: int, window: Tensor) -> Tensor:
    """The ``(size - k + 1, size)`` matrix that applies the ``k``-tap ``window`` at every valid position."""
    taps = window.numel()
    rows = size - taps + 1
    band = torch.zeros(rows, size, dtype=window.dtype, device=window.device)
    index = torch.arange(rows, device=window.device).unsqueeze(1) + torch.arange(taps, device=window.device)
    return band.scatter_(1, index, window.expand(rows, taps).contiguous())


def _filtered(images: Tensor, window: Tensor) -> Tensor:
    """``(..., H, W)`` → the separable Gaussian filter at the valid positions only, ``(..., H - k + 1, W - k + 1)``."""
    down = _band(images.shape[-2], window)
    across = _band(images.shape[-1], window)
    return down @ images @ across.t()


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    r"""Structural similarity (Wang et al. 2004) of maps ``(..., H, W)`` → ``(...)``, the mean SSIM over positions.

    .. math::
        \mathrm{SSIM}(x, y) = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
        {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},\quad C_i = (K_i L)^2

    with local statistics under a Gaussian window (:math:`\sigma = 1.5`, 11 x 11), ``L`` =
    ``data_range``; as ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
    data_range=1, use_sample_covariance=False)``.

    Raises:
        ValueError: for maps smaller than the 11 x 11 window.
    """
    a, b = _pair(a, b, "ssim")
    window = _gaussian_window(SSIM_SIGMA, SSIM_TRUNCATE, a.device)
    if min(a.shape[-2:]) < window.numel():
        raise ValueError(f"ssim: maps must be at least {window.numel()} x {window.numel()}, got {tuple(a.shape[-2:])}")
    batch = a.shape[:-2]
    x, y = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    mu_x, mu_y, xx, yy, xy = _filtered(torch.stack([x, y, x * x, y * y, x * y]), window).unbind(0)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(-1).reshape(batch)


#: the HOG parameters
HOG_ORIENTATIONS = 9
HOG_CELL = 8
HOG_BLOCK = 2
HOG_EPS = 1e-5
HOG_CLIP = 0.2


def hog(maps: Tensor) -> Tensor:
    """Histograms of oriented gradients of maps ``(..., H, W)`` → features ``(..., F)`` (Dalal & Triggs 2005).

    As ``skimage.feature.hog(m, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
    block_norm="L2-Hys")``: central-difference gradients (0 on the border rows and columns),
    unsigned orientations in 9 bins of 20°, each pixel's magnitude added to its bin (no
    interpolation), the mean per 8 x 8 cell (pixels past the last whole cell are left out), blocks
    of 2 x 2 cells at every cell position, each normalized with L2-Hys (L2, clipped at 0.2, L2 again).

    Raises:
        ValueError: for maps smaller than one block (16 x 16).
    """
    if maps.ndim < 2 or min(maps.shape[-2:]) < HOG_CELL * HOG_BLOCK:
        raise ValueError(
            f"hog: maps must be at least {HOG_CELL * HOG_BLOCK} x {HOG_CELL * HOG_BLOCK}, got {tuple(maps.shape)}"
        )
    batch = maps.shape[:-2]
    m = torch.nan_to_num(maps.double()).reshape(-1, *maps.shape[-2:])
    g_row = torch.zeros_like(m)
    g_col = torch.zeros_like(m)
    g_row[:, 1:-1, :] = m[:, 2:, :] - m[:, :-2, :]
    g_col[:, :, 1:-1] = m[:, :, 2:] - m[:, :, :-2]
    magnitude = torch.hypot(g_row, g_col)
    orientation = torch.rad2deg(torch.atan2(g_row, g_col)) % 180
    bins = (orientation / (180 / HOG_ORIENTATIONS)).floor().long().clamp(0, HOG_ORIENTATIONS - 1)
    rows, cols = m.shape[1] // HOG_CELL, m.shape[2] // HOG_CELL
    whole = (slice(None), slice(0, rows * HOG_CELL), slice(0, cols * HOG_CELL))
    row = torch.arange(rows * HOG_CELL, device=m.device).div(HOG_CELL, rounding_mode="floor").view(1, -1, 1)
    col = torch.arange(cols * HOG_CELL, device=m.device).div(HOG_CELL, rounding_mode="floor").view(1, 1, -1)
    sample = torch.arange(m.shape[0], device=m.device).view(-1, 1, 1)
    index = ((sample * HOG_ORIENTATIONS + bins[whole]) * rows + row) * cols + col
    cells = torch.zeros(m.shape[0] * HOG_ORIENTATIONS * rows * cols, dtype=m.dtype, device=m.device)
    cells.index_add_(0, index.reshape(-1), magnitude[whole].reshape(-1))
    cells = cells.view(m.shape[0], HOG_ORIENTATIONS, rows, cols) / HOG_CELL**2  # the mean per cell
    blocks = cells.unfold(2, HOG_BLOCK, 1).unfold(3, HOG_BLOCK, 1)  # (B, bins, Hb, Wb, r, c)
    blocks = blocks.permute(0, 2, 3, 4, 5, 1).flatten(3)  # (B, Hb, Wb, r * c * bins), skimage's order
    blocks = blocks / torch.sqrt((blocks**2).sum(-1, keepdim=True) + HOG_EPS**2)
    blocks = blocks.clamp(max=HOG_CLIP)
    blocks = blocks / torch.sqrt((blocks**2).sum(-1, keepdim=True) + HOG_EPS**2)
    return blocks.flatten(1).reshape(*batch, -1)


def hog_pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the maps' HOG features (:func:`hog`), ``(..., H, W)`` → ``(...)``.

    Example:
        >>> a = torch.rand(24, 24, generator=torch.Generator().manual_seed(0))
        >>> round(float(hog_pearson(a, 2 * a + 1)), 6)  # gradients' directions and relative sizes
        1.0
    """
    a, b = _pair(a, b, "hog_pearson")
    return pearson(hog(a), hog(b))


#: the similarity measures by name: ``(maps, maps) -> (...)``
MEASURES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "spearman": spearman,
    "ssim": ssim,
    "hog_pearson": hog_pearson,
}
