"""``camkit explain --task detect``: one overlay per box and method, the raw maps, a detections table.

``camkit explain photo.jpg --task detect --model ultralytics:yolov8n.yaml`` (or
``torchvision:fasterrcnn_mobilenet_v3_large_320_fpn``, ``transformers:FOLDER``; ``--checkpoint
FILE`` loads your state dict with ``weights_only=True``) writes, per image and method, under
``--out``:

* ``<image>_<method>.png``: the image, every explained box with its label and score, their maps;
* ``<image>_<method>_box<k>.png``: one box and its map;
* ``<image>_<method>.npy``: the maps ``(K, H, W)`` (float32, in ``[0, 1]``);

and ``detections.json``: per image its boxes, labels, scores, or why it has none.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camkit.detect._explain import DETECTION_METHODS, detection_methods, explain_detections
from camkit.detect._load import FAMILIES, load_detector

__all__ = ["add_detect_arguments", "detect_command"]


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


def _names(asked: Sequence[str] | None) -> list[str]:
    names: list[str] = []
    for name in asked or ["gradcam"]:
        if name == "all":
            names += detection_methods()
        elif name == "fast":  # one forward and one backward per box column
            names += [n for n in detection_methods() if n not in DETECTION_METHODS]
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


def detect_command(args: argparse.Namespace, inputs: Sequence[Any]) -> int:
    """Run ``camkit explain --task detect``.

    Args:
        args: the parsed ``camkit explain`` arguments.
        inputs: the images, each with ``path`` and ``base`` (its collision-free output name).

    Returns:
        The exit code (0).

    Raises:
        ValueError: for arguments that do not fit a detector, or when no image could be explained.
    """
    _check(args)
    names = _names(args.method)
    options = dict(args.option)
    if "drise" in names:
        options.setdefault("batch_size", args.batch_size)
    categories = None
    if args.labels is not None:
        categories = [line.strip() for line in Path(args.labels).read_text().splitlines() if line.strip()]
    model = load_detector(args.model, checkpoint=args.checkpoint).to(args.device)
    layer = None if not args.layer else args.layer[0] if len(args.layer) == 1 else list(args.layer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table: list[dict[str, Any]] = []
    written = 0
    failures: list[str] = []
    from camkit.explanation import open_image

    for item in inputs:
        try:
            picture = open_image(item.path)
        except (OSError, ValueError) as error:
            failures.append(f"{item.path}: {error}")
            table.append({"image": str(item.path), "error": str(error)})
            continue
        result = explain_detections(
            model,
            picture,
            method=names,
            target_layer=layer,
            score_threshold=args.score_threshold,
            max_boxes=args.max_boxes,
            **options,
        )
        if categories is not None:
            result.categories = categories
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
        labels = [result.label(int(label)) for label in found.labels]
        table.append(
            {
                "image": str(item.path),
                "boxes": [[round(v, 2) for v in box] for box in found.boxes.tolist()],
                "labels": found.labels.tolist(),
                "names": labels,
                "scores": [round(v, 4) for v in found.scores.tolist()],
                "reason": result.reasons[0],
                "layers": result.layers,
            }
        )
        shown = ", ".join(f"{n} {s:.2f}" for n, s in zip(labels[:5], found.scores.tolist(), strict=False))
        print(f"{item.path}: {len(found)} box(es){': ' + shown if shown else ' (' + str(result.reasons[0]) + ')'}")
    if len(failures) == len(inputs):
        raise ValueError(f"no image could be read: {failures[0]}")
    about = {"model": args.model, "methods": names, "score_threshold": args.score_threshold, "images": table}
    (out / "detections.json").write_text(json.dumps(about, indent=2))
    weights = "" if args.checkpoint is not None else " (random weights: pass --checkpoint FILE for yours)"
    print(
        f"wrote {written} overlay(s) (.png), raw maps (.npy) and detections.json to {out}/ "
        f"[model {args.model}{weights}]"
    )
    for failure in failures:
        print(f"skipped {failure}")
    return 0
