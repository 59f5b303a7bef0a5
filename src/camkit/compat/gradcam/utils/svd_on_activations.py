"""Projections of activations on their first principal component (``pytorch_grad_cam.utils.svd_on_activations``).

numpy in, numpy out, as pytorch-grad-cam; computed with torch by
:func:`camkit.ops.first_component_projection`. SVD leaves the sign of the component arbitrary:
:func:`get_2d_projection` fixes it as camkit does (the component's entries sum to ``>= 0``, it
points towards more activation) where pytorch-grad-cam keeps LAPACK's sign, so the two agree up to
the sign of each map; :func:`get_2d_projection_with_sign_correction` applies the peer's own rule
(flip when ``|min| > |max|``) and agrees with it exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from camkit import ops
from camkit.methods.projection import KERNELS, kernel_matrix

__all__ = ["get_2d_projection", "get_2d_projection_kernel", "get_2d_projection_with_sign_correction"]


def _projection(activation_batch: Any) -> torch.Tensor:
    array = np.asarray(activation_batch)
    if array.ndim < 3:
        raise ValueError(f"activation_batch must be (N, C, *S) activations, got shape {array.shape}")
    dtype = torch.float64 if array.dtype == np.float64 else torch.float32
    return ops.first_component_projection(torch.as_tensor(array).to(dtype))


def get_2d_projection(activation_batch: np.ndarray) -> np.ndarray:
    """Each sample's activations projected on their first principal component (Eigen-CAM's map).

    Positions are the rows, channels the columns, centred per channel; NaNs count as 0.

    Args:
        activation_batch: ``(N, C, *S)`` activations (not modified).

    Returns:
        float32 ``(N, *S)``.

    Example:
        >>> get_2d_projection(np.random.rand(2, 4, 3, 3)).shape
        (2, 3, 3)
    """
    out: np.ndarray = _projection(activation_batch).numpy().astype(np.float32)
    return out


def get_2d_projection_with_sign_correction(activation_batch: np.ndarray) -> np.ndarray:
    """:func:`get_2d_projection`, each map negated when ``|min| > |max|`` (Seg-Eigen-CAM's rule, Eq. 13).

    Args:
        activation_batch: ``(N, C, *S)`` activations (not modified).

    Returns:
        float32 ``(N, *S)``.

    Example:
        >>> p = get_2d_projection_with_sign_correction(np.random.rand(2, 4, 3, 3))
        >>> bool((np.abs(p.min(axis=(1, 2))) <= np.abs(p.max(axis=(1, 2)))).all())
        True
    """
    projection = _projection(activation_batch)
    flat = projection.flatten(1)
    flip = flat.amin(dim=1).abs() > flat.amax(dim=1).abs()
    sign = torch.where(flip, -1.0, 1.0).to(projection.dtype).view(-1, *([1] * (projection.ndim - 1)))
    out: np.ndarray = (projection * sign).numpy().astype(np.float32)
    return out


def get_2d_projection_kernel(
    activation_batch: np.ndarray, kernel: str = "sigmoid", gamma: float | None = None
) -> np.ndarray:
    """Each sample's coordinates on its first kernel principal component (KPCA-CAM's map).

    The values of scikit-learn's ``KernelPCA(n_components=1, kernel=kernel, gamma=gamma)
    .fit_transform`` on the channel-centred positions, as pytorch-grad-cam, computed with torch
    (camkit's KPCA-CAM); the sign is camkit's (the component points towards more activation)
    where scikit-learn's is its solver's, so the two agree up to the sign of each map.

    Args:
        activation_batch: ``(N, C, *S)`` activations (not modified).
        kernel: ``"sigmoid"``, ``"rbf"``, ``"poly"``, ``"linear"`` or ``"cosine"``.
        gamma: the kernel's gamma; ``None``: ``1 / C``.

    Returns:
        float32 ``(N, *S)``.

    Raises:
        ValueError: for an unknown kernel or a negative gamma.

    Example:
        >>> get_2d_projection_kernel(np.random.rand(2, 4, 3, 3)).shape
        (2, 3, 3)
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
    array = np.asarray(activation_batch)
    if array.ndim < 3:
        raise ValueError(f"activation_batch must be (N, C, *S) activations, got shape {array.shape}")
    if gamma is None:
        gamma = 1.0 / array.shape[1]
    elif isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0:
        raise ValueError(f"gamma must be a number >= 0 (None: 1 / channels), got {gamma!r}")
    a = torch.as_tensor(array).to(torch.float64 if array.dtype == np.float64 else torch.float32)
    rows = torch.nan_to_num(a.flatten(2).transpose(1, 2), nan=0.0)
    rows = rows - rows.mean(dim=1, keepdim=True)
    k = kernel_matrix(rows, kernel, float(gamma))
    k = k - k.mean(dim=1, keepdim=True) - k.mean(dim=2, keepdim=True) + k.mean(dim=(1, 2), keepdim=True)
    values, vectors = torch.linalg.eigh(k)
    alpha = vectors[..., -1]
    sign = torch.where((alpha * rows.sum(-1)).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(alpha.dtype)
    projection = alpha * sign * values[..., -1:].clamp_min(0).sqrt()
    out: np.ndarray = projection.view(a.shape[0], *a.shape[2:]).numpy().astype(np.float32)
    return out
