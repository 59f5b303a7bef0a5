r"""Ablation-CAM for detections: how much each channel of a layer carries each box's score.

Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
Gradient-free Localization", WACV 2020, applied per box: with :math:`y_b` the box score
(:mod:`camkit.detect._target`) and :math:`y_b^{(k)}` the same score when channel :math:`k` of
the target layer is set to ``value`` (0, the paper's choice),

.. math:: w_{b,k} = \frac{y_b - y_b^{(k)}}{y_b}, \qquad L_b = \mathrm{ReLU}\Big(\sum_k w_{b,k} A_k\Big)

The image is repeated once per ablated channel in each forward (``batch_size`` copies; a forward
hook on the layer replaces copy :math:`j`'s channel :math:`k_j`), and every box of the image is
scored from the same forwards, so an image costs :math:`\lceil C / \text{batch\_size} \rceil`
forwards whatever its number of boxes. The whole detector is re-run (its layers before the target
layer too): detectors' heads take several feature levels, so camkit does not cut them at the layer.

Example:
    >>> import torch
    >>> weights = ablation_weights(torch.tensor([2.0, 1.0]), torch.tensor([[1.0, 1.0], [2.0, 0.5]]))
    >>> weights  # (channels, boxes): channel 0 carries half of box 0's score
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camkit.detect._adapters import DetectorAdapter
from camkit.detect._maps import to_pixels
from camkit.detect._target import box_scores
from camkit.detect._types import Detections

__all__ = ["ablation_maps", "ablation_weights"]


def ablation_weights(base: Tensor, ablated: Tensor) -> Tensor:
    """Relative score drops ``(C, K)`` from the base scores ``(K,)`` and the ablated ones ``(C, K)``.

    A box whose base score is 0 gets zero weights (its map is empty).
    """
    safe = torch.where(base.abs() > 0, base, torch.ones_like(base))
    return torch.where(base.abs() > 0, (base - ablated) / safe, torch.zeros_like(ablated))


def _module(root: nn.Module, layer: Any) -> tuple[str, nn.Module]:
    if isinstance(layer, nn.Module):
        for name, module in root.named_modules():
            if module is layer:
                return name, module
        raise ValueError("target_layer is a module that is not part of the model")
    if isinstance(layer, list | tuple):
        if len(layer) != 1:
            raise ValueError(f"ablationcam explains one target layer, got {len(layer)}")
        return _module(root, layer[0])
    modules = dict(root.named_modules())
    if not isinstance(layer, str) or layer not in modules:
        close = [name for name in modules if name and str(layer) in name][:5]
        raise ValueError(f"target_layer {layer!r} is not a layer of the model" + (f"; close: {close}" if close else ""))
    return layer, modules[layer]


def ablation_maps(
    adapter: DetectorAdapter,
    images: Sequence[Tensor],
    targets: Sequence[Detections],
    layer: Any,
    *,
    value: float = 0.0,
    batch_size: int = 32,
    box_score: str = "product",
    iou_threshold: float = 0.5,
) -> list[Tensor]:
    """Ablation-CAM maps ``(K, H, W)`` in ``[0, 1]`` of every image's boxes.

    Args:
        adapter: the detector's adapter (its session already entered).
        images: ``(3, H, W)`` images on the model's device.
        targets: per image, the boxes and labels to explain.
        layer: the target layer (a name or module of ``adapter.module``); its output must be a tensor.
        value: what an ablated channel is set to.
        batch_size: ablated copies per forward.
        box_score: see :func:`camkit.detect.box_scores`.
        iou_threshold: see :func:`camkit.detect.box_scores`.

    Returns:
        Per image, the maps.

    Raises:
        ValueError: for a bad layer, batch size, or a layer whose output is not a ``(N, C, h, w)`` tensor.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"ablationcam: batch_size must be a positive int, got {batch_size!r}")
    name, module = _module(adapter.module, layer)
    maps = []
    for image, found in zip(images, targets, strict=True):
        if not len(found):
            maps.append(torch.zeros(0, *image.shape[-2:]))
            continue
        maps.append(_one_image(adapter, image, found, name, module, value, batch_size, box_score, iou_threshold))
    return maps


def _one_image(
    adapter: DetectorAdapter,
    image: Tensor,
    found: Detections,
    name: str,
    module: nn.Module,
    value: float,
    batch_size: int,
    box_score: str,
    iou_threshold: float,
) -> Tensor:
    """One image's box maps: the base forward (capturing the layer), then the ablated copies."""
    seen: list[Tensor] = []
    plan: list[int] = []  # copy j of the current forward ablates channel plan[j]

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if not isinstance(output, Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"ablationcam needs a layer with a (N, C, h, w) tensor output; {name!r} gives {shape}")
        if not plan:
            seen.append(output.detach())
            return None
        changed = output.clone()
        changed[torch.arange(len(plan)), torch.as_tensor(plan)] = value
        return changed

    def scores(output: Any, frames: Any) -> Tensor:
        decoded = adapter.decode(output, frames)
        return torch.stack([box_scores(c, found.boxes, found.labels, box_score, iou_threshold) for c in decoded])

    handle = module.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            output, frames = adapter.run([image])
            base = scores(output, frames)[0]
            activation = seen[0][0]  # (C, h, w)
            channels = activation.shape[0]
            drops = []
            for start in range(0, channels, batch_size):
                plan[:] = list(range(start, min(start + batch_size, channels)))
                drops.append(scores(*adapter.run([image] * len(plan))))
            plan.clear()
    finally:
        handle.remove()
    weights = ablation_weights(base.float(), torch.cat(drops).float())  # (C, K)
    grid = torch.relu(torch.einsum("ck,chw->khw", weights, activation.float()))
    return to_pixels(grid, frames[0])
