r"""Deep Feature Factorization: non-negative matrix factorization of a layer's activations.

Collins, Achanta and Süsstrunk, "Deep Feature Factorization For Concept Discovery", ECCV 2018,
arXiv:1806.10206. Everything is torch (multiplicative-update NMF, no scikit-learn), on the
activation's device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import overload

import torch
from torch import Tensor, nn

from camkit import ops
from camkit.engine import Capture, LayerSpec, eval_mode, resolve_layers

__all__ = ["deep_feature_factorization", "nmf"]


def nmf(
    v: Tensor,
    n_components: int,
    *,
    max_iter: int = 200,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    r"""Non-negative matrix factorization :math:`V \approx W H` by multiplicative updates.

    .. math::
        H \leftarrow H \odot \frac{W^\top V}{W^\top W H + \epsilon}, \qquad
        W \leftarrow W \odot \frac{V H^\top}{W H H^\top + \epsilon}

    which never increase :math:`\lVert V - W H \rVert_F` (Lee and Seung, "Algorithms for
    Non-negative Matrix Factorization", NIPS 2001). Initialization as scikit-learn's ``"random"``:
    :math:`\sqrt{\mathrm{mean}(V)/K}\,|z|` with :math:`z \sim \mathcal{N}(0, 1)` drawn on the CPU
    from ``generator`` (default: seed 0, so results are reproducible). Every 10 iterations the error
    is measured; the updates stop when it fell by less than ``tol`` times the initial error.

    Args:
        v: non-negative matrix ``(M, F)``.
        n_components: rank :math:`K`.
        max_iter: most iterations.
        tol: relative tolerance of the stopping test (0 runs ``max_iter`` iterations).
        generator: random generator of the initialization.
        dtype: computation dtype (``torch.float32`` or ``torch.float64``).

    Returns:
        ``(W, H)``: ``(M, K)`` and ``(K, F)``, non-negative, in ``dtype`` on ``v``'s device.

    Raises:
        ValueError: for a negative or non-finite ``v``, or bad ``n_components``/``max_iter``.

    Example:
        >>> v = torch.rand(6, 2) @ torch.rand(2, 5)
        >>> w, h = nmf(v, 2, max_iter=500, tol=0)
        >>> bool(torch.linalg.norm(v - w @ h) < 0.05 * torch.linalg.norm(v))
        True
    """
    if v.ndim != 2:
        raise ValueError(f"nmf needs a matrix (M, F), got shape {tuple(v.shape)}")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be a positive int, got {n_components!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be an int >= 0, got {max_iter!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    v = v.detach().to(dtype)
    if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
        raise ValueError("nmf needs a finite non-negative matrix: apply ReLU or subtract the minimum first")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    scale = (v.mean() / n_components).sqrt().item()
    h = (scale * torch.randn(n_components, v.shape[1], generator=gen, dtype=dtype).abs()).to(v.device)
    w = (scale * torch.randn(v.shape[0], n_components, generator=gen, dtype=dtype).abs()).to(v.device)
    eps = torch.finfo(dtype).eps
    initial = previous = torch.linalg.norm(v - w @ h).item()
    for it in range(1, max_iter + 1):
        h = h * (w.T @ v) / (w.T @ w @ h + eps)
        w = w * (v @ h.T) / (w @ (h @ h.T) + eps)
        if tol > 0 and it % 10 == 0:
            error = torch.linalg.norm(v - w @ h).item()
            if initial == 0 or (previous - error) / initial < tol:
                break
            previous = error
    return w, h


@overload
def deep_feature_factorization(
    model: nn.Module,
    x: Tensor,
    target_layer: LayerSpec,
    n_components: int = ...,
    *,
    head: None = ...,
    nonnegative: str = ...,
    upsample: bool = ...,
    normalized: bool = ...,
    reshape_transform: Callable[[Tensor], Tensor] | None = ...,
    max_iter: int = ...,
    tol: float = ...,
    generator: torch.Generator | None = ...,
    dtype: torch.dtype = ...,
) -> tuple[Tensor, Tensor]: ...


@overload
def deep_feature_factorization(
    model: nn.Module,
    x: Tensor,
    target_layer: LayerSpec,
    n_components: int = ...,
    *,
    head: Callable[[Tensor], Tensor],
    nonnegative: str = ...,
    upsample: bool = ...,
    normalized: bool = ...,
    reshape_transform: Callable[[Tensor], Tensor] | None = ...,
    max_iter: int = ...,
    tol: float = ...,
    generator: torch.Generator | None = ...,
    dtype: torch.dtype = ...,
) -> tuple[Tensor, Tensor, Tensor]: ...


def deep_feature_factorization(
    model: nn.Module,
    x: Tensor,
    target_layer: LayerSpec,
    n_components: int = 5,
    *,
    head: Callable[[Tensor], Tensor] | None = None,
    nonnegative: str = "relu",
    upsample: bool = True,
    normalized: bool = True,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    max_iter: int = 200,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    r"""Deep Feature Factorization: split a layer's features into ``n_components`` concepts.

    The activations :math:`A` ``(N, C, *S)`` of the whole batch are stacked into one non-negative
    matrix :math:`V \in \mathbb{R}_{\ge 0}^{C \times N|S|}` and factorized by :func:`nmf`:

    .. math:: V \approx W H, \qquad W \in \mathbb{R}_{\ge 0}^{C \times K}\ \text{(concepts)}, \quad
              H \in \mathbb{R}_{\ge 0}^{K \times N|S|}\ \text{(where each concept is, per image)}

    ``nonnegative="relu"`` uses :math:`\max(A, 0)` (the paper: ReLU features are non-negative);
    ``"shift"`` subtracts each channel's minimum :math:`o_c` and returns :math:`W + o` as the concepts
    (pytorch-grad-cam 1.5.7's ``dff``). The model runs once, in eval mode (its flags restored),
    under ``torch.inference_mode``. pytorch-grad-cam uses scikit-learn's coordinate-descent NMF, so
    its factors differ from camkit's (NMF is not unique); the fit quality is the same.

    Args:
        model: the model.
        x: input batch ``(N, C_in, *S_in)``.
        target_layer: one layer (module or dotted name).
        n_components: number of concepts :math:`K`.
        head: optional callable mapping concept embeddings ``(K, C)`` to class scores ``(K, classes)``
            (pytorch-grad-cam's ``computation_on_concepts``, e.g. the model's ``fc``).
        nonnegative: ``"relu"`` or ``"shift"``.
        upsample: resize the maps to the input size (bilinear), else keep the layer's resolution.
        normalized: min-max normalize each image's map of each concept (before resizing, as
            pytorch-grad-cam); else the raw NMF coefficients.
        reshape_transform: maps the layer output to ``(N, C, *S)`` (e.g. ViT tokens to a grid).
        max_iter: NMF iterations at most.
        tol: NMF stopping tolerance.
        generator: NMF initialization generator (default seed 0).
        dtype: NMF dtype.

    Returns:
        ``(concepts, maps)``: ``(C, K)`` and ``(N, K, *S_in)`` (``(N, K, *S)`` without ``upsample``),
        plus the concept scores ``(K, classes)`` when ``head`` is given.

    Raises:
        ValueError: for an unknown layer, several layers, a layer without spatial dims, bad options.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> concepts, maps, scores = deep_feature_factorization(
        ...     model, torch.rand(2, 3, 64, 64), "layer4", n_components=3, head=model.fc
        ... )
        >>> concepts.shape, maps.shape, scores.shape
        (torch.Size([512, 3]), torch.Size([2, 3, 64, 64]), torch.Size([3, 1000]))
    """
    if nonnegative not in ("relu", "shift"):
        raise ValueError(f"nonnegative must be 'relu' or 'shift', got {nonnegative!r}")
    if not isinstance(x, Tensor) or x.ndim < 3:
        raise ValueError(f"x must be a batch (N, C, *S), got {getattr(x, 'shape', type(x).__name__)}")
    names = resolve_layers(model, target_layer, tuple(x.shape[1:]))
    if len(names) != 1:
        raise ValueError(f"deep_feature_factorization takes one target layer, got {names}")
    with Capture(model, names) as capture, capture.recording(), eval_mode(model), torch.inference_mode():
        model(x)
        activation = capture.activations()[0]
    a = activation.clone()  # a normal tensor again, outside inference mode
    if reshape_transform is not None:
        a = reshape_transform(a)
    if a.ndim < 3:
        raise ValueError(
            f"layer {names[0]!r} outputs shape {tuple(a.shape)}, which has no spatial dims; pick a convolutional "
            "layer (or pass reshape_transform for token outputs)"
        )
    n, c, spatial = a.shape[0], a.shape[1], tuple(a.shape[2:])
    v = torch.nan_to_num(a.to(dtype), nan=0.0).transpose(0, 1).reshape(c, -1)
    offset = v.amin(dim=1, keepdim=True) if nonnegative == "shift" else None
    v = v - offset if offset is not None else torch.relu(v)
    w, h = nmf(v, n_components, max_iter=max_iter, tol=tol, generator=generator, dtype=dtype)
    concepts = w + offset if offset is not None else w
    maps = h.reshape(n_components, n, *spatial).transpose(0, 1)  # (N, K, *S)
    if normalized:
        maps = ops.normalize(maps.reshape(n * n_components, *spatial)).reshape(n, n_components, *spatial)
    if upsample:
        maps = ops.upsample(maps, tuple(x.shape[-len(spatial) :]))
    if head is None:
        return concepts, maps
    with torch.inference_mode():
        scores = head(concepts.T.to(activation.dtype))
    return concepts, maps, scores.clone()
