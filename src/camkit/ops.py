"""Pure tensor operations of the CAM pipeline: combine, ReLU, normalize, upsample, fuse.

Every function here takes and returns torch tensors on the caller's device; none of them
knows about models, hooks or methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "autocast_enabled",
    "combine",
    "expand_weights",
    "first_component_projection",
    "fuse",
    "interpolation_mode",
    "normalize",
    "upsample",
]


def expand_weights(weights: Tensor, activation: Tensor) -> Tensor:
    """Append singleton spatial dims so ``weights`` broadcasts against ``activation``.

    Args:
        weights: channel weights ``(N, C)`` or spatial weights ``(N, C, *S)``.
        activation: activations ``(N, C, *S)``.

    Returns:
        ``weights`` viewed with as many trailing singleton dims as needed.

    Raises:
        ValueError: if the leading dims of the two tensors do not match.
    """
    missing = activation.ndim - weights.ndim
    if missing < 0 or weights.shape[:2] != activation.shape[:2]:
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not broadcast to activations of shape "
            f"{tuple(activation.shape)}: expected (N, C) or (N, C, *S)"
        )
    return weights.reshape(*weights.shape, *([1] * missing))


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``"cpu"``, ``"cuda"``, ...) in this thread."""
    try:
        return bool(torch.is_autocast_enabled(device_type))  # torch >= 2.4
    except TypeError:  # older torch: one function per device type
        return bool(torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled())
    except RuntimeError:  # a device type autocast does not know ("meta"): nothing runs under autocast there
        return False


def combine(weights: Tensor, activation: Tensor) -> Tensor:
    r"""Weighted sum of activation channels, the one combine step shared by every method.

    .. math:: L(x) = \sum_k w_k \, A_k(x)

    ``weights`` may be per channel ``(N, C)`` (one batched matrix product) or per position
    ``(N, C, *S)`` (a broadcast product summed over channels).

    Args:
        weights: ``(N, C)`` or ``(N, C, *S)``.
        activation: ``(N, C, *S)``.

    Returns:
        The map, ``(N, *S)``.

    Example:
        >>> combine(torch.ones(1, 2), torch.ones(1, 2, 3, 3)).shape
        torch.Size([1, 3, 3])
    """
    same = weights.dtype == activation.dtype and weights.shape == activation.shape[:2]
    if same and weights.ndim == 2 and activation.ndim >= 3 and not autocast_enabled(activation.device.type):
        # per-channel weights: one batched matrix product, (N, 1, C) @ (N, C, S); 2-3x faster than
        # the broadcast product and the strided sum over C (autocast would run it in low precision)
        product = torch.matmul(weights.unsqueeze(1), activation.flatten(2))
        return product.view(activation.shape[0], *activation.shape[2:])
    return (expand_weights(weights, activation) * activation).sum(dim=1)


def normalize(cam: Tensor, eps: float = 0.0) -> Tensor:
    r"""Min-max normalize each sample's map to ``[0, 1]``.

    .. math:: \hat L = \frac{L - \min L}{\max L - \min L}

    A flat map (max equal to min) becomes all zeros, never NaN. Every value is halved first, so a
    finite map whose span :math:`\max L - \min L` exceeds the dtype's range (e.g. ``-3e38 .. 3e38``
    in float32) still spans ``[0, 1]``; halving is exact for every normal float (the formula is
    unchanged), and only maps made entirely of subnormal numbers (below ~1e-38 in float32, ~6e-5 in
    float16) can round differently in the last place. The minimum maps to exactly 0 and the
    maximum to exactly 1. NaN and infinite values are not hidden: they give NaN in the output.

    Args:
        cam: maps ``(N, *S)``.
        eps: added to the denominator (0 keeps the exact formula).

    Returns:
        A new tensor of the same shape.

    Raises:
        ValueError: for a tensor with fewer than two dims (no map per sample).

    Example:
        >>> normalize(torch.tensor([[1.0, 3.0]]))
        tensor([[0., 1.]])
        >>> normalize(torch.tensor([[-3e38, 0.0, 3e38]]))
        tensor([[0.0000, 0.5000, 1.0000]])
    """
    if cam.ndim < 2:
        raise ValueError(f"normalize takes maps of shape (N, *S), got {tuple(cam.shape)}")
    dims = tuple(range(1, cam.ndim))
    # Seven small ops: on the per-call path of a small network each op costs more than its arithmetic.
    neg_low = cam.amin(dim=dims, keepdim=True).mul(-0.5)  # out of place: amin and amax keep their outputs
    denom = torch.add(neg_low, cam.amax(dim=dims, keepdim=True), alpha=0.5)  # (max - min) / 2: > 0 unless flat
    if eps:
        denom = denom + 0.5 * eps  # eps on the halved scale: (L - min) / (max - min + eps)
    denom = torch.where(denom > 0, denom, float("inf"))  # a flat map: 0 / inf = 0 (NaN stays NaN)
    # L / 2 - min / 2 in one op (L / 2 is exact, so it rounds like the plain difference); then the
    # division in place on that fresh tensor
    return torch.add(neg_low, cam, alpha=0.5).div_(denom)


def interpolation_mode(spatial_dims: int) -> str:
    """The smooth interpolation mode for 1, 2 or 3 spatial dims (linear, bilinear, trilinear).

    Args:
        spatial_dims: number of spatial dims.

    Returns:
        A mode name for :func:`torch.nn.functional.interpolate`.

    Raises:
        ValueError: for other numbers of spatial dims.
    """
    modes = {1: "linear", 2: "bilinear", 3: "trilinear"}
    if spatial_dims not in modes:
        raise ValueError(f"maps with {spatial_dims} spatial dims cannot be resized: expected 1, 2 or 3")
    return modes[spatial_dims]


def upsample(x: Tensor, size: Sequence[int]) -> Tensor:
    r"""Resize maps ``(N, *S)`` or channels ``(N, C, *S)`` to ``size`` with (bi/tri)linear interpolation.

    A constant map stays exactly constant: interpolation weights sum to 1 only up to rounding, and
    :func:`normalize` would stretch that rounding noise of a flat map to ``[0, 1]``. So each map is
    interpolated relative to its minimum, which is added back afterwards (the span
    :math:`\max - \min` must be finite in the map's dtype).

    Args:
        x: ``(N, *S)`` when ``len(size) == x.ndim - 1``, else ``(N, C, *S)``.
        size: target spatial size.

    Returns:
        The resized tensor (the input itself when already at ``size``).

    Example:
        >>> upsample(torch.zeros(2, 7, 7), (14, 14)).shape
        torch.Size([2, 14, 14])
    """
    size = tuple(int(s) for s in size)
    has_channels = x.ndim == len(size) + 2
    if tuple(x.shape[-len(size) :]) == size:
        return x
    y = x if has_channels else x.unsqueeze(1)
    low = y.amin(dim=tuple(range(2, y.ndim)), keepdim=True)
    # A flat map minus its minimum is exactly 0 everywhere, and 0 interpolates to exactly 0. The
    # minimum is added back in place on the interpolation's fresh output.
    y = F.interpolate(y - low, size=size, mode=interpolation_mode(len(size)), align_corners=False).add_(low)
    return y if has_channels else y.squeeze(1)


def fuse(cams: Sequence[Tensor], size: Sequence[int] | None = None) -> Tensor:
    """Fuse maps of several layers: resize to a common size and take the element-wise maximum.

    Args:
        cams: maps ``(N, *S_l)`` of the same sample(s), one per layer.
        size: output spatial size; default the largest size along each dim.

    Returns:
        The fused map ``(N, *size)``.

    Raises:
        ValueError: on an empty list.

    Example:
        >>> fuse([torch.zeros(1, 2, 2), torch.ones(1, 4, 4)]).shape
        torch.Size([1, 4, 4])
    """
    if len(cams) == 0:
        raise ValueError("`cams` is empty: pass the list of maps returned by the extractor")
    if size is None:
        size = tuple(max(sizes) for sizes in zip(*(tuple(c.shape[1:]) for c in cams), strict=True))
    fused = upsample(cams[0], size)
    for cam in cams[1:]:
        fused = torch.maximum(fused, upsample(cam, size))
    return fused


def _top_right_singular_vector(rows: Tensor) -> Tensor:
    r"""The first right singular vector :math:`v_1` of each ``(|S|, C)`` matrix, up to sign: ``(N, C)``.

    It is the top eigenvector of the smaller Gram matrix: :math:`X^\top X` (``C x C``) directly, or
    :math:`X X^\top` (``|S| x |S|``) whose top eigenvector :math:`u_1` gives
    :math:`v_1 = X^\top u_1 / \lVert X^\top u_1 \rVert`. A symmetric eigensolver on the smaller side is
    2-10x faster than an SVD of :math:`X` and as accurate for the top vector (its error scales with
    :math:`\sigma_1 / (\sigma_1 - \sigma_2)` either way).
    """
    if rows.shape[2] <= rows.shape[1]:
        top: Tensor = torch.linalg.eigh(rows.transpose(1, 2) @ rows).eigenvectors[..., -1]
        return top
    u = torch.linalg.eigh(rows @ rows.transpose(1, 2)).eigenvectors[..., -1:]  # (N, |S|, 1)
    v: Tensor = (rows.transpose(1, 2) @ u).squeeze(-1)
    unit: Tensor = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)  # zero rows: v = 0
    return unit


def first_component_projection(x: Tensor) -> Tensor:
    r"""Project each sample's feature vectors on their first principal component.

    For sample ``n`` the positions are rows of :math:`X \in \mathbb{R}^{|S| \times C}`, centred per
    channel; with :math:`X = U \Sigma V^\top` the map is :math:`X v_1`. SVD leaves the sign of
    :math:`v_1` arbitrary, so camkit fixes it: :math:`\sum_k v_{1k} \ge 0` (the component points
    towards more activation). NaNs are treated as 0.

    Args:
        x: ``(N, C, *S)`` (activations, or weighted activations for ``eigen_smooth``).

    Returns:
        The projection ``(N, *S)``.

    Example:
        >>> first_component_projection(torch.rand(2, 4, 3, 3)).shape
        torch.Size([2, 3, 3])
    """
    rows = torch.nan_to_num(x.flatten(2).transpose(1, 2), nan=0.0)  # (N, |S|, C)
    rows = rows - rows.mean(dim=1, keepdim=True)
    v = _top_right_singular_vector(rows)  # (N, C)
    sign = torch.where(v.sum(dim=1, keepdim=True) < 0, -1.0, 1.0).to(v.dtype)
    projection: Tensor = rows @ (v * sign).unsqueeze(-1)
    return projection.squeeze(-1).view(x.shape[0], *x.shape[2:])
