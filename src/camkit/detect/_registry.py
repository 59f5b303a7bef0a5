"""The detection methods of their own (D-RISE, per-box Ablation-CAM) and the list of every ``method=`` name.

:func:`register_detection_method` adds a method that needs the detector's decoded boxes rather
than one layer's activations and gradients; :func:`detection_methods` lists those and the
registry's methods :func:`camkit.explain_detections` can run per box.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from camkit.detect._ablation import ablation_maps
from camkit.detect._adapters import DetectorAdapter
from camkit.detect._drise import check_drise_options, drise
from camkit.detect._types import Candidates, Detections
from camkit.registry import MethodSpec, Option, get_method, list_methods

if TYPE_CHECKING:
    pass


__all__ = [
    "DETECTION_METHODS",
    "DetectionContext",
    "DetectionMethod",
    "detection_methods",
    "engine_ready",
    "register_detection_method",
]


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


def engine_ready(spec: MethodSpec) -> bool:
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
    engine = [name for name in list_methods() if engine_ready(get_method(name))]
    return sorted({*engine, *DETECTION_METHODS})
