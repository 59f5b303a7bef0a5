"""``camkit explain --task detect``: one overlay per box and method, the raw maps, a detections table.

``camkit explain photo.jpg --task detect --model ultralytics:yolov8n.yaml`` (or
``torchvision:fasterrcnn_mobilenet_v3_large_320_fpn``, ``transformers:FOLDER``; ``--checkpoint
FILE`` loads your state dict with ``weights_only=True``) writes, per image and method, under
``--out``:

* ``<image>_<method>.png``: the image, every explained box with its label and score, their maps;
* ``<image>_<method>_box<k>.png``: one box and its map;
* ``<image>_<method>.npy``: the maps ``(K, H, W)`` (float32, in ``[0, 1]``);

per image with at least one box ``<image>_grid.png``: one row per box (titled label and score),
the image with that box, then the box's map by each method;

and ``detections.json``: per image its boxes, labels, scores, or why it has none.

``camkit report photo.jpg --task detect --model ...`` (:func:`report_command`) explains the same
way with the same options and writes the single-page HTML report of :func:`camkit.viz.write_report`:
one row per explained box (``photo.jpg: box 0 · dog 0.91``), its image showing that box, its maps
that box's map by each method, and its predictions the image's detections.

``camkit layers --model <detector>`` (:func:`layers_command`) lists a detector's candidate target
layers with their output shapes, the adapter's default marked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from camkit.detect._adapters import adapter_for
from camkit.detect._explain import explain_detections
from camkit.detect._load import FAMILIES, load_detector
from camkit.detect._registry import DETECTION_METHODS, detection_methods
from camkit.detect._result import DetectionExplanation
from camkit.detect._types import Detections
from camkit.engine import output_shapes, reference_tensor
from camkit.registry import get_method

__all__ = [
    "add_detect_arguments",
    "detect_command",
    "detector_layers",
    "is_detector",
    "layers_command",
    "report_command",
]


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--task``, ``--score-threshold`` and ``--max-boxes``; detection methods join ``--method``'s choices."""
    parser.add_argument(
        "--task",
        choices=("classify", "detect"),
        default="classify",
        help="classify (default) or detect: explain an object detector's boxes, one map per box "
        "(--model torchvision:NAME, ultralytics:CONFIG.yaml or transformers:FOLDER; docs/detection.md)",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="--task detect: explain the detections scoring above this (default: 0.5)",
    )
    parser.add_argument(
        "--max-boxes",
        type=int,
        default=20,
        help="--task detect: explain at most this many detections per image, the highest-scoring (default: 20)",
    )
    for action in parser._actions:  # argparse keeps an option's choices on its action
        if action.dest == "method" and action.choices is not None:
            action.choices = [*action.choices, *sorted(set(DETECTION_METHODS) - set(action.choices))]


def fast_detection_methods() -> list[str]:
    """``--method fast`` with ``--task detect``: one forward and one first-order backward per box column, deterministic.

    Not D-RISE or Ablation-CAM (many forwards), not the random baseline, not the second-order
    methods (detectors' box pooling, ``roi_align``, has no second derivative).

    Example:
        >>> "gradcam" in fast_detection_methods(), "shapleycam" in fast_detection_methods()
        (True, False)
    """
    return [
        name
        for name in detection_methods()
        if name not in DETECTION_METHODS
        and get_method(name).cost == "0"
        and not get_method(name).stochastic
        and not get_method(name).needs_hvp
    ]


def _names(asked: Sequence[str] | None) -> list[str]:
    names: list[str] = []
    for name in asked or ["gradcam"]:
        if name == "all":
            names += detection_methods()
        elif name == "fast":
            names += fast_detection_methods()
        else:
            names.append(name)
    accepted = set(detection_methods())
    wrong = [name for name in names if name not in accepted]
    if wrong:
        raise ValueError(f"--method {wrong[0]} is not available with --task detect; use one of {sorted(accepted)}")
    return list(dict.fromkeys(names))


def _check(args: argparse.Namespace) -> None:
    family = str(args.model).partition(":")[0]
    if family not in FAMILIES:
        raise ValueError(
            f"--task detect needs --model torchvision:NAME, ultralytics:CONFIG.yaml or transformers:FOLDER, "
            f"got {args.model!r}"
        )
    if getattr(args, "class_idx", None) is not None or getattr(args, "topk", 1) != 1:
        raise ValueError("--class and --topk apply to classifiers; --task detect explains boxes (--score-threshold)")
    if args.max_boxes < 1:
        raise ValueError(f"--max-boxes must be a positive int, got {args.max_boxes}")
    if getattr(args, "full_image", False):
        raise ValueError("--full-image applies to classifiers; detector maps always cover the whole image")


@dataclass
class _Plan:
    """What a checked ``--task detect`` command runs: the detector, the methods, their options, the layer."""

    model: nn.Module
    names: list[str]
    options: dict[str, Any]
    layer: Any
    categories: list[str] | None


def _prepare(args: argparse.Namespace) -> _Plan:
    """Check the detection arguments, then load the detector (``explain`` and ``report`` alike)."""
    _check(args)
    names = _names(args.method)
    options = dict(args.option)
    if "drise" in names and args.batch_size is not None:  # else D-RISE's own rule: from memory
        options.setdefault("batch_size", args.batch_size)
    categories = None
    if args.labels is not None:
        categories = [line.strip() for line in Path(args.labels).read_text().splitlines() if line.strip()]
    model = load_detector(args.model, checkpoint=args.checkpoint).to(args.device)
    layer = None if not args.layer else args.layer[0] if len(args.layer) == 1 else list(args.layer)
    return _Plan(model, names, options, layer, categories)


def _explained(
    args: argparse.Namespace, plan: _Plan, inputs: Sequence[Any]
) -> Iterator[tuple[Any, DetectionExplanation | str]]:
    """Per input: the explanation of its detections, or why the image could not be read."""
    from camkit.explanation import open_image

    for item in inputs:
        try:
            picture = open_image(item.path)
        except (OSError, ValueError) as error:
            yield item, str(error)
            continue
        result = explain_detections(
            plan.model,
            picture,
            method=plan.names,
            target_layer=plan.layer,
            score_threshold=args.score_threshold,
            max_boxes=args.max_boxes,
            **plan.options,
        )
        if plan.categories is not None:
            result.categories = plan.categories
        yield item, result


def _found(result: DetectionExplanation) -> str:
    """The printed summary of one image: its boxes (label and score), or why it has none."""
    found = result.detections[0]
    labels = [result.label(int(label)) for label in found.labels]
    shown = ", ".join(f"{n} {s:.2f}" for n, s in zip(labels[:5], found.scores.tolist(), strict=False))
    return f"{len(found)} box(es){': ' + shown if shown else ' (' + str(result.reasons[0]) + ')'}"


def _weights(args: argparse.Namespace) -> str:
    return "" if args.checkpoint is not None else " (random weights: pass --checkpoint FILE for yours)"


def detect_command(args: argparse.Namespace, inputs: Sequence[Any]) -> tuple[list[tuple[Any, str]], str]:
    """Run ``camkit explain --task detect``.

    Args:
        args: the parsed ``camkit explain`` arguments.
        inputs: the images, each with ``path`` and ``base`` (its collision-free output name).

    Returns:
        The inputs that could not be read with why, and where the others went: the command line
        lists the first on stderr and exits with 1 when there are any, as for classifiers.

    Raises:
        ValueError: for arguments that do not fit a detector, or when no image could be explained.
    """
    plan = _prepare(args)
    names = plan.names
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table: list[dict[str, Any]] = []
    written = 0
    grids = 0
    failures: list[tuple[Any, str]] = []
    for item, result in _explained(args, plan, inputs):
        if isinstance(result, str):
            failures.append((item, result))
            table.append({"image": str(item.path), "error": result})
            continue
        found = result.detections[0]
        base = out / item.base
        base.parent.mkdir(parents=True, exist_ok=True)
        for name in names:
            result.overlay(0, name, colormap=args.colormap, alpha=args.alpha).save(f"{base}_{name}.png")
            np.save(f"{base}_{name}.npy", result.maps[name][0].numpy().astype(np.float32))
            for k in range(len(found)):
                result.overlay(0, name, box=k, colormap=args.colormap, alpha=args.alpha).save(
                    f"{base}_{name}_box{k}.png"
                )
            written += 1 + len(found)
        grid_file = None
        if len(found):  # boxes x methods, one cell each
            grid_file = f"{base}_grid.png"
            result.grid(0, names, colormap=args.colormap, alpha=args.alpha).save(grid_file)
            grids += 1
        table.append(
            {
                "image": str(item.path),
                "boxes": [[round(v, 2) for v in box] for box in found.boxes.tolist()],
                "labels": found.labels.tolist(),
                "names": [result.label(int(label)) for label in found.labels],
                "scores": [round(v, 4) for v in found.scores.tolist()],
                "reason": result.reasons[0],
                "layers": result.layers,
                "grid": None if grid_file is None else Path(grid_file).relative_to(out).as_posix(),
            }
        )
        print(f"{item.path}: {_found(result)}")
    if len(failures) == len(inputs):
        raise ValueError(f"no image could be read: {failures[0][0].path}: {failures[0][1]}")
    about = {"model": args.model, "methods": names, "score_threshold": args.score_threshold, "images": table}
    (out / "detections.json").write_text(json.dumps(about, indent=2))
    print(
        f"wrote {written} overlay(s) (.png), {grids} grid(s) of boxes x methods (_grid.png), raw maps (.npy) "
        f"and detections.json to {out}/ "
        f"[model {args.model}{_weights(args)}]"
    )
    return failures, f"the other {len(inputs) - len(failures)} were written to {out}/"


#: the longest side of a report row's image: boxes and captions are drawn at this size, so the page shows them sharp
REPORT_IMAGE_SIZE = 320


def _report_rows(key: str, result: DetectionExplanation) -> list[Any]:
    """The report's rows of one image: one per explained box, or one that says why there is none."""
    from camkit.viz.report import ReportRow

    found = result.detections[0]
    picture = result.picture(0)
    scale = min(1.0, REPORT_IMAGE_SIZE / max(picture.size))
    if scale < 1.0:  # shrink first, then draw: lines and captions keep their pixel size
        picture = picture.resize(
            (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))), Image.Resampling.LANCZOS
        )
        shown = Detections(found.boxes * scale, found.labels, found.scores)
        result = dataclasses.replace(result, detections=[shown, *result.detections[1:]])
    predictions = [
        (result.label(int(label)), float(score)) for label, score in zip(found.labels, found.scores, strict=True)
    ]
    if not len(found):
        return [ReportRow(f"{key}: no detections ({result.reasons[0]})", picture, [], {})]
    return [
        ReportRow(
            title=f"{key}: box {k} · {result.caption(0, k)}",
            image=result.draw_boxes(picture.copy(), 0, [k]),
            predictions=predictions,
            maps={name: maps[0][k] for name, maps in result.maps.items()},
        )
        for k in range(len(found))
    ]


def report_command(args: argparse.Namespace, inputs: Sequence[Any]) -> tuple[list[tuple[Any, str]], str]:
    """Run ``camkit report --task detect``: the HTML report with one row per explained box.

    Each row is titled ``<image>: box <k> · <label> <score>`` (``k`` as in the ``_box<k>.png`` files
    of ``camkit explain --task detect``); its image is the detector's input with that box and its
    caption drawn, its maps are that box's map by each method, and its predictions are the image's
    detections (label, score). An image without a detection above ``--score-threshold`` gets one
    row that says so, with no maps. The report has no metric or sanity columns: ``--metrics-steps``
    and ``--sanity`` (class-score deletion/insertion and model randomisation) apply to classifiers.

    Args:
        args: the parsed ``camkit report`` arguments.
        inputs: the images, each with ``path`` and ``key`` (its name in the report).

    Returns:
        The inputs that could not be read with why, and where the others went (as
        :func:`detect_command`).

    Raises:
        ValueError: for arguments that do not fit a detector, or when no image could be explained.
    """
    from camkit.viz.report import write_report

    if args.metrics_steps:
        raise ValueError(
            "--metrics-steps applies to classifiers (class-score deletion/insertion); camkit report --task detect "
            "computes no metrics: drop it (or pass --metrics-steps 0); for a per-box score see "
            "DetectionExplanation.pointing_game in docs/detection.md"
        )
    if args.sanity:
        raise ValueError(
            "--sanity applies to classifiers; camkit report --task detect has no model-randomisation check: drop it"
        )
    plan = _prepare(args)
    rows: list[Any] = []
    failures: list[tuple[Any, str]] = []
    boxes = 0
    for item, result in _explained(args, plan, inputs):
        if isinstance(result, str):
            failures.append((item, result))
            continue
        rows += _report_rows(item.key, result)
        boxes += len(result.detections[0])
        print(f"{item.key}: {_found(result)}")
    if not rows:
        raise ValueError(f"no image could be read: {failures[0][0].path}: {failures[0][1]}")
    subtitle = (
        f"model {args.model}{_weights(args)}; the detections scoring above {args.score_threshold:g} "
        f"(at most {args.max_boxes} per image), one row per box"
    )
    path = write_report(
        args.out,
        rows,
        title="camkit report: detections",
        subtitle=subtitle,
        colormap=args.colormap,
        alpha=args.alpha,
        max_image_size=REPORT_IMAGE_SIZE,
    )
    images = len(inputs) - len(failures)
    print(
        f"wrote {path} ({images} image(s), {boxes} box(es) x {len(plan.names)} method(s))"
        f" [model {args.model}{_weights(args)}]"
    )
    return failures, f"the other {images} are in {path}"


def is_detector(spec: str) -> bool:
    """Whether ``--model spec`` names a detector: ``ultralytics:``, ``transformers:``, a torchvision detection builder.

    Example:
        >>> is_detector("torchvision:fasterrcnn_resnet50_fpn"), is_detector("torchvision:resnet18")
        (True, False)
    """
    family, _, name = str(spec).partition(":")
    if family in ("ultralytics", "transformers"):
        return bool(name)
    if family != "torchvision" or not name:
        return False
    try:
        from torchvision.models import detection  # type: ignore[import-untyped]
    except ImportError:
        return False
    return name[:1].islower() and callable(getattr(detection, name, None))


def detector_layers(
    model: nn.Module, size: tuple[int, int] = (640, 640)
) -> tuple[list[tuple[str, tuple[int, ...]]], str]:
    """Every layer of a detector's hooked module with the output shape of its last call, and the default layer.

    One gray image of ``size`` ``(H, W)`` goes through the adapter (:meth:`DetectorAdapter.run`,
    so through the detector's own resizing and padding) in eval mode without gradients; the model's
    flags are restored after.

    Args:
        model: the detector (any model :func:`~camkit.detect.adapter_for` takes).
        size: the dummy image's ``(H, W)``.

    Returns:
        ``(name, output shape)`` of every submodule whose (last) output is a tensor, in the order
        of their last calls (names relative to the adapter's module, as ``target_layer`` takes
        them), and the adapter's automatic layer (``""`` when it cannot choose one).

    Example:
        >>> from torchvision.models.detection import ssdlite320_mobilenet_v3_large
        >>> model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
        >>> shapes, default = detector_layers(model, (96, 96))
        >>> default, dict(shapes)[default]
        ('backbone.features.1', (1, 480, 10, 10))
    """
    adapter = adapter_for(model)
    ref = reference_tensor(adapter.module)
    image = torch.full((3, *size), 0.5, device=None if ref is None else ref.device)
    with output_shapes(adapter.module) as shapes, adapter.session(), torch.no_grad():
        adapter.run([image])
    try:
        default = adapter.default_layer()
    except ValueError:
        default = ""
    return list(shapes.items()), default


def layers_command(args: argparse.Namespace) -> int:
    """``camkit layers --model <detector>``: the candidate target layers, the adapter's default marked.

    Without ``--all`` only layers with a spatial output of the one image (``(1, C, H, W)``) are
    listed: per-box outputs (a Faster R-CNN RoI head's ``(boxes, C, 7, 7)``) and token or vector
    outputs are left out.

    Args:
        args: the parsed ``camkit layers`` arguments (``--model``, ``--checkpoint``, ``--device``,
            ``--input-size``, ``--all``).

    Returns:
        The exit code (0).

    Raises:
        ValueError: for a bad ``--input-size``, model name or checkpoint.
    """
    if args.input_size is not None and args.input_size < 1:
        raise ValueError(f"--input-size must be at least 1, got {args.input_size}")
    model = load_detector(args.model, checkpoint=args.checkpoint)
    adapter = adapter_for(model)
    try:
        adapter.module.to(args.device)
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"device {args.device!r} is not usable here ({error}); try --device cpu") from None
    side = args.input_size or 640
    shapes, default = detector_layers(model, (side, side))
    header = (
        f"[detector {args.model} ({type(adapter).__name__}), one {side}x{side} image through the model's own "
        "resizing; a layer called more than once: its last call]"
    )
    print(f"{'layer':<40} output shape   {header}")
    for name, shape in shapes:
        if not args.all and (len(shape) != 4 or shape[0] != 1):
            continue
        mark = "  <- default" if name == default else ""
        print(f"{name:<40} {'x'.join(map(str, shape[1:]))}{mark}")
    if not default:
        print("(the adapter picks no layer by itself for this model: pass --layer NAME)")
    return 0
