"""Gradient methods: weights from ``A`` and ``G = dY/dA`` (Grad-CAM and its descendants).

Each function is a weight function ``fn(A, G, ctx) -> w`` (see :mod:`camkit.registry`); the
formulas are in the docstrings of the extractor classes in :mod:`camkit.methods`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from camkit.registry import MethodContext, Option, register

__all__ = ["gradcam", "gradcampp", "layercam", "shapleycam", "smoothgradcampp", "xgradcam"]


def _spatial_sum(x: Tensor) -> Tensor:
    return x.flatten(2).sum(-1)


@register(
    "gradcam",
    class_name="GradCAM",
    peer_names=("GradCAM",),
    needs_gradients=True,
    family="gradient",
    summary="Channel weights = spatial mean of the gradient.",
    paper="Selvaraju et al., Grad-CAM, ICCV 2017",
)
def gradcam(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""Grad-CAM weights :math:`w_k = \frac{1}{|S|}\sum_{ij} \partial Y/\partial A_k(i,j)`."""
    return g.flatten(2).mean(-1)


def _tanh2(cam: Tensor) -> Tensor:
    """LayerCAM's scaling of a layer's map before fusing layers (eq. 9 of the paper, gamma = 2)."""
    return torch.tanh(2.0 * cam)


def _plusplus_weights(a: Tensor, g1: Tensor, g2: Tensor, g3: Tensor) -> Tensor:
    """Grad-CAM++ weights from the first three derivative estimates (powers of the gradient)."""
    total = _spatial_sum(a).reshape(*a.shape[:2], *([1] * (a.ndim - 2)))
    denom = 2 * g2 + total * g3
    ok = (g2 > 0) & (denom != 0)
    alpha = g2 / torch.where(ok, denom, float("inf"))  # 0 where the formula is undefined (g2 = 0 or denom = 0)
    return _spatial_sum(alpha * torch.relu(g1))


@register(
    "gradcampp",
    class_name="GradCAMpp",
    peer_names=("GradCAMPlusPlus",),
    notes=(
        "With :math:`\\alpha = 0` where :math:`g = 0` (higher derivatives taken as powers of the gradient, the "
        "exponential-output assumption of the paper). TorchCAM 0.5 never applies the alpha denominator (a bug); "
        "camkit applies the documented formula, as pytorch-grad-cam does."
    ),
    needs_gradients=True,
    family="gradient",
    summary="Grad-CAM++: gradients weighted by second/third-order alpha coefficients.",
    paper="Chattopadhay et al., Grad-CAM++, WACV 2018",
)
def gradcampp(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""Grad-CAM++ weights :math:`w_k = \sum_{ij} \alpha_k(i,j)\,\mathrm{ReLU}(g_k(i,j))`."""
    g2 = g * g
    return _plusplus_weights(a, g, g2, g2 * g)


@register(
    "xgradcam",
    class_name="XGradCAM",
    peer_names=("XGradCAM",),
    notes="A channel whose activations sum to 0 gets weight 0.",
    needs_gradients=True,
    family="gradient",
    summary="XGrad-CAM: gradients weighted by the activation normalized per channel.",
    paper="Fu et al., Axiom-based Grad-CAM, BMVC 2020",
)
def xgradcam(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""XGrad-CAM weights :math:`w_k = \sum_{ij} g_k(i,j) A_k(i,j) / \sum_{mn} A_k(m,n)`."""
    total = _spatial_sum(a)
    num = _spatial_sum(g * a)
    return num / torch.where(total != 0, total, float("inf"))  # weight 0 for a channel that sums to 0


@register(
    "layercam",
    class_name="LayerCAM",
    peer_names=("LayerCAM",),
    fuse_scale=_tanh2,
    notes="``fuse_cams`` scales each layer's map by :math:`\\tanh(2 L)` (eq. 9 of the paper) before the maximum.",
    needs_gradients=True,
    family="gradient",
    summary="LayerCAM: element-wise positive gradients as spatial weights; good on shallow layers.",
    paper="Jiang et al., LayerCAM, IEEE TIP 2021",
)
def layercam(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""LayerCAM spatial weights :math:`w_k(i,j) = \mathrm{ReLU}(g_k(i,j))`."""
    return torch.relu(g)


@register(
    "smoothgradcampp",
    class_name="SmoothGradCAMpp",
    options={
        "num_samples": Option(4, (int,), "number of noisy copies of the input"),
        "std": Option(0.3, (float, int), "standard deviation of the Gaussian noise, in input units"),
        "generator": Option(None, (torch.Generator,), "a torch.Generator for reproducible noise"),
    },
    positional=("num_samples", "std"),
    cost="num_samples",
    notes=(
        "Derivatives are averaged over ``num_samples`` noisy copies of the input (run by camkit in eval mode, "
        "``batch_size`` copies per forward); :math:`A` is the activation of the clean input. TorchCAM 0.5 uses the "
        "last noisy sample's activation and gradient instead. ``scores`` are not needed."
    ),
    needs_gradients=False,  # its gradients come from its own noisy forwards (ctx.probe), not from the engine
    needs_scores=False,
    needs_input=True,
    family="gradient",
    summary="Smooth Grad-CAM++: Grad-CAM++ with derivatives averaged over noisy copies of the input.",
    paper="Omeiza et al., Smooth Grad-CAM++, arXiv:1908.01224, 2019",
)
def smoothgradcampp(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""Smooth Grad-CAM++ weights from :math:`D^{(p)} = \frac1n\sum_m g_m^p` over ``num_samples`` noisy inputs."""
    x, probe = ctx.input, ctx.probe
    if x is None or probe is None:
        raise ValueError("smoothgradcampp needs the model input: run the forward after creating the extractor")
    num_samples = int(ctx.options["num_samples"])
    std = float(ctx.options["std"])
    generator = ctx.options["generator"]
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    n = x.shape[0]
    moments = [torch.zeros_like(a) for _ in range(3)]
    rows = torch.arange(n, device=x.device).repeat(num_samples)
    per_chunk = max(1, probe.batch_size // max(n, 1)) * max(n, 1)  # an empty batch runs no forward
    for start in range(0, rows.numel(), per_chunk):
        chunk = rows[start : start + per_chunk]
        noise = torch.randn((chunk.numel(), *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
        _, grad = probe.gradients(x[chunk] + std * noise, chunk)
        grad = grad.to(a.dtype).view(-1, *a.shape)
        for p, moment in enumerate(moments, start=1):
            moment += grad.pow(p).sum(0)
    g1, g2, g3 = (m / num_samples for m in moments)
    return _plusplus_weights(a, g1, g2, g3)


@register(
    "shapleycam",
    class_name="ShapleyCAM",
    peer_names=("ShapleyCAM",),
    notes=(
        "The engine takes the gradient with ``create_graph=True`` and one more ``autograd.grad`` for the "
        "Hessian-vector product."
    ),
    needs_gradients=True,
    needs_hvp=True,
    family="gradient",
    summary="ShapleyCAM: channel weights = spatial mean of g - H·A/2 (gradient and Hessian-vector product).",
    paper="Cai et al., CAMs as Shapley Value-based Explainers, arXiv:2501.06261, 2025",
)
def shapleycam(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""ShapleyCAM weights :math:`w_k = \frac{1}{|S|}\sum_{ij} \big(g_k(i,j) - \tfrac12 (H A)_k(i,j)\big)`.

    :math:`H` is the Hessian of the target score with respect to the activation; for a
    piecewise-linear network after the layer :math:`H A = 0` and ShapleyCAM equals Grad-CAM.
    """
    hvp = ctx.hvp if ctx.hvp is not None else torch.zeros_like(a)
    return (g - 0.5 * hvp).flatten(2).mean(-1)
