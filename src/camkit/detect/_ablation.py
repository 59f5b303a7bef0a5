r"""Ablation-CAM for detections: how much each channel of a layer carries each box's score.

Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
Gradient-free Localization", WACV 2020, applied per box: with :math:`y_b` the box score
(:mod:`camkit.detect._target`) and :math:`y_b^{(k)}` the same score when channel :math:`k` of
the target layer is set to ``value`` (0, the paper's choice),

.. math:: w_{b,k} = \frac{y_b - y_b^{(k)}}{y_b}, \qquad L_b = \mathrm{ReLU}\Big(\sum_k w_{b,k} A_k\Big)

What is batched: each forward carries ``batch_size`` ablated copies of one image (copy :math:`j`
has channel :math:`k_j` set to ``value``), and every box of the image is scored from the same
forwards, so an image costs :math:`\lceil C / \text{batch\_size} \rceil` forwards whatever its
number of boxes.

What is re-run (``reforward``): where camkit knows what follows the layer
(:mod:`camkit.detect._tail`: torchvision R-CNN/RetinaNet/FCOS/SSD at the backbone, Ultralytics
YOLO at a top-level layer), the detector before the layer runs ONCE per image and each forward
runs only the rest (``"auto"``/``"fast"``). The first image's first forward is checked against a
full forward (``allclose``, ``rtol=1e-4``, ``atol=1e-5·max|y|``); on a disagreement or an
error in the tail camkit logs it and re-runs the whole detector with the layer's output replaced
through the engine (:meth:`camkit.engine.Capture.replacing`), as it does for every other detector
(``"full"``).

A layer whose output is a dict of feature maps (a torchvision ``backbone``: the FPN levels) has
:math:`\sum_l C_l` channels, level by level (as pytorch-grad-cam's ``AblationLayerFasterRCNN``
counts them); its map sums the levels' maps :math:`\sum_{k \in l} w_{b,k} A_k`, each upsampled
(bilinear) to the finest level's grid, before the ReLU. ``max_channels=n`` ablates only the
:math:`n` channels of largest spatial variance (:func:`camkit.methods.score.select_channels`'s
rule) and gives the others weight 0.

Example:
    >>> import torch
    >>> weights = ablation_weights(torch.tensor([2.0, 1.0]), torch.tensor([[1.0, 1.0], [2.0, 0.5]]))
    >>> weights  # (channels, boxes): channel 0 carries half of box 0's score
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]])
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camkit.detect._adapters import DetectorAdapter
from camkit.detect._maps import to_pixels
from camkit.detect._tail import TailRun, tail_run
from camkit.detect._target import box_scores
from camkit.detect._types import Detections, Frame
from camkit.engine import Capture

__all__ = ["REFORWARD_MODES", "Levels", "ablation_maps", "ablation_weights"]

logger = logging.getLogger("camkit")

#: ``reforward=`` values: check the tail-only path and fall back (``"auto"``), tail only, whole detector
REFORWARD_MODES = ("auto", "fast", "full")


def ablation_weights(base: Tensor, ablated: Tensor) -> Tensor:
    """Relative score drops ``(C, K)`` from the base scores ``(K,)`` and the ablated ones ``(C, K)``.

    A box whose base score is 0 gets zero weights (its map is empty).
    """
    safe = torch.where(base.abs() > 0, base, torch.ones_like(base))
    return torch.where(base.abs() > 0, (base - ablated) / safe, torch.zeros_like(ablated))


class Levels:
    """A layer output of one image as channels: a ``(1, C, h, w)`` tensor or a dict of them (pyramid levels).

    Channels are numbered level by level (a dict's order), ``0 … C_total - 1``.

    Args:
        output: the layer's output for one image.
        name: the layer's name (for errors).

    Raises:
        ValueError: when the output is not a ``(1, C, h, w)`` tensor or a dict of them.
    """

    def __init__(self, output: Any, name: str) -> None:
        if isinstance(output, Tensor):
            self.keys: list[str] | None = None
            tensors = [output]
        elif isinstance(output, Mapping) and output and all(isinstance(v, Tensor) for v in output.values()):
            self.keys = [str(k) for k in output]
            tensors = list(output.values())
        else:
            tensors = []
        if not tensors or any(t.ndim != 4 or t.shape[0] != 1 for t in tensors):
            shape = (
                [tuple(t.shape) for t in tensors] if tensors else type(output).__name__  # what the layer gave
            )
            raise ValueError(
                f"ablationcam needs a layer with a (N, C, h, w) tensor output or a dict of them (pyramid levels); "
                f"{name!r} gives {shape}"
            )
        self.tensors = [t.detach() for t in tensors]
        self.sizes = [int(t.shape[1]) for t in self.tensors]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]

    @property
    def channels(self) -> int:
        """All channels of all levels."""
        return sum(self.sizes)

    def ablated(self, channels: Sequence[int], value: float, copy: bool = False) -> Any:
        """``len(channels)`` copies; copy ``j`` has channel ``channels[j]`` set to ``value`` (the layer's structure).

        A level with no ablated channel is a batch-1 tensor expanded (a view, no copy) unless
        ``copy`` (for a whole-detector re-run, whose layers may write into their input).
        """
        batch = len(channels)
        picked = torch.as_tensor(list(channels), dtype=torch.long)
        out = []
        for tensor, offset, size in zip(self.tensors, self.offsets, self.sizes, strict=True):
            inside = ((picked >= offset) & (picked < offset + size)).nonzero().flatten()
            level = tensor.expand(batch, *tensor.shape[1:])
            if inside.numel() or copy:
                level = level.clone()
                level[inside, picked[inside] - offset] = value
            out.append(level)
        if self.keys is None:
            return out[0]
        return OrderedDict(zip(self.keys, out, strict=True))

    def top_variance(self, count: int) -> list[int]:
        """The ``count`` channels of largest spatial variance (ties: lower index first), in index order."""
        variance = torch.cat([t[0].flatten(1).float().var(dim=1, correction=0) for t in self.tensors])
        order = variance.argsort(descending=True, stable=True)[:count]
        return sorted(order.tolist())

    def grid(self, weights: Tensor) -> Tensor:
        r"""Maps ``(K, h, w)`` on the finest level's grid.

        .. math:: L_b = \mathrm{ReLU}\Big(\sum_l \mathrm{up}\Big(\sum_{k \in l} w_{k,b} A_k\Big)\Big)

        Args:
            weights: ``(C_total, K)`` channel weights per box.
        """
        height = max(int(t.shape[-2]) for t in self.tensors)
        width = max(int(t.shape[-1]) for t in self.tensors)
        total = None
        for tensor, offset, size in zip(self.tensors, self.offsets, self.sizes, strict=True):
            part = torch.einsum("ck,chw->khw", weights[offset : offset + size].float(), tensor[0].float())
            if part.shape[-2:] != (height, width):
                part = F.interpolate(part[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
            total = part if total is None else total + part
        assert total is not None
        return torch.relu(total)


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
    max_channels: int | None = None,
    reforward: str = "auto",
) -> list[Tensor]:
    """Ablation-CAM maps ``(K, H, W)`` in ``[0, 1]`` of every image's boxes.

    Args:
        adapter: the detector's adapter (its session already entered).
        images: ``(3, H, W)`` images on the model's device.
        targets: per image, the boxes and labels to explain.
        layer: the target layer (a name or module of ``adapter.module``); its output must be a
            ``(N, C, h, w)`` tensor or a dict of them.
        value: what an ablated channel is set to.
        batch_size: ablated copies per forward.
        box_score: see :func:`camkit.detect.box_scores`.
        iou_threshold: see :func:`camkit.detect.box_scores`.
        max_channels: ablate only this many channels (largest spatial variance); ``None``: all.
        reforward: ``"auto"`` (tail-only where known, checked, else full), ``"fast"`` (tail only:
            raise where it does not apply) or ``"full"`` (the whole detector each time).

    Returns:
        Per image, the maps.

    Raises:
        ValueError: for a bad layer, batch size, ``max_channels`` or ``reforward``, or a layer
            whose output is not a ``(N, C, h, w)`` tensor or a dict of them.
    """
    for key, number in (("batch_size", batch_size), ("max_channels", max_channels)):
        if (number is not None or key == "batch_size") and (
            not isinstance(number, int) or isinstance(number, bool) or number < 1
        ):
            raise ValueError(f"ablationcam: {key} must be a positive int, got {number!r}")
    if reforward not in REFORWARD_MODES:
        raise ValueError(f"ablationcam: reforward must be one of {REFORWARD_MODES}, got {reforward!r}")
    name, _ = _module(adapter.module, layer)
    plan = _Plan(adapter, name, float(value), batch_size, box_score, float(iou_threshold), max_channels, reforward)
    maps = []
    for image, found in zip(images, targets, strict=True):
        if not len(found):
            maps.append(torch.zeros(0, *image.shape[-2:]))
            continue
        maps.append(plan.image(image, found))
    return maps


class _Disagreement(RuntimeError):
    """The tail-only scores differ from a full forward's."""


class _Plan:
    """One ablation run's settings; :meth:`image` explains one image's boxes."""

    def __init__(
        self,
        adapter: DetectorAdapter,
        name: str,
        value: float,
        batch_size: int,
        box_score: str,
        iou_threshold: float,
        max_channels: int | None,
        reforward: str,
    ) -> None:
        self.adapter = adapter
        self.name = name
        self.value = value
        self.batch_size = batch_size
        self.box_score = box_score
        self.iou_threshold = iou_threshold
        self.max_channels = max_channels
        self.reforward = reforward
        #: what the last image ran: "fast" (tail only) or "full"
        self.path: str | None = None
        #: the tail-only path agreed with a full forward once (checked on the first image only)
        self.checked = False
        #: the tail-only path failed or disagreed once: the next images run full forwards straight away
        self.broken = False

    def _scores(self, output: Any, frames: Sequence[Frame], found: Detections, rows: int) -> Tensor:
        """``(rows, K)`` box scores of a raw output of ``rows`` images."""
        decoded = self.adapter.decode(output, frames)
        if len(decoded) != rows:
            raise RuntimeError(f"the re-forward returned {len(decoded)} images' outputs for {rows} copies")
        return torch.stack(
            [box_scores(c, found.boxes, found.labels, self.box_score, self.iou_threshold) for c in decoded]
        )

    def _maps(
        self,
        levels: Levels,
        base: Tensor,
        run: Callable[[Any, int], Tensor],
        frame: Frame,
        first: Callable[[Any], None],
        copy: bool = False,
    ) -> Tensor:
        """Ablate the channels in chunks (``first`` sees the first chunk's replacement and scores), weigh, map."""
        picked = (
            list(range(levels.channels))
            if self.max_channels is None or self.max_channels >= levels.channels
            else levels.top_variance(self.max_channels)
        )
        drops = []
        for start in range(0, len(picked), self.batch_size):
            chunk = picked[start : start + self.batch_size]
            replaced = levels.ablated(chunk, self.value, copy)
            scores = run(replaced, len(chunk))
            if start == 0:
                first((replaced, scores))
            drops.append(scores)
        weights = torch.zeros(levels.channels, base.shape[0], device=base.device)
        weights[torch.as_tensor(picked, device=base.device)] = ablation_weights(base.float(), torch.cat(drops).float())
        return to_pixels(levels.grid(weights.to(levels.tensors[0].device)), frame)

    def _full_scores(self, capture: Capture, image: Tensor, found: Detections, replaced: Any, rows: int) -> Tensor:
        """Box scores of ``rows`` copies of the image run whole, the layer outputting ``replaced``."""
        with capture.replacing(0, replaced):
            output, frames = self.adapter.run([image] * rows)
        return self._scores(output, frames, found, rows)

    def image(self, image: Tensor, found: Detections) -> Tensor:
        """One image's ``(K, H, W)`` maps: the tail-only path where known and checked, else the full one."""
        # The engine's Capture hooks the layer: it records the base forward's output and, in
        # replacing(), hands the rest of the network the ablated copies (any batch, dicts included).
        with Capture(self.adapter.module, [self.name]) as capture, torch.inference_mode():
            if self.reforward != "full" and not self.broken:
                try:
                    run = tail_run(self.adapter, self.name, image)
                    if run is None:
                        if self.reforward == "fast":
                            raise RuntimeError(f"no tail-only re-forward is known for layer {self.name!r}")
                        logger.info(
                            "ablationcam: no tail-only re-forward for layer %r; running full forwards", self.name
                        )
                    else:
                        maps = self._fast(capture, run, image, found)
                        self.path = "fast"
                        return maps
                except Exception as error:  # the full path below is the reference: it raises real errors itself
                    if self.reforward == "fast":
                        raise
                    self.broken = True
                    logger.info("ablationcam: tail-only re-forward does not apply (%s); running full forwards", error)
            self.path = "full"
            return self._full(capture, image, found)

    def _fast(self, capture: Capture, run: TailRun, image: Tensor, found: Detections) -> Tensor:
        levels = Levels(run.activation, self.name)
        frames = [run.frame]
        base = self._scores(run(run.activation), frames, found, 1)[0]

        def tail(replaced: Any, rows: int) -> Tensor:
            return self._scores(run(replaced), frames * rows, found, rows)

        def check(pair: Any) -> None:
            if self.reforward == "fast" or self.checked:
                return
            replaced, scores = pair
            one = _first_row(replaced)
            full = self._full_scores(capture, image, found, one, 1)[0]
            scale = float(full.abs().max()) + 1e-12
            if not torch.allclose(scores[0].float(), full.float(), rtol=1e-4, atol=1e-5 * scale):
                raise _Disagreement(
                    f"{run.path}: max difference {float((scores[0] - full).abs().max()):.3g} to a full forward"
                )
            self.checked = True

        return self._maps(levels, base, tail, run.frame, check)

    def _full(self, capture: Capture, image: Tensor, found: Detections) -> Tensor:
        output, frames = self.adapter.run([image])
        base = self._scores(output, frames, found, 1)[0]
        levels = Levels(capture.activations()[0], self.name)

        def full(replaced: Any, rows: int) -> Tensor:
            return self._full_scores(capture, image, found, replaced, rows)

        return self._maps(levels, base, full, frames[0], lambda _pair: None, copy=True)


def _first_row(value: Any) -> Any:
    """The first copy of a replacement (a tensor or a dict of them)."""
    if isinstance(value, Tensor):
        return value[:1].clone()
    return OrderedDict((k, v[:1].clone()) for k, v in value.items())
