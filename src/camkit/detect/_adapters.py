r"""Detector adapters: how camkit calls a detector, reads its output and picks its layer.

One small class per model family, found automatically by :func:`adapter_for` (no wrapper to
write). An adapter answers four questions:

* :meth:`~DetectorAdapter.run`: how to call the model on a list of images ``(3, H, W)`` in
  ``[0, 1]`` (sizes may differ), and where each image sits in the batch tensor its layers see
  (:class:`~camkit.detect.Frame`);
* :meth:`~DetectorAdapter.decode`: the raw output → every prediction as
  :class:`~camkit.detect.Candidates` (boxes in input pixels, class probabilities, objectness),
  differentiable so gradient methods reach the scores;
* :meth:`~DetectorAdapter.detect`: the candidates → the final :class:`~camkit.detect.Detections`
  above a score threshold (camkit's own NMS in torch where the model has none in its forward);
* :meth:`~DetectorAdapter.default_layer`: the automatic target layer (the last backbone or neck
  stage before the head).

Built in: :class:`TorchvisionAdapter` (Faster/Mask R-CNN, RetinaNet, FCOS, SSD/SSDlite and any
model that takes a list of images and returns one dict with ``boxes``/``labels``/``scores`` per
image), :class:`YoloAdapter` (Ultralytics ``DetectionModel`` and the ``YOLO`` object) and
:class:`DetrAdapter` (Hugging Face ``...ForObjectDetection`` with ``logits``/``pred_boxes``).

Example:
    >>> import torch
    >>> from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    >>> model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    >>> adapter = adapter_for(model)
    >>> type(adapter).__name__, adapter.default_layer(), adapter.num_classes
    ('TorchvisionAdapter', 'backbone.features.1', 3)
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camkit.detect._types import Candidates, Detections, Frame
from camkit.engine import eval_mode, module_calls

__all__ = [
    "ADAPTERS",
    "DetectorAdapter",
    "DetrAdapter",
    "TorchvisionAdapter",
    "YoloAdapter",
    "adapter_for",
    "process_state_kept",
    "require",
]

#: what to install for the optional detector families
EXTRA_HINT = "pip install camkit[detect]"


def require(package: str) -> Any:
    """Import an optional dependency of :mod:`camkit.detect`, or say which extra installs it.

    Args:
        package: ``"ultralytics"`` or ``"transformers"``.

    Returns:
        The module.

    Raises:
        ImportError: naming the package and ``pip install camkit[detect]``.

    Example:
        >>> require("torch").__name__
        'torch'
    """
    try:
        with process_state_kept():  # ultralytics changes process-wide settings when first imported
            return importlib.import_module(package)
    except ImportError as error:
        raise ImportError(f"{package} is not installed ({error}): {EXTRA_HINT}") from None


@contextlib.contextmanager
def process_state_kept() -> Iterator[None]:
    """Give back, on exit, the process-wide settings an import of ultralytics changes.

    Ultralytics, when first imported, replaces ``PIL.Image.open`` (its HEIF support, which tries to
    pip-install pi-heif on an unreadable file), sets numpy's and torch's print options and OpenCV's
    thread count, and writes environment variables. An import camkit makes on the user's behalf
    leaves all of them as they were.

    Example:
        >>> import numpy as np
        >>> with process_state_kept():
        ...     np.set_printoptions(linewidth=320)
        >>> np.get_printoptions()["linewidth"]
        75
    """
    import numpy as np
    from PIL import Image

    opener, numpy_options, environ = Image.open, np.get_printoptions(), dict(os.environ)
    torch_options = {
        k: getattr(torch._tensor_str.PRINT_OPTS, k)
        for k in ("precision", "threshold", "edgeitems", "linewidth", "sci_mode")
    }
    cv2 = sys.modules.get("cv2")
    cv2_threads = cv2.getNumThreads() if cv2 is not None else None
    try:
        yield
    finally:
        Image.open = opener
        np.set_printoptions(**numpy_options)
        torch.set_printoptions(**torch_options)  # type: ignore[no-untyped-call]
        cv2 = sys.modules.get("cv2")
        if cv2 is not None and cv2_threads is not None:
            cv2.setNumThreads(cv2_threads)
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)


def _pad_batch(images: Sequence[Tensor], multiple: int = 1, value: float = 0.0) -> tuple[Tensor, tuple[int, int]]:
    """Stack images of any size into one batch, padded at the bottom and right (to a multiple of ``multiple``)."""
    height = max(int(image.shape[-2]) for image in images)
    width = max(int(image.shape[-1]) for image in images)
    height, width = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    batch = images[0].new_full((len(images), images[0].shape[0], height, width), value)
    for i, image in enumerate(images):
        batch[i, :, : image.shape[-2], : image.shape[-1]] = image
    return batch, (height, width)


def _class_module(model: nn.Module) -> str:
    return type(model).__module__ or ""


class DetectorAdapter:
    """How camkit runs one family of detectors (subclass it for a family of your own).

    Args:
        model: the detector as the user gave it.

    Attributes:
        name: the family's name (``"torchvision"``, ``"ultralytics"``, ``"transformers"``).
    """

    name: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter handles ``model``."""
        raise NotImplementedError

    @property
    def module(self) -> nn.Module:
        """The module camkit hooks (layer names are relative to it) and whose flags it restores."""
        return self.model

    @property
    def num_classes(self) -> int | None:
        """The number of classes (labels are ``0 … num_classes - 1``), when the model says."""
        return None

    @property
    def categories(self) -> list[str] | None:
        """Class names by label, when the model carries them."""
        return None

    def default_layer(self) -> str:
        """The automatic target layer's name in :attr:`module`.

        Raises:
            ValueError: when none can be chosen (pass ``target_layer=``).
        """
        raise NotImplementedError

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """The model in eval mode for the block (every flag restored after, errors included)."""
        with eval_mode(self.module):
            yield

    def run(self, images: Sequence[Tensor]) -> tuple[Any, list[Frame]]:
        """Call the model on images ``(3, H, W)`` in ``[0, 1]``.

        Returns:
            The raw output and one :class:`~camkit.detect.Frame` per image.
        """
        raise NotImplementedError

    def decode(self, output: Any, frames: Sequence[Frame]) -> list[Candidates]:
        """Every prediction of every image, in input pixels (differentiable)."""
        raise NotImplementedError

    def detect(self, candidates: Sequence[Candidates], score_threshold: float) -> list[Detections]:
        """The final detections above ``score_threshold`` (the label is the top class)."""
        found = []
        for cand in candidates:
            scores, labels = cand.probs.max(dim=1) if cand.probs.shape[1] else (cand.objectness, cand.objectness.long())
            keep = (scores > score_threshold).nonzero().flatten()
            keep = keep[scores[keep].argsort(descending=True)]
            found.append(Detections(cand.boxes[keep], labels[keep], scores[keep], cand.probs[keep]))
        return found

    def to_input(self, images: Sequence[Tensor]) -> list[Tensor]:
        """The images on the model's device and in its floating dtype."""
        ref = next((t for t in [*self.module.parameters(), *self.module.buffers()] if t.is_floating_point()), None)
        if ref is None:
            return list(images)
        return [image.to(device=ref.device, dtype=ref.dtype) for image in images]


# --------------------------------------------------------------------------------------------
# torchvision (and any model with its calling convention)


class TorchvisionAdapter(DetectorAdapter):
    """torchvision detectors, and any model called with a list of images returning a dict per image.

    The output dicts' ``scores`` are a differentiable function of the features (torchvision's
    post-processing indexes the softmax/sigmoid scores), so gradient methods reach them. During an
    explanation the model's own score threshold (``roi_heads.score_thresh`` or ``score_thresh``) is
    set to 0, so that given boxes find their match among every kept box; it is restored after.
    camkit's ``score_threshold`` selects the detections to explain. torchvision reports one class
    per box: its class vector is one-hot times the score.
    """

    name = "torchvision"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Any module not claimed by another adapter (checked last)."""
        return isinstance(model, nn.Module)

    @property
    def num_classes(self) -> int | None:
        """From the box predictor or classification head (background included, as torchvision counts)."""
        model = self.model
        predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
        cls_score = getattr(predictor, "cls_score", None)
        if isinstance(cls_score, nn.Linear):
            return int(cls_score.out_features)
        head = getattr(getattr(model, "head", None), "classification_head", None)
        for attribute in ("num_classes", "num_columns"):
            value = getattr(head, attribute, None)
            if isinstance(value, int):
                return value
        value = getattr(model, "num_classes", None)
        return value if isinstance(value, int) else None

    def default_layer(self) -> str:
        """The backbone's last stage: ``backbone.body.<last>`` (FPN models) or ``backbone.features.<last>`` (SSD)."""
        backbone = getattr(self.model, "backbone", None)
        body = getattr(backbone, "body", None)
        if isinstance(body, nn.Module):
            children = [name for name, _ in body.named_children()]
            if children:
                return f"backbone.body.{children[-1]}"
        features = getattr(backbone, "features", None)
        if isinstance(features, nn.Module):
            children = [name for name, _ in features.named_children()]
            return f"backbone.features.{children[-1]}" if children else "backbone.features"
        raise ValueError(
            f"camkit cannot choose a target layer in {type(self.model).__name__} (no backbone.body or "
            "backbone.features): pass target_layer= (camkit layers lists the candidates)"
        )

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Eval mode and the model's score threshold at 0, both restored after."""
        owner = getattr(self.model, "roi_heads", self.model)
        saved = getattr(owner, "score_thresh", None)
        with eval_mode(self.model):
            try:
                if isinstance(saved, float | int) and not isinstance(saved, bool):
                    owner.score_thresh = 0.0
                yield
            finally:
                if isinstance(saved, float | int) and not isinstance(saved, bool):
                    owner.score_thresh = saved

    def run(self, images: Sequence[Tensor]) -> tuple[Any, list[Frame]]:
        """``model(list_of_images)``; the frames come from its ``transform`` (resize + pad) when it has one."""
        watched = ["transform"] if isinstance(getattr(self.model, "transform", None), nn.Module) else []
        try:
            # the transform's output (resized, padded batch); the explained forward: camkit's hooks stay on
            with module_calls(self.model, watched, pause=False) as seen:
                output = self.model(self.to_input(images))
        except TypeError as error:
            raise TypeError(
                f"calling {type(self.model).__name__} with a list of images, as torchvision detectors are called, "
                f"failed ({str(error).splitlines()[0]}); camkit's adapters cover torchvision, Ultralytics YOLO and "
                "Hugging Face DETR: pass adapter= for another family"
            ) from error
        if not isinstance(output, list | tuple) or not all(isinstance(o, Mapping) for o in output):
            raise TypeError(
                f"{type(self.model).__name__} returned {type(output).__name__}, not a list of dicts with 'boxes', "
                "'labels' and 'scores' (torchvision's detection output); camkit's adapters cover torchvision, "
                "Ultralytics YOLO and Hugging Face DETR: pass adapter= for another family"
            )
        sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        listed = seen[-1][1][0] if seen and isinstance(seen[-1][1], tuple) else None
        if listed is not None and hasattr(listed, "image_sizes") and hasattr(listed, "tensors"):
            padded = (int(listed.tensors.shape[-2]), int(listed.tensors.shape[-1]))
            return output, [
                Frame(size, (int(h), int(w)), padded) for size, (h, w) in zip(sizes, listed.image_sizes, strict=True)
            ]
        padded = (max(h for h, _ in sizes), max(w for _, w in sizes))
        return output, [Frame(size, size, padded) for size in sizes]

    def decode(self, output: Any, frames: Sequence[Frame]) -> list[Candidates]:
        """The dicts' boxes; class vectors one-hot on ``labels`` times ``scores``; objectness = ``scores``."""
        count = self.num_classes
        if count is None:
            count = 1 + max((int(d["labels"].max()) for d in output if d["labels"].numel()), default=0)
        found = []
        for detection in output:
            for key in ("boxes", "labels", "scores"):
                if key not in detection:
                    raise TypeError(f"a detection dict has no {key!r}: keys {sorted(detection)}")
            scores = detection["scores"]
            probs = F.one_hot(detection["labels"].long(), count).to(scores.dtype) * scores[:, None]
            found.append(Candidates(detection["boxes"], probs, scores))
        return found


# --------------------------------------------------------------------------------------------
# Ultralytics YOLO


def _yolo_parts(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(DetectionModel, Detect head)`` of an Ultralytics model or ``YOLO`` object, else ``None``."""
    inner: Any = model
    if not isinstance(getattr(inner, "model", None), nn.Sequential):
        inner = getattr(model, "model", None)  # the YOLO object holds the DetectionModel
    layers = getattr(inner, "model", None)
    if not isinstance(inner, nn.Module) or not isinstance(layers, nn.Sequential) or not len(layers):
        return None
    head = layers[-1]
    if not isinstance(getattr(head, "nc", None), int) or not isinstance(getattr(head, "f", None), list):
        return None
    return inner, head


class YoloAdapter(DetectorAdapter):
    """Ultralytics YOLO (v3u/v5u/v8/v9/v10/11/26 detection heads): ``DetectionModel`` or the ``YOLO`` object.

    camkit calls the ``DetectionModel`` itself (never the wrapper's ``predict``/``train``/``eval``
    methods, which may start training, download weights or fuse layers). Images are padded at the
    bottom and right to a multiple of the largest stride (gray 114, Ultralytics' letterbox colour).
    The head's decoded output ``(N, 4 + classes, anchors)`` (xywh boxes in input pixels, sigmoid
    class scores) is read as candidates, and NMS runs in torch (``torchvision.ops.batched_nms``)
    on detached values while the kept scores stay in the graph. End-to-end heads (YOLOv10/26) are
    read through their one-to-one branch, NMS-free.

    Args:
        model: the ``DetectionModel`` or ``YOLO`` object.
        iou_threshold: NMS IoU threshold (Ultralytics' default 0.7).
        max_det: most detections kept per image.
    """

    name = "ultralytics"

    def __init__(self, model: nn.Module, iou_threshold: float = 0.7, max_det: int = 300) -> None:
        super().__init__(model)
        parts = _yolo_parts(model)
        if parts is None:
            raise TypeError(f"{type(model).__name__} is not an Ultralytics detection model (no Detect head)")
        self._inner, self._head = parts
        self.iou_threshold = iou_threshold
        self.max_det = max_det

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """An Ultralytics class whose (inner) model ends in a Detect head."""
        return _class_module(model).startswith("ultralytics") and _yolo_parts(model) is not None

    @property
    def module(self) -> nn.Module:
        """The ``DetectionModel`` (for the ``YOLO`` object: its ``.model``)."""
        return self._inner

    @property
    def num_classes(self) -> int:
        """The head's ``nc``."""
        return int(self._head.nc)  # type: ignore[arg-type]

    @property
    def categories(self) -> list[str] | None:
        """``model.names`` when they are not just the indices."""
        names = getattr(self._inner, "names", None)
        if isinstance(names, Mapping) and any(str(v) != str(k) for k, v in names.items()):
            return [str(names.get(i, i)) for i in range(self.num_classes)]
        return None

    @property
    def _stride(self) -> int:
        stride = getattr(self._head, "stride", None)
        return int(stride.max()) if isinstance(stride, Tensor) and stride.numel() else 32

    def default_layer(self) -> str:
        """The neck's highest-resolution output feeding the head (``model.<f[0]>``, stride 8).

        Every box depends on it (the coarser levels are computed from it).
        """
        inputs = self._head.f
        return f"model.{inputs[0]}"  # type: ignore[index]

    def run(self, images: Sequence[Tensor]) -> tuple[Any, list[Frame]]:
        """The ``DetectionModel`` on the padded batch."""
        batch, padded = _pad_batch(self.to_input(images), self._stride, 114 / 255)
        output = self._inner(batch)
        sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        return output, [Frame(size, size, padded) for size in sizes]

    def _decoded(self, output: Any) -> tuple[Tensor, bool]:
        """``(N, 4 + nc, A)`` predictions and whether their boxes are xyxy (else xywh)."""
        raw = output[1] if isinstance(output, tuple | list) and len(output) > 1 else None
        if isinstance(raw, Mapping) and "one2one" in raw and bool(getattr(self._head, "end2end", False)):
            return self._head._inference(raw["one2one"]), True  # type: ignore[operator]
        y = output[0] if isinstance(output, tuple | list) else output
        if not isinstance(y, Tensor) or y.ndim != 3 or y.shape[1] < 4 + self.num_classes:
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise TypeError(f"the YOLO head returned {shape}, not (N, 4 + {self.num_classes}, anchors)")
        return y, bool(getattr(self._head, "xyxy", False))

    def decode(self, output: Any, frames: Sequence[Frame]) -> list[Candidates]:
        """Boxes xywh → xyxy, class scores as probabilities, objectness = the top class score."""
        y, xyxy = self._decoded(output)
        found = []
        for row in y:
            boxes = row[:4].t()
            if not xyxy:
                centre, half = boxes[:, :2], boxes[:, 2:] / 2
                boxes = torch.cat([centre - half, centre + half], dim=1)
            probs = row[4 : 4 + self.num_classes].t()
            found.append(Candidates(boxes, probs, probs.amax(dim=1)))
        return found

    def detect(self, candidates: Sequence[Candidates], score_threshold: float) -> list[Detections]:
        """Top class per anchor above the threshold, then class-wise NMS (skipped for end-to-end heads)."""
        from torchvision.ops import batched_nms  # type: ignore[import-untyped]

        found = []
        end2end = bool(getattr(self._head, "end2end", False))
        for cand in candidates:
            scores, labels = cand.probs.detach().max(dim=1)
            keep = (scores > score_threshold).nonzero().flatten()
            if keep.numel() and not end2end:
                kept = batched_nms(
                    cand.boxes.detach()[keep].float(), scores[keep].float(), labels[keep], self.iou_threshold
                )
                keep = keep[kept]
            keep = keep[scores[keep].argsort(descending=True)][: self.max_det]
            picked = cand.probs[keep]
            found.append(Detections(cand.boxes[keep], labels[keep], picked.gather(1, labels[keep, None])[:, 0], picked))
        return found


# --------------------------------------------------------------------------------------------
# Hugging Face DETR family


class DetrAdapter(DetectorAdapter):
    """Hugging Face ``DetrForObjectDetection`` and relatives (``logits`` and normalised ``pred_boxes``).

    Images are normalised with the model's image mean and std (ImageNet's by default), padded at
    the bottom and right (with the mean colour: zeros after normalisation), and the model gets a
    ``pixel_mask`` (1 on each image, 0 on its padding) when its ``forward`` takes one.
    ``pred_boxes`` ``(cx, cy, w, h)`` are relative to each image's own size (DETR's and Deformable
    DETR's convention: their position encodings and reference points follow the mask), except for
    models that take no mask or ignore it (RT-DETR, RT-DETRv2, D-FINE, DEIMv2, YOLOS: anchors over
    the whole padded tensor), whose boxes are relative to the padded batch; the RT-DETR family's
    batch is padded to a multiple of 32 (its encoder's top-down path needs it). ``logits`` of DETR end
    with the no-object class: the class vector is the softmax over the real classes and
    objectness is one minus the no-object probability; sigmoid heads (Deformable DETR, RT-DETR,
    ``use_focal_loss``) give the sigmoids. DETR has no NMS.

    In a batch of mixed sizes, the convolutions of the backbone see the padding next to a smaller
    image's bottom and right edges, so its maps (and the model's own outputs) differ from those
    of the image run alone, as they do in the model's own batched inference; the largest image's
    do not change. Explain images one at a time, or of one size, for maps free of that effect.

    Args:
        model: the ``...ForObjectDetection`` model.
        mean: per-channel mean of the input normalisation.
        std: per-channel std.
    """

    name = "transformers"

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__(model)
        self.mean = tuple(mean)
        self.std = tuple(std)

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """A ``transformers`` model whose class name ends with ``ForObjectDetection``."""
        return _class_module(model).startswith("transformers") and type(model).__name__.endswith("ForObjectDetection")

    @property
    def _config(self) -> Any:
        return getattr(self.model, "config", None)

    @property
    def _no_object(self) -> bool:
        """DETR's softmax with a trailing no-object class (RT-DETR/Deformable DETR use sigmoids instead)."""
        focal = bool(getattr(self._config, "use_focal_loss", False))
        return not focal and "Deformable" not in type(self.model).__name__

    #: ``config.model_type`` of the models that ignore ``pixel_mask`` (boxes relative to the padded batch)
    MASK_FREE: ClassVar[tuple[str, ...]] = ("rt_detr", "rt_detr_v2", "d_fine", "deimv2")

    @property
    def takes_mask(self) -> bool:
        """Whether the model's ``forward`` takes a ``pixel_mask``."""
        try:
            return "pixel_mask" in inspect.signature(self.model.forward).parameters
        except (TypeError, ValueError):
            return False

    @property
    def padded_boxes(self) -> bool:
        """Whether ``pred_boxes`` are relative to the padded batch (the model takes no mask or ignores it)."""
        return not self.takes_mask or str(getattr(self._config, "model_type", "")) in self.MASK_FREE

    @property
    def num_classes(self) -> int | None:
        """``config.num_labels``."""
        value = getattr(self._config, "num_labels", None)
        return int(value) if isinstance(value, int) else None

    @property
    def categories(self) -> list[str] | None:
        """``config.id2label`` when it names the classes (not ``LABEL_0``, ...)."""
        names = getattr(self._config, "id2label", None)
        count = self.num_classes
        if not isinstance(names, Mapping) or count is None:
            return None
        listed = [str(names.get(i, i)) for i in range(count)]
        return None if all(name == f"LABEL_{i}" for i, name in enumerate(listed)) else listed

    def default_layer(self) -> str:
        """``model.input_projection`` (the backbone's last stage, projected for the transformer).

        Else the backbone's last stage.
        """
        names: dict[str, nn.Module] = dict(self.model.named_modules())
        for name in ("model.input_projection", "model.input_proj"):
            if isinstance(names.get(name), nn.Conv2d):
                return name
        stages = [n for n in names if ".backbone." in f".{n}" and n.rsplit(".", 2)[-2:-1] == ["stages"]]
        if stages:
            return stages[-1]
        raise ValueError(
            f"camkit cannot choose a target layer in {type(self.model).__name__}: pass target_layer= "
            "(camkit layers lists the candidates)"
        )

    def run(self, images: Sequence[Tensor]) -> tuple[Any, list[Frame]]:
        """``model(pixel_values=..., pixel_mask=...)`` on the normalised, padded batch (no mask when it takes none)."""
        inputs = self.to_input(images)
        mean = torch.tensor(self.mean, device=inputs[0].device, dtype=inputs[0].dtype)[:, None, None]
        std = torch.tensor(self.std, device=inputs[0].device, dtype=inputs[0].dtype)[:, None, None]
        multiple = 32 if str(getattr(self._config, "model_type", "")) in self.MASK_FREE else 1  # their FPN's stride
        batch, padded = _pad_batch([(image - mean) / std for image in inputs], multiple)
        if self.takes_mask:
            mask = torch.zeros(batch.shape[0], *padded, dtype=torch.long, device=batch.device)
            for i, image in enumerate(inputs):
                mask[i, : image.shape[-2], : image.shape[-1]] = 1
            output = self.model(pixel_values=batch, pixel_mask=mask)
        else:
            output = self.model(pixel_values=batch)
        sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        return output, [Frame(size, size, padded) for size in sizes]

    def decode(self, output: Any, frames: Sequence[Frame]) -> list[Candidates]:
        """Softmax class vectors without the no-object column; boxes scaled to each image's (or the batch's) pixels."""
        logits, boxes = getattr(output, "logits", None), getattr(output, "pred_boxes", None)
        if not isinstance(logits, Tensor) or not isinstance(boxes, Tensor):
            raise TypeError(f"{type(self.model).__name__} returned no logits/pred_boxes: {type(output).__name__}")
        found = []
        for row_logits, row_boxes, frame in zip(logits, boxes, frames, strict=True):
            if self._no_object:
                full = row_logits.softmax(dim=-1)
                probs, objectness = full[:, :-1], 1 - full[:, -1]
            else:
                probs = row_logits.sigmoid()
                objectness = probs.amax(dim=-1)
            height, width = frame.padded if self.padded_boxes else frame.size
            scale = row_boxes.new_tensor([width, height, width, height])
            centre, half = row_boxes[:, :2], row_boxes[:, 2:] / 2
            found.append(Candidates(torch.cat([centre - half, centre + half], dim=1) * scale, probs, objectness))
        return found


#: the adapters :func:`adapter_for` tries, in order (the catch-all torchvision convention last)
ADAPTERS: list[type[DetectorAdapter]] = [YoloAdapter, DetrAdapter, TorchvisionAdapter]


def adapter_for(model: Any, adapter: DetectorAdapter | type[DetectorAdapter] | None = None) -> DetectorAdapter:
    """The adapter for ``model``: the given one, else the first of :data:`ADAPTERS` that matches.

    Args:
        model: the detector (an ``nn.Module``; Ultralytics' ``YOLO`` object is one).
        adapter: an adapter instance or class to use instead of the automatic choice.

    Returns:
        The adapter.

    Raises:
        TypeError: when ``model`` is not a module.
    """
    if isinstance(adapter, DetectorAdapter):
        return adapter
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module detector, got {type(model).__name__}")
    if adapter is not None:
        return adapter(model)
    for candidate in ADAPTERS:
        if candidate.matches(model):
            return candidate(model)
    raise TypeError(f"no detector adapter matches {type(model).__name__}")  # unreachable: torchvision's is a catch-all
