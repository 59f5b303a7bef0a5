r"""Projection methods (Eigen-CAM family), FEM and the random baseline.

The Eigen-CAM family returns the map itself (``output="map"``): the projection of each sample's
feature vectors (one per position, the rows of :math:`X \in \mathbb{R}^{|S| \times C}`, centred per
channel) on their first principal component, computed by
:func:`camkit.ops.first_component_projection`. A principal component has no intrinsic sign; camkit
fixes it so that the component points towards more activation (its channel entries sum to
:math:`\ge 0`), where pytorch-grad-cam keeps whatever sign LAPACK returns.

Notation: :math:`A_k(i,j)` is channel ``k`` of the target layer's activation and
:math:`g_k(i,j) = \partial Y^{(c)} / \partial A_k(i,j)` its gradient.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camkit.methods import EigenCAM
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> with EigenCAM(model, "0") as extractor:
    ...     cams = extractor([0, 1], model(torch.rand(2, 3, 8, 8)))
    >>> cams[0].shape
    torch.Size([2, 6, 6])
"""

from __future__ import annotations

import torch
from torch import Tensor

from camkit import ops
from camkit.registry import MethodContext, Option, register

__all__ = [
    "KERNELS",
    "eigencam",
    "eigengradcam",
    "fem",
    "kernel_matrix",
    "kpca_cam",
    "randomcam",
    "segeigencam",
]

KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")
"""Kernels of :func:`kpca_cam` (scikit-learn's definitions, ``coef0 = 1``, ``degree = 3``)."""

_EIGEN_PAPER = "Muhammad and Yeasin, Eigen-CAM: Class Activation Map using Principal Components, IJCNN 2020"


def _flip_to_larger_side(projection: Tensor) -> Tensor:
    """Negate each sample's map whose most negative value is larger in magnitude than its maximum."""
    flat = projection.flatten(1)
    flip = flat.amin(dim=1).abs() > flat.amax(dim=1).abs()
    sign = torch.where(flip, -1.0, 1.0).to(projection.dtype)
    return projection * sign.view(-1, *([1] * (projection.ndim - 1)))


@register(
    "eigencam",
    needs_target=False,
    class_name="EigenCAM",
    peer_names=("EigenCAM",),
    needs_gradients=False,
    output="map",
    family="activation",
    summary="Eigen-CAM: projection of the activations on their first principal component (no gradient).",
    paper=_EIGEN_PAPER,
)
def eigencam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""Eigen-CAM map: the activations projected on their first principal component.

    .. math:: L(i,j) = \mathrm{ReLU}\big(X v_1\big)_{(i,j)}, \qquad X = U \Sigma V^\top,\
        X_{(i,j),k} = A_k(i,j) - \tfrac{1}{|S|}\textstyle\sum_{ab} A_k(a,b)

    with the sign of :math:`v_1` fixed by :math:`\sum_k v_{1k} \ge 0`. Class-agnostic.
    Muhammad and Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020.
    """
    return ops.first_component_projection(a)


@register(
    "eigengradcam",
    class_name="EigenGradCAM",
    peer_names=("EigenGradCAM",),
    needs_gradients=True,
    output="map",
    family="gradient",
    summary="Eigen-Grad-CAM: first principal component of gradient x activation (class-discriminative).",
    paper="Gildenblat et al., pytorch-grad-cam (EigenGradCAM, after Eigen-CAM by Muhammad and Yeasin), GitHub, 2021",
)
def eigengradcam(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""Eigen-Grad-CAM map: Eigen-CAM's projection applied to :math:`g \odot A`.

    .. math:: L^{(c)} = \mathrm{ReLU}\big(\mathrm{proj}_{v_1}(g \odot A)\big)

    with the centring and sign rule of :func:`eigencam`. Introduced by pytorch-grad-cam
    (Gildenblat et al., GitHub, 2021) after Eigen-CAM (Muhammad and Yeasin, IJCNN 2020).
    """
    return ops.first_component_projection(g * a)


@register(
    "segeigencam",
    class_name="SegEigenCAM",
    peer_names=("SegEigenCAM",),
    needs_gradients=True,
    output="map",
    family="gradient",
    summary="Seg-Eigen-CAM: first principal component of |gradient| x activation, sign set by the larger side.",
    paper=(
        "Chung and Ying, Seg-Eigen-CAM: Eigen-Value-Based Visual Explanations for Semantic Segmentation "
        "Models, Applied Sciences 15(13) 7562, 2025"
    ),
)
def segeigencam(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""Seg-Eigen-CAM map: projection of :math:`|g| \odot A`, negated when its minimum dominates.

    .. math:: P = \mathrm{proj}_{v_1}(|g| \odot A), \qquad
        L^{(c)} = \mathrm{ReLU}\big(s P\big), \quad s = -1 \text{ if } |\min P| > |\max P| \text{ else } 1

    (eqs. 10-13). The correction makes the result independent of the SVD's sign except for
    exact ties. Chung and Ying, "Seg-Eigen-CAM: Eigen-Value-Based Visual Explanations for Semantic
    Segmentation Models", Applied Sciences 15(13) 7562, 2025.
    """
    return _flip_to_larger_side(ops.first_component_projection(g.abs() * a))


def kernel_matrix(x: Tensor, kernel: str, gamma: float) -> Tensor:
    """Gram matrices ``(N, P, P)`` of rows ``x`` ``(N, P, C)`` with scikit-learn's kernel definitions."""
    if kernel == "rbf":
        sq = x.pow(2).sum(-1)
        dist = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * (x @ x.transpose(1, 2))).clamp_min(0)
        dist = dist * (1 - torch.eye(x.shape[1], dtype=x.dtype, device=x.device))  # d(x, x) = 0 exactly
        return torch.exp(-gamma * dist)
    if kernel == "cosine":
        norm = x.norm(dim=-1, keepdim=True)
        x = x / torch.where(norm > 0, norm, torch.ones_like(norm))  # a zero row stays zero
    dot = x @ x.transpose(1, 2)
    if kernel == "poly":
        return (gamma * dot + 1.0) ** 3
    if kernel == "sigmoid":
        return torch.tanh(gamma * dot + 1.0)
    return dot  # linear, cosine


@register(
    "kpcacam",
    needs_target=False,
    class_name="KPCA_CAM",
    peer_names=("KPCA_CAM",),
    options={
        "kernel": Option("sigmoid", (str,), f"the kernel, one of {', '.join(KERNELS)}"),
        "gamma": Option(None, (), "the kernel's gamma, a number >= 0 (None: 1 / channels)"),
    },
    needs_gradients=False,
    output="map",
    family="activation",
    summary="KPCA-CAM: Eigen-CAM with kernel PCA (sigmoid, rbf, poly, linear or cosine kernel).",
    paper=(
        "Karmani et al., KPCA-CAM: Visual Explainability of Deep Computer Vision Models using Kernel PCA, "
        "IEEE MMSP 2024 (arXiv:2410.00267)"
    ),
)
def kpca_cam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""KPCA-CAM map: the positions' coordinates on the first kernel principal component.

    With the channel-centred rows :math:`X` of :func:`eigencam`, the Gram matrix
    :math:`K_{pq} = \kappa(x_p, x_q)` is centred, :math:`\tilde K = K - \mathbf{1}K - K\mathbf{1} +
    \mathbf{1}K\mathbf{1}` (:math:`\mathbf{1} = \frac{1}{|S|}` everywhere), and with its top eigenpair
    :math:`\tilde K \alpha = \lambda \alpha`, :math:`\lVert\alpha\rVert = 1`:

    .. math:: L(p) = \mathrm{ReLU}\big(s \sqrt{\max(\lambda, 0)}\, \alpha_p\big), \qquad
        s = \operatorname{sign}\Big(\sum_p \alpha_p \sum_k X_{pk}\Big) \ (+1 \text{ at } 0)

    (scikit-learn's ``fit_transform`` values). The sign rule is Eigen-CAM's (the component points
    towards more activation): for the linear kernel the map equals :func:`eigencam` exactly.
    Kernels (``kernel`` option, default ``"sigmoid"`` as in pytorch-grad-cam): ``sigmoid``
    :math:`\tanh(\gamma x^\top y + 1)`, ``rbf`` :math:`e^{-\gamma\lVert x-y\rVert^2}`, ``poly``
    :math:`(\gamma x^\top y + 1)^3`, ``linear`` :math:`x^\top y`, ``cosine``
    :math:`x^\top y / (\lVert x\rVert \lVert y\rVert)`; ``gamma`` defaults to :math:`1/C`. Costs one
    dense :math:`|S| \times |S|` eigen-decomposition per sample. Karmani et al., "KPCA-CAM: Visual
    Explainability of Deep Computer Vision Models using Kernel PCA", IEEE MMSP 2024.

    Raises:
        ValueError: for an unknown ``kernel`` or a negative ``gamma``.
    """
    kernel = ctx.options["kernel"]
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
    gamma = ctx.options["gamma"]
    if gamma is None:
        gamma = 1.0 / a.shape[1]
    elif isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0:
        raise ValueError(f"gamma must be a number >= 0 (default None: 1 / channels), got {gamma!r}")
    rows = torch.nan_to_num(a.flatten(2).transpose(1, 2), nan=0.0)  # (N, P, C)
    rows = rows - rows.mean(dim=1, keepdim=True)
    k = kernel_matrix(rows, kernel, gamma)
    k = k - k.mean(dim=1, keepdim=True) - k.mean(dim=2, keepdim=True) + k.mean(dim=(1, 2), keepdim=True)
    values, vectors = torch.linalg.eigh(k)  # ascending eigenvalues
    alpha = vectors[..., -1]  # (N, P)
    sign = torch.where((alpha * rows.sum(-1)).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(alpha.dtype)
    projection: Tensor = alpha * sign * values[..., -1:].clamp_min(0).sqrt()
    return projection.view(a.shape[0], *a.shape[2:])


@register(
    "fem",
    needs_target=False,
    class_name="FEM",
    peer_names=("FEM",),
    options={"k": Option(2.0, (float, int), "the threshold in standard deviations above the channel mean")},
    needs_gradients=False,
    family="activation",
    summary="FEM: channel weight = share of positions above the channel's mean + k std (no gradient).",
    paper=("Fuad et al., Features understanding in 3D CNNs for actions recognition in video, IPTA 2020"),
)
def fem(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""FEM channel weights: the fraction of positions where the channel exceeds its k-sigma threshold.

    .. math:: w_k = \frac{1}{|S|}\sum_{ij} \big[A_k(i,j) > \mu_k + k\,\sigma_k\big], \qquad
        L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big)

    with :math:`\mu_k`, :math:`\sigma_k` the mean and population standard deviation (ddof 0) of
    channel ``k`` over the positions, and ``k`` the option of that name (default 2). Fuad et al.,
    "Features understanding in 3D CNNs for actions recognition in video", IPTA 2020.
    """
    k = float(ctx.options["k"])
    flat = a.flatten(2)
    mean = flat.mean(dim=-1, keepdim=True)
    std = flat.std(dim=-1, correction=0, keepdim=True)
    return (flat > mean + k * std).to(a.dtype).mean(dim=-1)


@register(
    "randomcam",
    needs_target=False,
    class_name="RandomCAM",
    peer_names=("RandomCAM",),
    options={"generator": Option(None, (torch.Generator,), "a torch.Generator for reproducible weights")},
    needs_gradients=False,
    stochastic=True,
    family="activation",
    summary="Random-CAM: uniform random channel weights in [-1, 1), a sanity-check baseline.",
    paper="Gildenblat et al., pytorch-grad-cam (RandomCAM baseline), GitHub, 2021",
)
def randomcam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""Random channel weights, a baseline any real explanation should beat.

    .. math:: w_k \sim \mathcal{U}[-1, 1), \qquad L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big)

    drawn from the ``generator`` option when given (a ``torch.Generator``; the draw happens on its
    device), else from torch's global RNG. No gradient is computed (pytorch-grad-cam computes and
    ignores one). The RandomCAM baseline of pytorch-grad-cam (Gildenblat et al., GitHub, 2021).
    """
    generator = ctx.options["generator"]
    device = generator.device if generator is not None else a.device
    draw = torch.rand(a.shape[:2], generator=generator, device=device, dtype=a.dtype)
    return (2 * draw - 1).to(a.device)
