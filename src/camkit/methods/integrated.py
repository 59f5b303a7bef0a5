r"""Path and scale integrals of activations and gradients: Integrated Grad-CAM and CAMERAS.

Both methods re-run the model on inputs derived from the captured one (``ctx.probe.gradients``:
one forward and one backward per batch of ``batch_size`` derived inputs, in eval mode) and read
the activation :math:`A` of the target layer and its gradient :math:`g = \partial Y / \partial A`
at each of them.

* Integrated Grad-CAM integrates the Grad-CAM gradient along the straight path from a baseline
  input :math:`x'` to the input :math:`x`, so that the weights measure the whole change of the
  score rather than its slope at :math:`x` (the sensitivity axiom of Integrated Gradients).
* CAMERAS averages the activations and the gradients of the input upsampled to several
  resolutions, each brought back to the input's resolution, and multiplies the two averages: a
  map at the input's resolution.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camkit.methods import IntegratedGradCAM
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> with IntegratedGradCAM(model, "0", steps=8) as extractor:
    ...     cams = extractor([0, 1], model(torch.rand(2, 3, 8, 8)))
    >>> cams[0].shape
    torch.Size([2, 6, 6])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from camkit.ops import upsample
from camkit.registry import MethodContext, Option, Probe, register

__all__ = ["cameras", "cameras_scales", "integratedgradcam", "sum_at_input"]

#: activations and gradients upsampled per step of CAMERAS' channel loop are capped at this many elements
_CHUNK_ELEMENTS = 2**23


def _needs_input(ctx: MethodContext, name: str) -> tuple[Tensor, Probe]:
    x, probe = ctx.input, ctx.probe
    if x is None or probe is None:
        raise ValueError(f"{name} re-runs the model on its input: run the forward after creating the extractor")
    return x, probe


def _positive(ctx: MethodContext, key: str) -> int:
    value = ctx.options[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive int, got {value!r}")
    return value


def _baseline(x: Tensor, value: object) -> Tensor:
    """The baseline input of Integrated Grad-CAM, broadcast to ``x`` (``None``: zeros)."""
    if value is None:
        return torch.zeros_like(x)
    if isinstance(value, Tensor):
        try:
            return value.to(device=x.device, dtype=x.dtype).expand_as(x)
        except RuntimeError:
            raise ValueError(
                f"baseline of shape {tuple(value.shape)} does not broadcast to the input's shape {tuple(x.shape)}"
            ) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full_like(x, float(value))
    raise TypeError(f"baseline must be None, a number or a tensor, got {type(value).__name__}")


@register(
    "integratedgradcam",
    class_name="IntegratedGradCAM",
    options={
        "steps": Option(50, (int,), "points on the path from the baseline to the input (the authors' setting)"),
        "baseline": Option(None, (Tensor, float, int), "the baseline input x' (a number or a tensor); None: zeros"),
    },
    cost="steps + 1",
    notes=(
        "The ``steps`` path inputs :math:`x_m` and the baseline itself are run ``batch_size`` per forward (one "
        "forward and one backward each, in eval mode); :math:`A(x)` is the activation of the captured forward and "
        ":math:`A(x')` that of the baseline. The gradients are those of the target score at each path input, so "
        "``scores`` are not needed. With a baseline whose activation is zero (a zero input to a bias-free network) "
        "the map is Grad-CAM with the path-averaged gradient; for a network that is linear after the target layer "
        "it sums over positions to :math:`Y(x) - Y(x')` when the gradient is constant over space."
    ),
    needs_gradients=False,  # the gradients come from its own path forwards (ctx.probe), not from the engine
    needs_scores=False,
    needs_input=True,
    output="map",
    family="gradient",
    summary="Integrated Grad-CAM: Grad-CAM weights integrated along the path from a baseline to the input.",
    paper=(
        "Sattarzadeh et al., Integrated Grad-CAM: Sensitivity-Aware Visual Explanation of Deep Convolutional "
        "Networks via Integrated Gradient-Based Scoring, ICASSP 2021 (arXiv:2102.07805)"
    ),
)
def integratedgradcam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""Integrated Grad-CAM: path-integrated Grad-CAM weights on the activation's change from the baseline.

    .. math::
        L^{(c)} = \mathrm{ReLU}\Big(\sum_k w_k \big(A_k(x) - A_k(x')\big)\Big), \qquad
        w_k = \frac{1}{M}\sum_{m=1}^{M} \frac{1}{|S|}\sum_{ij}
            \frac{\partial Y^{(c)}(x_m)}{\partial A_k(i,j)}, \qquad x_m = x' + \tfrac{m}{M}(x - x')

    with :math:`M` = ``steps`` and the baseline :math:`x'` = ``baseline`` (zeros by default): the
    Riemann sum of the path integral of the Grad-CAM weight, applied to the change of the
    activation along the path (the feature-space counterpart of Integrated Gradients' :math:`x - x'`).
    """
    x, probe = _needs_input(ctx, "integratedgradcam")
    steps = _positive(ctx, "steps")
    base = _baseline(x, ctx.options["baseline"])
    n = x.shape[0]
    # row r: path point m = r // n (m = 0 is the baseline itself), sample r % n
    alphas = torch.arange(steps + 1, dtype=torch.float64, device=x.device) / steps
    grad_sum = torch.zeros_like(a)
    a_base = torch.zeros_like(a)
    for _, part in probe.chunks((steps + 1) * n, label="path inputs"):
        rows = torch.arange(part.start, part.stop, device=x.device)
        point, sample = rows // n, rows % n
        alpha = alphas[point].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        act, grad = probe.gradients(base[sample] + alpha * (x[sample] - base[sample]), sample)
        act, grad = act.to(a.dtype), grad.to(a.dtype)
        on_path = point > 0
        grad_sum.index_add_(0, sample[on_path].to(a.device), grad[on_path.to(grad.device)])
        at_base = point == 0
        a_base[sample[at_base].to(a.device)] = act[at_base.to(act.device)]
    weights = grad_sum.flatten(2).mean(-1) / steps
    delta = a - a_base
    return (weights.view(*weights.shape, *([1] * (a.ndim - 2))) * delta).sum(1)


def cameras_scales(size: Sequence[int], num_scales: int, step: int) -> list[tuple[int, ...]]:
    r"""The input sizes CAMERAS runs: the input's, then larger by ``step / 224`` of it each time.

    ``step`` is in pixels of the paper's 224 px input (224, 324, ..., 924 for 8 scales and a step of
    100); other sizes grow by the same factors, :math:`1 + n \cdot step / 224`, and every side by the
    same factor, so the aspect ratio is kept. A small input (a 32 px image, a 4-frame clip) is thus
    enlarged as much as the paper's images are, not by hundreds of pixels.

    Args:
        size: the input's spatial size.
        num_scales: how many sizes (the input's included).
        step: pixels added per scale at the paper's 224 px.

    Returns:
        ``num_scales`` sizes, the input's first.

    Example:
        >>> cameras_scales((224, 224), 3, 100)
        [(224, 224), (324, 324), (424, 424)]
        >>> cameras_scales((112, 224), 2, 100)
        [(112, 224), (162, 324)]
    """
    return [tuple(round(s * (1 + n * step / 224)) for s in size) for n in range(num_scales)]


def _resize_input(x: Tensor, size: tuple[int, ...]) -> Tensor:
    """The input at ``size``: bicubic for images (as the paper), (tri)linear for signals and volumes.

    Each channel is interpolated relative to its minimum, added back afterwards, so that a constant
    channel stays exactly constant (as :func:`camkit.ops.upsample` does for maps).
    """
    if tuple(x.shape[2:]) == size:
        return x
    mode = {1: "linear", 2: "bicubic", 3: "trilinear"}.get(len(size))
    if mode is None:
        raise ValueError(f"cameras resizes 1-D, 2-D or 3-D inputs, got an input of shape {tuple(x.shape)}")
    low = x.amin(dim=tuple(range(2, x.ndim)), keepdim=True)
    return F.interpolate(x - low, size=size, mode=mode, align_corners=False).add_(low)


def sum_at_input(maps: Sequence[Tensor], x: Tensor | None, grad: Tensor | None) -> Tensor:
    """The one map of methods whose every layer's map is already at the input's size: their sum.

    Args:
        maps: one map ``(N, *S_in)`` per target layer.
        x: the model input (unused).
        grad: its gradient (unused).

    Returns:
        ``(N, *S_in)``.
    """
    total = maps[0]
    for cam in maps[1:]:
        total = total + upsample(cam, total.shape[1:])
    return total


@register(
    "cameras",
    class_name="CAMERAS",
    options={
        "num_scales": Option(8, (int,), "input resolutions, the input's own included (the paper: 224 to 924)"),
        "step": Option(100, (int,), "pixels added per resolution at the paper's 224 px (other sizes: same factor)"),
    },
    cost="num_scales",
    reduce=sum_at_input,
    notes=(
        "Each resolution is one forward and one backward of the whole batch (images upsampled bicubically, "
        "activations and gradients bilinearly), in eval mode; ``scores`` are not needed. The map is at the input's "
        "resolution; with several target layers it is the sum of their maps. The authors' code skips a resolution "
        "whose top-1 class differs from both the input's and the explained class; camkit explains any target "
        "and averages every resolution. A model that refuses larger inputs (a vision transformer with a fixed "
        "position embedding) gets a warning and the resolutions it accepted."
    ),
    needs_gradients=False,
    needs_scores=False,
    needs_input=True,
    output="map",
    family="gradient",
    summary="CAMERAS: activations x gradients, each averaged over upsampled inputs, at the input's resolution.",
    paper=(
        "Jalwana et al., CAMERAS: Enhanced Resolution And Sanity preserving Class Activation Mapping for image "
        "saliency, CVPR 2021 (arXiv:2106.10649)"
    ),
)
def cameras(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""CAMERAS: the product of the multi-resolution means of activations and gradients.

    .. math::
        L^{(c)} = \mathrm{ReLU}\Big(\sum_k \bar A_k \odot \bar g_k\Big), \qquad
        \bar A_k = \frac1R\sum_{r=1}^{R} U\big(A_k(x^{(r)})\big), \qquad
        \bar g_k = \frac1R\sum_{r=1}^{R} U\Big(\frac{\partial Y^{(c)}(x^{(r)})}{\partial A_k}\Big)

    where :math:`x^{(r)}` is the input upsampled to the :math:`r`-th resolution
    (:func:`cameras_scales`: :math:`R` = ``num_scales`` sizes, each larger by ``step / 224`` of
    the input) and :math:`U` resizes a map to the input's resolution. The means are taken before the
    product: the accumulated activations times the accumulated gradients.
    """
    x, probe = _needs_input(ctx, "cameras")
    num_scales = _positive(ctx, "num_scales")
    step = _positive(ctx, "step")
    size = tuple(int(s) for s in x.shape[2:])
    rows = torch.arange(x.shape[0], device=x.device)
    found: list[tuple[Tensor, Tensor]] = []
    for scale in cameras_scales(size, num_scales, step):
        try:
            act, grad = probe.gradients(_resize_input(x, scale), rows)
        except (RuntimeError, ValueError, AssertionError) as error:
            if not found:
                raise
            warnings.warn(
                f"cameras: the model did not run on inputs of size {scale} ({error}); using the "
                f"{len(found)} resolution(s) it accepted",
                UserWarning,
                stacklevel=2,
            )
            break
        found.append((act.to(a.dtype), grad.to(a.dtype)))
    n, channels = a.shape[:2]
    cam = torch.zeros(n, *size, dtype=a.dtype, device=a.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n * math.prod(size)))
    for start in range(0, channels, chunk):
        part = slice(start, min(start + chunk, channels))
        mean_a = torch.stack([upsample(act[:, part], size) for act, _ in found]).mean(0)
        mean_g = torch.stack([upsample(grad[:, part], size) for _, grad in found]).mean(0)
        cam += (mean_a * mean_g).sum(1)
    return cam
