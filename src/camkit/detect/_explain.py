r"""``explain_detections``: one map per box, from any detector camkit has an adapter for.

Two kinds of method run per box:

* every gradient method of the registry (Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM,
  ...) and the class-agnostic ones (Eigen-CAM, KPCA-CAM, FEM, Random-CAM), through camkit's
  engine: one forward with hooks on the target layer, then per box column one
  ``torch.autograd.grad`` of the box score (:mod:`camkit.detect._target`) for all images at
  once. A class-agnostic map is the same for every box of an image;
* detection methods of their own (:data:`DETECTION_METHODS`): D-RISE, black-box, over any
  adapter, and Ablation-CAM per box (:mod:`camkit.detect._ablation`), which runs the detector
  before the layer once per image and only what follows it per chunk of ablated channels where
  the detector's structure is known (:mod:`camkit.detect._tail`), else the whole detector.

D-RISE is not in the classifier registry (:func:`camkit.register`): a registered method is a
weight function of one layer's activations and gradients for a class target, while D-RISE reads
no layer and needs the detector's decoded boxes and class vectors to weigh its masks. It is
registered here instead, with its options, and runs as ``method="drise"``.

Example:
    >>> import torch
    >>> from camkit.detect import detection_methods
    >>> "drise" in detection_methods() and "gradcam" in detection_methods()
    True
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from camkit.detect._adapters import DetectorAdapter, adapter_for
from camkit.detect._inputs import check_boxes, check_labels, given_targets, images_of, split_per_image, top_boxes
from camkit.detect._maps import normalize_maps, to_pixels
from camkit.detect._registry import DETECTION_METHODS, DetectionContext, detection_methods, engine_ready
from camkit.detect._result import DetectionExplanation
from camkit.detect._target import MODES, BoxColumn, BoxScores
from camkit.detect._types import Detections
from camkit.methods import extractor_class
from camkit.registry import MethodSpec, get_method

__all__ = ["explain_detections"]

#: engine switches explain_detections hands to the engine's extractors besides the method options
_SWITCHES = ("eigen_smooth", "reshape_transform")

# --------------------------------------------------------------------------------------------
# maps


def _layer_names(adapter: DetectorAdapter, layer: Any) -> list[str]:
    """The dotted names of ``layer`` (a name, a module, or a list of them) in the hooked module."""
    from camkit.engine import resolve_layers

    return list(resolve_layers(adapter.module, layer, (3, 64, 64)))


def _engine_maps(
    adapter: DetectorAdapter,
    spec: MethodSpec,
    images: list[Tensor],
    targets: list[Detections],
    layer: Any,
    options: Mapping[str, Any],
    box_score: str,
    iou_threshold: float,
) -> tuple[list[Tensor], list[str]]:
    """One registry method's per-box maps: one forward, one backward per box column (images batched)."""
    width = max(len(t) for t in targets)
    with extractor_class(spec)(adapter.module, target_layer=layer, **options) as extractor:
        names = list(extractor.target_names)
        if width == 0:
            return [image.new_zeros(0, *image.shape[-2:], dtype=torch.float32) for image in images], names
        with torch.set_grad_enabled(spec.needs_gradients):
            output, frames = adapter.run(images)
        columns: list[list[Tensor]] = []  # per box column, one (N, h, w) grid per layer
        if spec.needs_target:
            scores = BoxScores(
                lambda out: adapter.decode(out, frames),
                [t.boxes for t in targets],
                [t.labels for t in targets],
                box_score,
                iou_threshold,
            )
            for k in range(width):
                columns.append(
                    extractor(scores=output, targets=BoxColumn(scores, k), normalized=False, retain_graph=k < width - 1)
                )
        else:
            columns = [extractor(scores=output, normalized=False)] * width
    maps = []
    for i, (frame, found) in enumerate(zip(frames, targets, strict=True)):
        if not len(found):
            maps.append(torch.zeros(0, *frame.size))
            continue
        per_layer = [
            to_pixels(torch.stack([columns[k][layer_index][i] for k in range(len(found))]).detach(), frame)
            for layer_index in range(len(names))
        ]
        maps.append(normalize_maps(torch.stack(per_layer).mean(dim=0)))
    return maps, names


# --------------------------------------------------------------------------------------------
# the function


def _check_options(names: list[str], options: Mapping[str, Any]) -> None:
    declared = set(_SWITCHES)
    for name in names:
        declared |= set(DETECTION_METHODS[name].options if name in DETECTION_METHODS else get_method(name).options)
    for key in options:
        if key not in declared:
            close = difflib.get_close_matches(key, sorted(declared), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"explain_detections got an unexpected option {key!r} for method(s) {names}{hint} "
                f"(accepted: {', '.join(sorted(declared))})"
            )


def _method_names(method: str | Sequence[str]) -> list[str]:
    asked = [method] if isinstance(method, str) else list(method)
    if not asked:
        raise ValueError("method is empty: pass a method name or a list of them")
    names = []
    for name in asked:
        key = str(name).lower()
        if key in DETECTION_METHODS:
            names.append(key)
            continue
        accepted = ", ".join(detection_methods())
        try:
            spec = get_method(key)
        except (ValueError, KeyError):
            raise ValueError(f"method {name!r} is not a detection method; accepted: {accepted}") from None
        if not engine_ready(spec):
            raise ValueError(
                f"method {spec.name!r} is not available for detectors yet (it re-runs the model, reads several "
                f"layers or a classifier head); accepted: {accepted}"
            )
        names.append(spec.name)
    return list(dict.fromkeys(names))


def explain_detections(
    model: Any,
    images: Any,
    *,
    boxes: Any = None,
    labels: Any = None,
    method: str | Sequence[str] = "gradcam",
    target_layer: Any = None,
    score_threshold: float = 0.5,
    max_boxes: int | None = None,
    adapter: DetectorAdapter | type[DetectorAdapter] | None = None,
    box_score: str = "product",
    iou_threshold: float = 0.5,
    **options: Any,
) -> DetectionExplanation:
    r"""Explain a detector's boxes: one map per box, per method.

    With ``boxes=None`` the model's own detections scoring above ``score_threshold`` are
    explained; with ``boxes`` (and optionally ``labels``) those boxes are. A gradient method
    explains a box's score :math:`y_b = \mathrm{IoU}(b, \hat b_{j^*})\,\hat p_{j^*}[l]` (the
    best-matching prediction's class score times its overlap; ``box_score="sum"`` gives
    pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``), see :mod:`camkit.detect._target`. D-RISE
    (``method="drise"``) is black-box (Petsiuk et al., CVPR 2021). The model's train/eval flags,
    its parameters' ``.grad`` and its hooks are as before the call, errors included.

    Args:
        model: a detector: torchvision (Faster/Mask R-CNN, RetinaNet, FCOS, SSD/SSDlite, or any
            model taking a list of images and returning one ``boxes``/``labels``/``scores`` dict per
            image), an Ultralytics ``YOLO`` object or ``DetectionModel``, a Hugging Face
            ``...ForObjectDetection`` (see :mod:`camkit.detect._adapters`).
        images: a tensor ``(3, H, W)`` in ``[0, 1]``, a batch ``(N, 3, H, W)``, a PIL image, an
            image file, an ``(H, W, 3)`` uint8 array, or a list of them (sizes may differ).
        boxes: boxes to explain, ``(K, 4)`` xyxy in input pixels for one image, or one such array
            per image; ``None``: the model's detections above ``score_threshold``.
        labels: their class indices (``(K,)``, or one array per image); ``None`` with ``boxes``:
            each box takes the class of its best-matching prediction.
        method: a name or a list: gradient methods and Eigen-CAM/KPCA-CAM/FEM/Random-CAM of the
            registry, ``"ablationcam"`` or ``"drise"`` (see :func:`detection_methods`).
        target_layer: the layer (name or module of the hooked model); default: the adapter's.
        score_threshold: the lowest score of a detection explained when ``boxes`` is ``None``.
        max_boxes: explain at most this many of an image's detections, the highest-scoring
            (``None``: all above the threshold; given ``boxes`` are always all explained).
        adapter: an adapter (instance or class) instead of the automatic choice.
        box_score: ``"product"`` (IoU × class score) or ``"sum"`` (pytorch-grad-cam's IoU + score).
        iou_threshold: the IoU a ``"sum"`` match must exceed.
        **options: method options (``eigen_smooth``, ``num_masks``, ``cell_size``, ``p``,
            ``batch_size``, ``generator``, ``ablation_value``, ``max_channels``, ``reforward``, ...); each
            method gets those it declares.

    Returns:
        A :class:`DetectionExplanation`; images without boxes have empty maps ``(0, H, W)`` and a
        reason in ``reasons``.

    Raises:
        ValueError: for a box outside its image, a label out of range, mismatched boxes and
            labels, an unknown method, empty images.
        TypeError: for an unknown option or an unsupported input type.

    Example:
        >>> import torch
        >>> class Toy(torch.nn.Module):  # torchvision's convention: a list of images in, a dict per image out
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body = torch.nn.Conv2d(3, 4, 3, padding=1)
        ...     def forward(self, images):
        ...         score = self.body(torch.stack(images))[:, :, 4:20, 4:20].mean((1, 2, 3)).sigmoid()
        ...         box = torch.tensor([[4.0, 4.0, 20.0, 20.0]])
        ...         return [{"boxes": box, "labels": torch.tensor([1]), "scores": s[None]} for s in score]
        >>> result = explain_detections(Toy(), torch.rand(2, 3, 32, 32), score_threshold=0.0,
        ...                             method=["gradcam", "drise"], target_layer="body", num_masks=16)
        >>> [tuple(m.shape) for m in result.maps["gradcam"]], result.detections[0].labels.tolist()
        ([(1, 32, 32), (1, 32, 32)], [1])
    """
    names = _method_names(method)
    _check_options(names, options)
    if box_score not in MODES:
        raise ValueError(f"box_score must be one of {', '.join(MODES)}, got {box_score!r}")
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, int | float):
        raise TypeError(f"score_threshold must be a number, got {type(score_threshold).__name__}")
    if max_boxes is not None and (not isinstance(max_boxes, int) or isinstance(max_boxes, bool) or max_boxes < 1):
        raise ValueError(f"max_boxes must be a positive int or None, got {max_boxes!r}")
    found_adapter = adapter_for(model, adapter)
    pictures = images_of(images)
    given_boxes = None
    given_labels = None
    if boxes is not None:
        given_boxes = check_boxes(split_per_image(boxes, len(pictures), "boxes", 4), pictures)
        if labels is not None:
            given_labels = check_labels(
                split_per_image(labels, len(pictures), "labels", None), given_boxes, found_adapter.num_classes
            )
    elif labels is not None:
        raise ValueError("labels= needs boxes=: pass the boxes the labels belong to (or neither)")
    engine = any(name not in DETECTION_METHODS or DETECTION_METHODS[name].needs_layer for name in names)
    layer = target_layer if target_layer is not None or not engine else found_adapter.default_layer()
    with found_adapter.session():
        inputs = found_adapter.to_input(pictures)
        with torch.no_grad():
            output, frames = found_adapter.run(inputs)
            candidates = found_adapter.decode(output, frames)
            reasons: list[str | None] = []
            if given_boxes is None:
                targets = found_adapter.detect(candidates, float(score_threshold))
                if max_boxes is not None:
                    targets = [top_boxes(t, max_boxes) for t in targets]
                for cand, found in zip(candidates, targets, strict=True):
                    top = float(cand.probs.max()) if cand.probs.numel() else None
                    best = f"the highest was {top:.3g}" if top is not None else "the model returned no boxes"
                    reasons.append(
                        None if len(found) else f"no detection scored above score_threshold={score_threshold} ({best})"
                    )
            else:
                targets = given_targets(given_boxes, given_labels, candidates, found_adapter.num_classes)
                reasons = [None if len(found) else "no boxes were given for this image" for found in targets]
        maps: dict[str, list[Tensor]] = {}
        layers: dict[str, list[str]] = {}
        for name in names:
            if name in DETECTION_METHODS:
                spec_options = DETECTION_METHODS[name].options
                mine = {key: options.get(key, option.default) for key, option in spec_options.items()}
                for key, option in spec_options.items():
                    option.check(name, key, mine[key])
                method_layer = layer if DETECTION_METHODS[name].needs_layer else None
                context = DetectionContext(mine, method_layer, box_score, float(iou_threshold))
                found_maps = DETECTION_METHODS[name].fn(found_adapter, inputs, targets, context)
                maps[name] = [m.detach().float().cpu() for m in found_maps]
                layers[name] = [] if method_layer is None else _layer_names(found_adapter, method_layer)
                continue
            spec = get_method(name)
            mine = {key: value for key, value in options.items() if key in spec.options or key in _SWITCHES}
            try:
                per_image, layers[name] = _engine_maps(
                    found_adapter, spec, inputs, targets, layer, mine, box_score, float(iou_threshold)
                )
            except RuntimeError as error:
                if spec.needs_hvp and "double backward" in str(error).lower():
                    raise ValueError(
                        f"{name} needs second derivatives, and {type(found_adapter.module).__name__} has an "
                        f"operation without them ({str(error).splitlines()[0]}); choose a first-order method "
                        "(gradcam, hirescam, layercam, ...: --method fast lists them)"
                    ) from error
                raise
            maps[name] = [m.detach().float().cpu() for m in per_image]
    return DetectionExplanation(
        images=[p.detach().float().cpu() for p in pictures],
        detections=[t.detach() for t in targets],
        maps=maps,
        layers=layers,
        reasons=reasons,
        categories=found_adapter.categories,
    )
