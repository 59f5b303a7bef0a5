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
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from camkit.detect._ablation import ablation_maps
from camkit.detect._adapters import DetectorAdapter, adapter_for
from camkit.detect._drise import check_drise_options, drise
from camkit.detect._maps import normalize_maps, to_pixels
from camkit.detect._target import MODES, BoxColumn, BoxScores, box_scores
from camkit.detect._types import Candidates, Detections, box_iou
from camkit.methods import extractor_class
from camkit.registry import MethodSpec, Option, get_method, list_methods

if TYPE_CHECKING:
    from camkit.metrics import MetricResult

__all__ = [
    "DETECTION_METHODS",
    "DetectionContext",
    "DetectionExplanation",
    "DetectionMethod",
    "detection_methods",
    "explain_detections",
    "register_detection_method",
]

#: engine switches explain_detections hands to the engine's extractors besides the method options
_SWITCHES = ("eigen_smooth", "reshape_transform")


@dataclass(frozen=True)
class DetectionContext:
    """What a detection method gets besides the adapter, the images and the boxes.

    Attributes:
        options: the method's options, every declared one (given or default).
        layer: the target layer (name or module of ``adapter.module``) for methods that read one.
        box_score: how a box is scored (see :mod:`camkit.detect._target`).
        iou_threshold: the IoU a ``"sum"`` match must exceed.
    """

    options: Mapping[str, Any]
    layer: Any = None
    box_score: str = "product"
    iou_threshold: float = 0.5


DetectionFn = Callable[[DetectorAdapter, list[Tensor], list[Detections], DetectionContext], list[Tensor]]


@dataclass(frozen=True)
class DetectionMethod:
    """A method that explains detections without the classifier engine (D-RISE).

    Attributes:
        name: the ``method=`` name.
        fn: ``fn(adapter, images, targets, ctx) -> per image (K, H, W) maps in [0, 1]``.
        options: the method's options with defaults and accepted types.
        summary: one line for the docs.
        paper: the reference.
        needs_layer: the method reads a target layer (``ctx.layer``).
    """

    name: str
    fn: DetectionFn
    options: Mapping[str, Option]
    summary: str
    paper: str
    needs_layer: bool = False


#: detection methods by name (``method=`` of :func:`explain_detections`)
DETECTION_METHODS: dict[str, DetectionMethod] = {}


def register_detection_method(
    name: str,
    *,
    options: Mapping[str, Option],
    summary: str,
    paper: str,
    needs_layer: bool = False,
    replaces: bool = False,
) -> Callable[[DetectionFn], DetectionFn]:
    """Register a detection method (black-box or otherwise outside the classifier registry).

    Args:
        name: the ``method=`` name, lower case.
        options: option name → :class:`camkit.Option`.
        summary: one line.
        paper: reference.
        needs_layer: the method reads a target layer (``ctx.layer``; the adapter's by default).
        replaces: the name is a classifier registry method whose engine path does not apply to
            detectors, and this function is its detection version (AblationCAM).

    Returns:
        A decorator that stores the method and returns the function unchanged.

    Raises:
        ValueError: for a taken or malformed name.

    Example:
        >>> @register_detection_method("zeros", options={}, summary="All-zero maps.", paper="(example)")
        ... def zeros(adapter, images, targets, ctx):
        ...     return [torch.zeros(len(t), *image.shape[-2:]) for image, t in zip(images, targets)]
        >>> "zeros" in detection_methods()
        True
        >>> del DETECTION_METHODS["zeros"]
    """
    taken = name in DETECTION_METHODS or (name in list_methods()) != replaces
    if not name.isidentifier() or name != name.lower() or taken:
        raise ValueError(f"detection method name {name!r} is taken or not a lower-case identifier")

    def decorator(fn: DetectionFn) -> DetectionFn:
        DETECTION_METHODS[name] = DetectionMethod(name, fn, dict(options), summary, paper, needs_layer)
        return fn

    return decorator


@register_detection_method(
    "drise",
    options={
        "num_masks": Option(1000, (int,), "how many randomly masked copies of each image"),
        "cell_size": Option(16, (int,), "mask grid cell in pixels"),
        "p": Option(0.5, (float, int), "probability that a mask cell is kept"),
        "batch_size": Option(None, (int,), "masked images per forward; None: the most that fit a memory budget"),
        "generator": Option(None, (torch.Generator,), "a torch.Generator for reproducible masks"),
    },
    summary="D-RISE: masks weighted by IoU × class-vector cosine × objectness of the masked image's detections.",
    paper="Petsiuk et al., Black-box Explanation of Object Detectors via Saliency Maps, CVPR 2021 (arXiv:2006.03204)",
)
def _drise(
    adapter: DetectorAdapter, images: list[Tensor], targets: list[Detections], ctx: DetectionContext
) -> list[Tensor]:
    """D-RISE maps of every image's targets (see :mod:`camkit.detect._drise`)."""
    options = ctx.options
    check_drise_options(options["num_masks"], options["cell_size"], options["p"], options["batch_size"])

    def run(masked: list[Tensor]) -> list[Candidates]:
        output, frames = adapter.run(masked)
        return adapter.decode(output, frames)

    maps = []
    for image, found in zip(images, targets, strict=True):
        if not len(found):
            maps.append(image.new_zeros(0, *image.shape[-2:], dtype=torch.float32))
            continue
        vectors = found.vectors if found.vectors is not None else found.scores[:, None]
        maps.append(
            drise(
                run,
                image,
                found,
                vectors,
                num_masks=options["num_masks"],
                cell_size=options["cell_size"],
                p=float(options["p"]),
                batch_size=options["batch_size"],
                generator=options["generator"],
            )
        )
    return maps


@register_detection_method(
    "ablationcam",
    options={
        "ablation_value": Option(0.0, (float, int), "the value an ablated channel is set to"),
        "batch_size": Option(32, (int,), "ablated copies of an image per forward"),
        "max_channels": Option(None, (int,), "ablate only this many channels (largest spatial variance); None: all"),
        "reforward": Option("auto", (str,), "auto (tail-only where known, checked), fast (tail only) or full"),
    },
    summary="Ablation-CAM per box: weight = relative drop of the box score when the channel is set to zero.",
    paper="Desai & Ramaswamy, Ablation-CAM, WACV 2020",
    needs_layer=True,
    replaces=True,
)
def _ablation(
    adapter: DetectorAdapter, images: list[Tensor], targets: list[Detections], ctx: DetectionContext
) -> list[Tensor]:
    """Ablation-CAM maps of every image's boxes (see :func:`camkit.detect._ablation.ablation_maps`)."""
    return ablation_maps(
        adapter,
        images,
        targets,
        ctx.layer,
        value=float(ctx.options["ablation_value"]),
        batch_size=ctx.options["batch_size"],
        box_score=ctx.box_score,
        iou_threshold=ctx.iou_threshold,
        max_channels=ctx.options["max_channels"],
        reforward=ctx.options["reforward"],
    )


def _engine_ready(spec: MethodSpec) -> bool:
    """Whether a registry method runs per box through the engine (gradient or class-agnostic, one layer)."""
    if spec.layers is not None or spec.input_gradient or spec.needs_input or getattr(spec, "black_box", False):
        return False
    return spec.needs_gradients or not spec.needs_target


def detection_methods() -> list[str]:
    """The ``method=`` names :func:`explain_detections` accepts.

    Example:
        >>> {"gradcam", "eigencam", "drise"} <= set(detection_methods())
        True
    """
    engine = [name for name in list_methods() if _engine_ready(get_method(name))]
    return sorted({*engine, *DETECTION_METHODS})


# --------------------------------------------------------------------------------------------
# inputs


def _image_tensor(item: Any, index: int) -> Tensor:
    """One image as a float ``(3, H, W)`` tensor in ``[0, 1]`` (PIL, uint8 array, file or tensor)."""
    if isinstance(item, str | os.PathLike):
        from camkit.explanation import open_image

        item = open_image(item)
    if isinstance(item, Image.Image):
        item = np.array(item.convert("RGB"))
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
            raise ValueError(
                f"images[{index}] is a numpy array of dtype {item.dtype} and shape {item.shape}: pass (H, W, 3) uint8 "
                "pixels, or a float tensor (3, H, W) in [0, 1]"
            )
        item = torch.from_numpy(np.ascontiguousarray(item)).permute(2, 0, 1).float() / 255
    if not isinstance(item, Tensor):
        raise TypeError(
            f"images[{index}] is {type(item).__name__}: pass tensors (3, H, W) in [0, 1], PIL images, image files "
            "or (H, W, 3) uint8 arrays"
        )
    if item.ndim != 3 or item.shape[0] != 3:
        raise ValueError(f"images[{index}] has shape {tuple(item.shape)}: a detector image is (3, H, W)")
    image: Tensor = item if item.is_floating_point() else item.float() / 255
    return image


def _images(images: Any) -> list[Tensor]:
    if isinstance(images, Tensor) and images.ndim == 4:
        items: list[Any] = list(images)
    elif isinstance(images, Tensor | Image.Image | np.ndarray | str | os.PathLike):
        items = [images]
    elif isinstance(images, Sequence):
        items = list(images)
    else:
        raise TypeError(
            f"images must be an image, a batch (N, 3, H, W) or a list of images; got {type(images).__name__}"
        )
    if not items:
        raise ValueError("images is empty: pass at least one image")
    return [_image_tensor(item, i) for i, item in enumerate(items)]


def _per_image(value: Any, count: int, name: str, width: int | None) -> list[Tensor]:
    """``boxes``/``labels`` as one tensor per image (one image's may be given bare)."""
    shape = "(K, 4)" if width else "(K,)"

    def one(item: Any, where: str) -> Tensor:
        try:
            tensor = torch.as_tensor(np.asarray(item.detach().cpu() if isinstance(item, Tensor) else item))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where} is not a {shape} array of numbers ({error})") from None
        if tensor.numel() == 0:
            return tensor.reshape(0, width) if width else tensor.reshape(0)
        if (width and (tensor.ndim != 2 or tensor.shape[1] != width)) or (not width and tensor.ndim != 1):
            raise ValueError(f"{where} has shape {tuple(tensor.shape)}; expected {shape}")
        return tensor

    if count == 1:
        try:
            return [one(value, name)]
        except ValueError:
            if not (isinstance(value, Sequence) and len(value) == 1):
                raise
    if not isinstance(value, Sequence | Tensor | np.ndarray) or len(value) != count:
        raise ValueError(f"{name} must hold one {shape} array per image ({count} images)")
    return [one(item, f"{name}[{i}]") for i, item in enumerate(value)]


def _check_boxes(boxes: list[Tensor], images: list[Tensor]) -> list[Tensor]:
    checked = []
    for i, (found, image) in enumerate(zip(boxes, images, strict=True)):
        height, width = int(image.shape[-2]), int(image.shape[-1])
        found = found.float()
        for k, box in enumerate(found.tolist()):
            x1, y1, x2, y2 = box
            finite = all(np.isfinite(box))
            inside = -1e-3 <= x1 < x2 <= width + 1e-3 and -1e-3 <= y1 < y2 <= height + 1e-3
            if not (finite and inside):
                raise ValueError(
                    f"boxes[{i}][{k}] = {[round(v, 2) for v in box]} is not a box inside image {i} ({width}x{height} "
                    "pixels): boxes are (x1, y1, x2, y2) in the input image's pixels, x1 < x2, y1 < y2"
                )
        checked.append(found)
    return checked


def _check_labels(labels: list[Tensor], boxes: list[Tensor], classes: int | None) -> list[Tensor]:
    checked = []
    for i, (found, box) in enumerate(zip(labels, boxes, strict=True)):
        if found.shape[0] != box.shape[0]:
            raise ValueError(f"labels[{i}] has {found.shape[0]} labels for {box.shape[0]} boxes: pass one per box")
        if found.numel() and (found.is_floating_point() and not bool((found == found.round()).all())):
            raise ValueError(f"labels[{i}] must be integer class indices, got {found.tolist()}")
        found = found.long()
        for k, label in enumerate(found.tolist()):
            if label < 0 or (classes is not None and label >= classes):
                accepted = f"0 … {classes - 1}" if classes is not None else ">= 0"
                raise ValueError(f"labels[{i}][{k}] = {label} is out of range: the model's classes are {accepted}")
        checked.append(found)
    return checked


def _given(
    boxes: list[Tensor], labels: list[Tensor] | None, candidates: list[Candidates], classes: int | None
) -> list[Detections]:
    """Given boxes as detections: label (given, else the best-matching class), score and one-hot vector."""
    found = []
    for i, (box, cand) in enumerate(zip(boxes, candidates, strict=True)):
        count = cand.probs.shape[1] if classes is None else classes
        box = box.to(cand.boxes)
        if labels is not None:
            label = labels[i].to(cand.boxes.device)
        elif len(cand) and box.shape[0]:
            overlap = box_iou(box, cand.boxes)[:, :, None] * cand.probs[None]  # (K, P, C)
            label = overlap.amax(dim=1).argmax(dim=1)
        else:
            label = torch.zeros(box.shape[0], dtype=torch.long, device=cand.boxes.device)
        score = box_scores(cand, box, label) if len(cand) else torch.zeros(box.shape[0], device=cand.boxes.device)
        vectors = F.one_hot(label, max(count, int(label.max()) + 1 if label.numel() else 1)).float()
        unmatched = (score <= 0).nonzero().flatten().tolist()
        if unmatched:
            warnings.warn(
                f"image {i}: box(es) {unmatched} match no prediction of their label (score 0), so a gradient map of "
                "them is empty; check the labels (labels=None takes the best-matching class)",
                UserWarning,
                stacklevel=3,
            )
        found.append(Detections(box, label, score, vectors))
    return found


def _top(found: Detections, count: int) -> Detections:
    """The ``count`` highest-scoring detections."""
    keep = found.scores.detach().argsort(descending=True)[:count]
    vectors = None if found.vectors is None else found.vectors[keep]
    return Detections(found.boxes[keep], found.labels[keep], found.scores[keep], vectors)


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
# result


@dataclass
class DetectionExplanation:
    """What :func:`explain_detections` found.

    Attributes:
        images: the images as the detector saw them, ``(3, H, W)`` in ``[0, 1]``.
        detections: per image, the explained :class:`~camkit.detect.Detections` (boxes ``(K, 4)``
            xyxy in input pixels, labels, scores), detached, on the CPU.
        maps: method → per image, maps ``(K, H, W)`` in ``[0, 1]``, one per box (CPU).
        layers: method → the target layer names (``[]`` for black-box methods).
        reasons: per image, why it has no box to explain (``None`` when it has).
        categories: class names by label, when the model carries them.
    """

    images: list[Tensor]
    detections: list[Detections]
    maps: dict[str, list[Tensor]]
    layers: dict[str, list[str]] = field(default_factory=dict)
    reasons: list[str | None] = field(default_factory=list)
    categories: list[str] | None = None

    def label(self, index: int) -> str:
        """The name of class ``index`` (its number when names are unknown)."""
        if self.categories is not None and 0 <= index < len(self.categories):
            return self.categories[index]
        return str(index)

    def overlay(
        self, i: int = 0, method: str | None = None, box: int | None = None, colormap: str = "jet", alpha: float = 0.5
    ) -> Image.Image:
        """Image ``i`` with its boxes (label and score drawn) over its boxes' maps.

        Args:
            i: the image.
            method: the method whose maps are shown (default: the first).
            box: show only this box and its map (default: every box; their maps' maximum).
            colormap: see :func:`camkit.viz.overlay_mask`.
            alpha: weight of the image.

        Returns:
            An RGB image of the input's size.

        Raises:
            ValueError: for an unknown method, image or box.
        """
        from camkit.viz import overlay_mask

        if not 0 <= i < len(self.images):
            raise ValueError(f"image {i} does not exist: {len(self.images)} image(s) were explained")
        name = method or next(iter(self.maps), None)
        if name not in self.maps:
            raise ValueError(f"method {name!r} was not computed; computed: {sorted(self.maps)}")
        found, maps = self.detections[i], self.maps[name][i]
        picked = list(range(len(found))) if box is None else [box]
        if box is not None and not 0 <= box < len(found):
            raise ValueError(f"box {box} does not exist: image {i} has {len(found)} box(es)")
        picture = self.picture(i)
        if picked:
            picture = overlay_mask(picture, maps[picked].amax(dim=0), colormap=colormap, alpha=alpha)
        return self.draw_boxes(picture, i, picked)

    def picture(self, i: int = 0) -> Image.Image:
        """Image ``i`` as an RGB PIL image."""
        pixels = (self.images[i].detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
        return Image.fromarray(pixels.cpu().numpy())

    def caption(self, i: int, box: int) -> str:
        """``"<label> <score>"`` of box ``box`` of image ``i``."""
        found = self.detections[i]
        return f"{self.label(int(found.labels[box]))} {float(found.scores[box]):.2f}"

    def draw_boxes(self, picture: Image.Image, i: int, boxes: Sequence[int]) -> Image.Image:
        """``picture`` (image ``i``'s size) with the given boxes of image ``i`` and their captions drawn on it."""
        found = self.detections[i]
        draw = ImageDraw.Draw(picture)
        for k in boxes:
            x1, y1, x2, y2 = found.boxes[k].tolist()
            draw.rectangle((x1, y1, x2, y2), outline=(255, 255, 255), width=2)
            text = self.caption(i, k)
            left, top, right, bottom = draw.textbbox((x1, y1), text)
            lift = bottom - top + 2
            y = y1 - lift if y1 >= lift else y1
            draw.rectangle((x1, y, x1 + right - left + 2, y + lift), fill=(255, 255, 255))
            draw.text((x1 + 1, y), text, fill=(0, 0, 0))
        return picture

    def grid(
        self,
        i: int = 0,
        methods: Sequence[str] | None = None,
        *,
        colormap: str = "jet",
        alpha: float = 0.5,
        cell_size: int = 224,
    ) -> Image.Image:
        """A figure of image ``i``'s boxes × methods: one row per box (titled label and score).

        The first column shows the image with the row's box, the others that box's map by each
        method, the box drawn over it (see :func:`camkit.detect._figure.box_grid`).

        Args:
            i: the image.
            methods: the methods, one column each (default: every computed one).
            colormap: see :func:`camkit.viz.overlay_mask`.
            alpha: weight of the image.
            cell_size: the side of each square cell in pixels.

        Returns:
            The RGB figure.

        Raises:
            ValueError: for an unknown image or method, or an image without boxes.
        """
        from camkit.detect._figure import box_grid

        return box_grid(self, i, methods, colormap=colormap, alpha=alpha, cell_size=cell_size)

    def pointing_game(
        self, method: str | None = None, *, tolerance: float = 15.0, energy: bool = False
    ) -> MetricResult:
        """Per box, whether its map points into the box itself (each box is its own region).

        The pointing game (Zhang et al., ECCV 2016; a hit when the map's maximum lies within
        ``tolerance`` pixels of the box) or, with ``energy=True``, the energy-based pointing game
        (Wang et al., Score-CAM, CVPRW 2020: the share of the map's mass inside the box), see
        :func:`camkit.metrics.pointing_game`.

        Args:
            method: the method whose maps are scored (default: the first).
            tolerance: pixels around the box that still count as a hit (the paper's 15).
            energy: the energy-based variant instead.

        Returns:
            A :class:`camkit.metrics.MetricResult`: ``per_sample`` has one value per box (image by
            image, in detection order) and ``mean`` their mean.

        Raises:
            ValueError: for an unknown method.
        """
        from camkit.metrics import MetricResult, energy_pointing_game, pointing_game

        name = method or next(iter(self.maps), None)
        if name not in self.maps:
            raise ValueError(f"method {name!r} was not computed; computed: {sorted(self.maps)}")
        values = []
        for found, maps in zip(self.detections, self.maps[name], strict=True):
            if not len(found):
                continue
            boxes = [box[None] for box in found.boxes]
            score = energy_pointing_game(maps, boxes) if energy else pointing_game(maps, boxes, tolerance=tolerance)
            values.append(score.per_sample)
        per_box = torch.cat(values) if values else torch.zeros(0)
        valid = per_box[~per_box.isnan()]
        return MetricResult(per_box, float(valid.mean()) if valid.numel() else float("nan"))

    def __repr__(self) -> str:
        """Per image: its boxes (label, score) or why it has none."""
        lines = [f"DetectionExplanation({len(self.images)} image(s), methods {list(self.maps)}"]
        for i, found in enumerate(self.detections[:8]):
            if not len(found):
                lines.append(f"  image {i}: no boxes ({self.reasons[i] if i < len(self.reasons) else ''})")
                continue
            boxes = ", ".join(
                f"{self.label(int(label))} {float(score):.2f}"
                for label, score in zip(found.labels[:6], found.scores[:6], strict=True)
            )
            more = f", ... {len(found) - 6} more" if len(found) > 6 else ""
            lines.append(f"  image {i}: {len(found)} box(es): {boxes}{more}")
        return "\n".join(lines) + ")"


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
        if not _engine_ready(spec):
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
    pictures = _images(images)
    given_boxes = None
    given_labels = None
    if boxes is not None:
        given_boxes = _check_boxes(_per_image(boxes, len(pictures), "boxes", 4), pictures)
        if labels is not None:
            given_labels = _check_labels(
                _per_image(labels, len(pictures), "labels", None), given_boxes, found_adapter.num_classes
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
                    targets = [_top(t, max_boxes) for t in targets]
                for cand, found in zip(candidates, targets, strict=True):
                    top = float(cand.probs.max()) if cand.probs.numel() else None
                    best = f"the highest was {top:.3g}" if top is not None else "the model returned no boxes"
                    reasons.append(
                        None if len(found) else f"no detection scored above score_threshold={score_threshold} ({best})"
                    )
            else:
                targets = _given(given_boxes, given_labels, candidates, found_adapter.num_classes)
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
