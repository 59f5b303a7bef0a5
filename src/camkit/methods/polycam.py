r"""Poly-CAM: Score-CAM-style maps of several layers fused into one map at the finest layer's resolution.

Englebert, Cornu and De Vleeschouwer, "Poly-CAM: High resolution class activation map for
convolutional neural networks", ICPR 2022 (arXiv:2204.13359).

Each target layer :math:`l` gets a gradient-free map :math:`M_l = \mathrm{ReLU}(\sum_k w^l_k A^l_k)`
whose channel weights come from the model's scores on the input masked by each channel (PCAM+,
PCAM- or PCAM±, see :func:`polycam`). The maps are then fused from the coarsest layer to the
finest (:func:`polycam_fuse`): the map so far is upsampled to the next layer's resolution and
multiplied by that layer's map after a local normalization, which keeps the coarse map's
class-discriminative evidence and adds the finer layer's detail inside it.

By default the layers are the last layer of every resolution stage of the network
(:func:`polycam_layers`, read from the model's structure): ``layer1`` to ``layer4`` of a torchvision ResNet
(plus the stem's last layer before its pooling), the last ReLU before each pooling of a VGG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camkit.engine import resolve_layers
from camkit.methods.score import all_channels, budgeted_masks
from camkit.ops import upsample
from camkit.registry import MethodContext, Option, register
from camkit.reshape import attention_kind, transformer_info

__all__ = ["VARIANTS", "local_normalization", "polycam", "polycam_fuse", "polycam_layers"]

_ADAPTIVE = (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
_POOLING = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, *_ADAPTIVE)

#: The channel weightings of the paper: PCAM+ (masked input), PCAM- (input with the mask removed), PCAM±.
VARIANTS = ("plus", "minus", "plusminus")


def _strided(module: nn.Module) -> bool:
    """A layer that lowers the resolution: a strided convolution or a strided (non-adaptive) pooling."""
    if isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd):
        return any(int(s) > 1 for s in module.stride)
    if isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        stride: Any = module.stride if module.stride is not None else module.kernel_size
        return any(int(s) > 1 for s in (stride if isinstance(stride, (tuple, list)) else (stride,)))
    return False


_PASSIVE = (nn.Identity, nn.modules.dropout._DropoutNd)


def _head(module: nn.Module) -> bool:
    """Whether ``module`` starts the head (nothing spatial after it).

    Its first layer (dropout and identities skipped) is an adaptive (global) pooling, a flatten or a
    linear layer. A block with a squeeze-excitation inside starts with a convolution: no head.
    """
    first = next((m for m in module.modules() if not list(m.children()) and not isinstance(m, _PASSIVE)), None)
    return isinstance(first, (*_ADAPTIVE, nn.Flatten, nn.Linear))


def _lowers(module: nn.Module) -> bool:
    """Whether ``module`` or a layer inside it lowers the resolution."""
    return any(_strided(m) for m in module.modules())


def polycam_layers(model: nn.Module) -> list[str]:
    """Poly-CAM's default layers: the last layer of each resolution stage, read from the model's structure.

    The model is read as a sequence of modules in definition order: its children, where a child is
    replaced by its own children (again and again) when one of them is a layer that lowers the
    resolution (a strided convolution or pooling) or ends the spatial part (adaptive pooling,
    flatten, linear), or when two or more of them contain such layers. A stage ends at the module
    just before a module that lowers the resolution, and the last stage at the module before the
    head (pooling layers themselves are not taken). A torchvision ResNet gives ``relu`` (the stem)
    and ``layer1`` to ``layer4``; a VGG16 the last ReLU before each max-pooling (``features.3`` ...
    ``features.29``, the authors' list); an EfficientNet the last block of each stage. No forward is
    run, so models of any input (signals, volumes, several inputs) work. A vision transformer (or
    a model where no stage is found) gets the automatic layer of :func:`camkit.engine.resolve_layers`
    (one dummy forward at the size it declares, else 224 x 224).

    Args:
        model: the model.

    Returns:
        Dotted module names, in definition order.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        ...                     nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        >>> polycam_layers(net)
        ['1', '4']
    """
    info = transformer_info(model)
    if info is None and not any(attention_kind(m) for m in model.modules()):
        names = {module: name for name, module in model.named_modules()}
        sequence = list(model.children())
        changed = True
        while changed:
            changed = False
            for i, module in enumerate(sequence):
                inner = list(module.children())
                leaves = [c for c in inner if not list(c.children())]
                if any(_strided(c) or _head(c) for c in leaves) or sum(_lowers(c) or _head(c) for c in inner) > 1:
                    sequence[i : i + 1] = inner
                    changed = True
                    break
        sequence = [m for m in sequence if not isinstance(m, _PASSIVE)]
        layers: list[str] = []
        for module, after in zip(sequence, [*sequence[1:], None], strict=True):
            if _head(module):
                break
            if (after is None or _lowers(after) or _head(after)) and not isinstance(module, _POOLING):
                layers.append(names[module])
        if layers:
            return layers
    size = info.image_size if info is not None and info.image_size is not None else (224, 224)
    return resolve_layers(model, None, (3, *size))


def _default_layers(model: Any) -> list[str]:
    return polycam_layers(model)


def local_normalization(cam: Tensor, size: Sequence[int]) -> Tensor:
    r"""Divide a map by its own local mean over the cells of a coarser grid (Poly-CAM's LNorm).

    .. math:: \mathrm{LNorm}(M, s) = M \,/\, \max\big(U(D_s(M)),\ 10^{-12}\big)

    :math:`D_s` averages ``cam`` over the cells of a grid of size ``s`` (area pooling) and :math:`U`
    resizes back (bilinear). The finer map then carries only how its values vary around its local
    mean, not its scale: multiplied into the upsampled coarse map, it sharpens the coarse map
    without changing its overall level (a flat map normalizes to 1).

    Args:
        cam: maps ``(N, *S)``.
        size: the coarser grid ``s``.

    Returns:
        ``(N, *S)``.

    Example:
        >>> local_normalization(torch.tensor([[[1.0, 3.0], [2.0, 2.0]]]), (1, 1))
        tensor([[[0.5000, 1.5000],
                 [1.0000, 1.0000]]])
    """
    pooled = F.interpolate(cam.unsqueeze(1), size=tuple(int(s) for s in size), mode="area")
    local = upsample(pooled, cam.shape[1:])[:, 0]
    return cam / local.clamp_min(1e-12)


def polycam_fuse(maps: Sequence[Tensor], x: Tensor | None, grad: Tensor | None) -> Tensor:
    r"""Poly-CAM's fusion of the layers' maps, from the coarsest to the finest, at the input's size.

    .. math::
        P_L = M_L, \qquad P_l = \mathrm{ReLU}\big(\mathrm{LNorm}(M_l, s_{l+1}) \odot U(P_{l+1})\big)

    with the maps :math:`M_l` ordered by resolution (coarsest :math:`L`), :math:`s_{l+1}` the size
    of :math:`P_{l+1}`, :math:`U` bilinear upsampling to :math:`M_l`'s size and
    :func:`local_normalization`. The finest :math:`P_1` is upsampled to the input's size.

    Args:
        maps: one ReLU'd map ``(N, *S_l)`` per target layer, in any order.
        x: the model input (its size is the output's).
        grad: unused.

    Returns:
        ``(N, *S_in)``.
    """
    ordered = sorted(maps, key=lambda m: m[0].numel())
    fused = ordered[0]
    for cam in ordered[1:]:
        fused = torch.relu(local_normalization(cam, fused.shape[1:]) * upsample(fused, cam.shape[1:]))
    return fused if x is None else upsample(fused, x.shape[2:])


def _variant(value: Any) -> str:
    if value not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(map(repr, VARIANTS))}, got {value!r}")
    return str(value)


@register(
    "polycam",
    class_name="PolyCAM",
    options={
        "variant": Option(
            "plusminus", (str,), "'plus' (PCAM+), 'minus' (PCAM-) or 'plusminus' (PCAM+-, the authors' example)"
        ),
        "max_channels": Option(None, (), "score only the K channels of largest variance per layer; None: all"),
    },
    positional=("batch_size",),
    layers=_default_layers,
    reduce=polycam_fuse,
    cost="2 * min(C, max_channels or C) + 1",
    notes=(
        "``target_layer=None`` takes :func:`~camkit.methods.polycam.polycam_layers` (the last layer of each "
        "resolution stage); a given list is fused the same way, ordered by resolution. The call returns a "
        "one-element list with the ``(N, *S_in)`` map. Masked inputs run in eval mode under ``inference_mode``, "
        "``batch_size`` per forward (the cost shown is PCAM+-'s: 2 per channel and layer, plus the clean input; "
        "PCAM+ needs 1 per channel; a flat channel, whose mask is 0, needs none: its inputs are the zero input and "
        "the input itself, scored once per sample). The weights are the target's scores: the paper scores the softmax "
        "probability, which ``targets=ClassProbabilityTarget(c)`` (``ClassifierOutputSoftmaxTarget``) gives; "
        "``class_idx`` scores the logit. Masks are min-max normalized per channel (the authors clip the 0.1% "
        "outliers first)."
    ),
    needs_gradients=False,
    needs_input=True,
    family="perturbation",
    summary="Poly-CAM: Score-CAM-style maps of every resolution stage fused into one high-resolution map.",
    paper=(
        "Englebert et al., Poly-CAM: High resolution class activation map for convolutional neural networks, "
        "ICPR 2022 (arXiv:2204.13359)"
    ),
)
def polycam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""Poly-CAM channel weights of one layer from the scores of masked inputs.

    .. math::
        w^{+}_k = Y(x \odot M_k), \qquad
        w^{-}_k = \mathrm{ReLU}\big(Y(x) - Y(x \odot (1 - M_k))\big), \qquad
        w^{\pm}_k = \mathrm{ReLU}\big(Y(x \odot M_k) + Y(x) - Y(x \odot (1 - M_k))\big)

    for PCAM+, PCAM- and PCAM± (``variant``), where :math:`M_k` is channel :math:`k` of the
    activation, min-max normalized and upsampled to the input's size. The layer's map
    :math:`\mathrm{ReLU}(\sum_k w_k A_k)` enters :func:`polycam_fuse` with the other layers'.
    """
    x, probe = ctx.input, ctx.probe
    if x is None or probe is None:
        raise ValueError("polycam re-runs the model on its input: run the forward after creating the extractor")
    variant = _variant(ctx.options["variant"])
    n, c = a.shape[:2]
    masks, keep = budgeted_masks(a, ctx.options.get("max_channels"))
    k = c if keep is None else keep.shape[1]
    sample_of = torch.arange(n, device=a.device).repeat_interleave(k)
    kinds = {"plus": [True], "minus": [False], "plusminus": [True, False]}[variant]
    scores = {kind: torch.zeros(n * k, dtype=a.dtype, device=a.device) for kind in kinds}
    samples = torch.arange(n, device=x.device)
    # a flat channel's mask is 0: its masked input is zero and, with the mask removed, the input itself,
    # whose scores are computed once per sample instead of once per channel
    flat = masks.flatten(1).amax(1) == 0
    todo = (~flat).nonzero().squeeze(1)
    for repeat, part in probe.chunks(todo.numel(), len(kinds), label="masked inputs"):
        kind, index = kinds[repeat], todo[part]
        mask = upsample(masks[index], x.shape[2:]).to(x.dtype)
        rows = sample_of[index].to(x.device)
        scores[kind][index] = probe.scores((mask if kind else 1 - mask) * x[rows], rows).to(a.dtype)
    if bool(flat.any()) and True in scores:
        zero = probe.scores(torch.zeros_like(x), samples).to(a.dtype).to(a.device)[sample_of]
        scores[True][flat] = zero[flat]
    if variant == "plus":
        weights = scores[True]
    else:
        clean = probe.scores(x, samples).to(a.dtype).to(a.device)[sample_of]
        scores[False][flat] = clean[flat]
        weights = torch.relu(scores.get(True, 0) + clean - scores[False])
    return all_channels(weights.view(n, k), keep, c)
