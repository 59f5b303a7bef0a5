r"""Tail-only re-forwards of a detector: run what precedes a layer once, then only what follows it.

Ablation-CAM (:mod:`camkit.detect._ablation`) re-runs a detector on ``B`` copies of one image
whose target-layer output differs only in the ablated channel. Everything before the layer is
the same for every copy, so :func:`tail_run` computes it ONCE at batch 1 and returns a
:class:`TailRun`: the layer's output :math:`A` (batch 1), the image's
:class:`~camkit.detect.Frame`, and a callable that takes ``B`` replacement outputs
:math:`A'_1 \dots A'_B` and runs only the rest of the detector at batch ``B`` (raw output the
adapter decodes). Tensors computed before the layer that the rest still reads (a skip connection,
another pyramid level, the resized image) are expanded from batch 1 to ``B`` (views, no copies).

Known structures (anything else: ``None``, and the caller re-runs the whole detector):

* torchvision ``GeneralizedRCNN`` (Faster/Mask/Keypoint R-CNN) with the layer ``backbone``,
  ``backbone.fpn``, ``backbone.body`` or a child ``backbone.body.<name>`` of an
  ``IntermediateLayerGetter`` body: the transform and the backbone up to the layer run once; the
  tail is the rest of the body, the FPN, ``rpn``, ``roi_heads`` and ``transform.postprocess`` on an
  ``ImageList`` of ``B`` expanded copies;
* torchvision ``RetinaNet``, ``FCOS`` (head, anchors, ``postprocess_detections``) and ``SSD`` with the
  same layers (SSD: ``backbone`` only);
* Ultralytics ``DetectionModel`` with the layer ``model.<i>`` (one of its top-level layers): the
  layers up to ``i`` run once with every output kept; the tail runs layers ``i+1 …`` in order
  (each reads ``m.f``), expanding kept batch-1 outputs to ``B`` where a layer joins several inputs.

The caller checks the tail against a full forward before trusting it (see
:func:`camkit.detect._ablation.ablation_maps`).

Example:
    >>> import torch
    >>> from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn
    >>> from camkit.detect import adapter_for
    >>> model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=3).eval()
    >>> with torch.inference_mode():
    ...     run = tail_run(adapter_for(model), "backbone", torch.rand(3, 64, 64))
    ...     out = run({k: v.expand(2, -1, -1, -1) for k, v in run.activation.items()})
    >>> len(out), sorted(out[0])
    (2, ['boxes', 'labels', 'scores'])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from camkit.detect._adapters import DetectorAdapter, TorchvisionAdapter, YoloAdapter, _pad_batch
from camkit.detect._types import Frame

__all__ = ["TailRun", "expand_batch", "tail_run"]


@dataclass
class TailRun:
    """What precedes the layer, computed once; :meth:`__call__` runs what follows.

    Attributes:
        activation: the layer's output for the image (batch 1): a tensor or a dict of tensors.
        frame: where the image sits in the batch tensor the layers saw.
        tail: replacement outputs (batch ``B``) → the detector's raw output for ``B`` images.
        path: what runs in the tail, for logs (``"torchvision rpn+roi_heads"``, ...).
    """

    activation: Any
    frame: Frame
    tail: Callable[[Any], Any]
    path: str

    def __call__(self, replaced: Any) -> Any:
        """The detector's raw output when the layer outputs ``replaced`` (batch ``B``)."""
        return self.tail(replaced)


def expand_batch(value: Any, batch: int) -> Any:
    """``value`` (a tensor, or a list/tuple/dict of them) with batch-1 tensors expanded to ``batch`` rows (views).

    Example:
        >>> import torch
        >>> [t.shape[0] for t in expand_batch([torch.zeros(1, 2), torch.zeros(3, 2)], 3)]
        [3, 3]
    """
    if isinstance(value, Tensor):
        return value.expand(batch, *value.shape[1:]) if value.ndim and value.shape[0] == 1 and batch > 1 else value
    if isinstance(value, Mapping):
        return OrderedDict((key, expand_batch(item, batch)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return type(value)(expand_batch(item, batch) for item in value)
    return value


def _batch_of(value: Any) -> int:
    """The batch of a tensor or of the first tensor of a structure."""
    if isinstance(value, Tensor):
        return int(value.shape[0])
    items = list(value.values()) if isinstance(value, Mapping) else list(value)
    return _batch_of(items[0])


def tail_run(adapter: DetectorAdapter, name: str, image: Tensor) -> TailRun | None:
    """The tail-only re-forward of ``adapter``'s detector at layer ``name`` for one image, or ``None``.

    Runs the part before the layer (under the caller's grad mode; call it in
    ``torch.inference_mode``). ``None`` when camkit does not know what follows the layer.

    Args:
        adapter: the detector's adapter (session entered: eval mode).
        name: the layer's dotted name in ``adapter.module``.
        image: ``(3, H, W)`` in ``[0, 1]``.

    Returns:
        The :class:`TailRun`, or ``None``.
    """
    if isinstance(adapter, YoloAdapter):
        return _yolo(adapter, name, image)
    if type(adapter) is TorchvisionAdapter:
        return _torchvision(adapter, name, image)
    return None


# --------------------------------------------------------------------------------------------
# torchvision


def _backbone_prefix(backbone: nn.Module, name: str, pixels: Tensor) -> tuple[Any, Callable[[Any], Any]] | None:
    """``(layer output, rest)`` where ``rest(layer output at batch B)`` → the backbone's features dict.

    ``name`` is relative to the backbone (``""``: the backbone itself).
    """
    from torchvision.models._utils import IntermediateLayerGetter  # type: ignore[import-untyped]

    if name == "":
        return backbone(pixels), lambda out: out
    body, fpn = getattr(backbone, "body", None), getattr(backbone, "fpn", None)
    if not isinstance(body, IntermediateLayerGetter) or not isinstance(fpn, nn.Module):
        return None  # torchvision's BackboneWithFPN only
    if name == "fpn":
        return fpn(body(pixels)), lambda out: out
    if name == "body":
        return body(pixels), fpn
    child = name.removeprefix("body.")
    children = list(body.items())
    if child == name or child not in dict(children):
        return None
    kept: OrderedDict[str, Tensor] = OrderedDict()
    x = pixels
    stop = [n for n, _ in children].index(child)
    for key, module in children[: stop + 1]:
        x = module(x)
        if key in body.return_layers:
            kept[body.return_layers[key]] = x

    def rest(out: Tensor) -> Any:
        batch = int(out.shape[0])
        levels = OrderedDict((k, expand_batch(v, batch)) for k, v in kept.items())
        if child in body.return_layers:
            levels[body.return_layers[child]] = out
        y = out
        for key, module in children[stop + 1 :]:
            y = module(y)
            if key in body.return_layers:
                levels[body.return_layers[key]] = y
        return fpn(levels)

    return x, rest


def _torchvision(adapter: TorchvisionAdapter, name: str, image: Tensor) -> TailRun | None:
    from torchvision.models.detection.fcos import FCOS  # type: ignore[import-untyped]
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN  # type: ignore[import-untyped]
    from torchvision.models.detection.image_list import ImageList  # type: ignore[import-untyped]
    from torchvision.models.detection.retinanet import RetinaNet  # type: ignore[import-untyped]
    from torchvision.models.detection.ssd import SSD  # type: ignore[import-untyped]

    model = adapter.model
    if not isinstance(model, GeneralizedRCNN | RetinaNet | FCOS | SSD):
        return None
    if name != "backbone" and not name.startswith("backbone."):
        return None
    if isinstance(model, SSD) and name != "backbone":
        return None
    (x,) = adapter.to_input([image])
    size = (int(x.shape[-2]), int(x.shape[-1]))
    images, _ = model.transform([x])
    frame = Frame(
        size, (int(images.image_sizes[0][0]), int(images.image_sizes[0][1])), tuple(images.tensors.shape[-2:])
    )
    found = _backbone_prefix(model.backbone, name.removeprefix("backbone").removeprefix("."), images.tensors)
    if found is None:
        return None
    activation, rest = found

    def features_of(replaced: Any) -> tuple[OrderedDict[str, Tensor], ImageList, int]:
        batch = _batch_of(replaced)
        features = rest(replaced)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        features = OrderedDict((k, expand_batch(v, batch)) for k, v in features.items())
        listed = ImageList(expand_batch(images.tensors, batch), list(images.image_sizes) * batch)
        return features, listed, batch

    if isinstance(model, GeneralizedRCNN):

        def rcnn(replaced: Any) -> Any:
            features, listed, batch = features_of(replaced)
            proposals, _ = model.rpn(listed, features)
            detections, _ = model.roi_heads(features, proposals, listed.image_sizes)
            return model.transform.postprocess(detections, listed.image_sizes, [size] * batch)

        return TailRun(activation, frame, rcnn, "torchvision rpn + roi_heads")

    def one_stage(replaced: Any) -> Any:
        features, listed, batch = features_of(replaced)
        levels = list(features.values())
        head_outputs = model.head(levels)
        anchors = model.anchor_generator(listed, levels)
        if isinstance(model, SSD):
            detections = model.postprocess_detections(head_outputs, anchors, listed.image_sizes)
        else:
            cells = [int(f.shape[-2] * f.shape[-1]) for f in levels]
            per_cell = int(head_outputs["cls_logits"].shape[1]) // sum(cells)  # anchors per location (FCOS: 1)
            counts = [c * per_cell for c in cells]
            split = {k: list(v.split(counts, dim=1)) for k, v in head_outputs.items()}
            detections = model.postprocess_detections(
                split, [list(a.split(counts)) for a in anchors], listed.image_sizes
            )
        return model.transform.postprocess(detections, listed.image_sizes, [size] * batch)

    return TailRun(activation, frame, one_stage, f"torchvision {type(model).__name__} head")


# --------------------------------------------------------------------------------------------
# Ultralytics


def _yolo(adapter: YoloAdapter, name: str, image: Tensor) -> TailRun | None:
    inner = adapter.module
    layers = getattr(inner, "model", None)
    index = name.removeprefix("model.")
    if not isinstance(layers, nn.Sequential) or index == name or not index.isdigit() or int(index) >= len(layers):
        return None
    stop = int(index)
    if any(not isinstance(getattr(m, "f", None), int | list) for m in layers):
        return None
    batch, padded = _pad_batch(adapter.to_input([image]), adapter._stride, 114 / 255)
    size = (int(image.shape[-2]), int(image.shape[-1]))

    def inputs(m: nn.Module, x: Any, kept: list[Any], rows: int) -> Any:
        if m.f == -1:
            return x
        if isinstance(m.f, int):
            return kept[m.f]
        return expand_batch([x if j == -1 else kept[j] for j in m.f], rows)  # type: ignore[union-attr]

    kept: list[Any] = []  # every layer's output (DetectionModel keeps only those in model.save)
    x: Any = batch
    for m in layers[: stop + 1]:
        x = m(inputs(m, x, kept, 1))
        kept.append(x)

    def tail(replaced: Tensor) -> Any:
        rows = int(replaced.shape[0])
        outs = [*kept[:stop], replaced]
        y: Any = replaced
        for m in layers[stop + 1 :]:
            y = m(inputs(m, y, outs, rows))
            outs.append(y)
        return y

    return TailRun(x, Frame(size, size, padded), tail, f"ultralytics layers {stop + 1}-{len(layers) - 1}")
