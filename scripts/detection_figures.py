"""Draw the per-adapter figures of docs/detection.md: one boxes × methods grid per detector family.

No pretrained detector weights are available offline, so every model here has **random weights**
(``torch.manual_seed(0)``) and explains **given boxes**, drawn by hand around the person and the
tie in the bundled photograph of Grace Hopper (assets/grace_hopper.jpg). The captions show the
class names of those hand-picked boxes and the score of the best-matching prediction of the
random model (near zero). The figures show what camkit draws for each adapter (a box's map
from one forward and one backward, cropped and resized to the image), not what a trained
detector looks at.

Run ``python scripts/detection_figures.py [torchvision] [yolo] [detr]`` to rewrite
docs/images/detect_{torchvision,yolo,detr}.png (all three by default; about two minutes on a CPU).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from camkit.detect import DetectionExplanation, explain_detections, require

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
PHOTO = ROOT / "assets" / "grace_hopper.jpg"
#: hand-picked boxes (x1, y1, x2, y2) in the photo's 512 x 600 pixels: the person, the tie
BOXES = [[20.0, 25.0, 510.0, 598.0], [212.0, 405.0, 300.0, 482.0]]
METHODS = ["gradcam", "layercam", "eigencam"]
LIMIT = 300_000  # bytes per figure


def _names(count: int, person: int, tie: int) -> list[str]:
    names = [str(i) for i in range(count)]
    names[person], names[tie] = "person", "tie"
    return names


def torchvision_faster_rcnn() -> tuple[nn.Module, list[int], list[str]]:
    """Faster R-CNN ResNet-50 FPN with COCO's 91 classes (1 person, 32 tie).

    It keeps every (box, class) pair of its proposals (``box_detections_per_img``): of a random
    model's 100 best, none need be a person or a tie, and a given box needs a prediction of its label.
    """
    from torchvision.models.detection import fasterrcnn_resnet50_fpn  # type: ignore[import-untyped]

    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=600, max_size=600, box_detections_per_img=100_000
    )
    return model, [1, 32], _names(91, 1, 32)


def yolov8() -> tuple[nn.Module, list[int], list[str]]:
    """YOLOv8n from its config with COCO's 80 classes (0 person, 27 tie)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="camkit-ultralytics-"))
    ultralytics = require("ultralytics")
    torch.manual_seed(0)
    model: nn.Module = ultralytics.YOLO("yolov8n.yaml")
    return model, [0, 27], _names(80, 0, 27)


def detr() -> tuple[nn.Module, list[int], list[str]]:
    """DETR with a ResNet-50-sized backbone, built from configs (1 person, 2 tie of 3 classes)."""
    transformers = require("transformers")
    backbone = transformers.ResNetConfig(out_features=["stage4"])
    config = transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, num_labels=3
    )
    torch.manual_seed(0)
    return transformers.DetrForObjectDetection(config), [1, 2], ["background", "person", "tie"]


FIGURES: dict[str, Callable[[], tuple[nn.Module, list[int], list[str]]]] = {
    "torchvision": torchvision_faster_rcnn,
    "yolo": yolov8,
    "detr": detr,
}


def save_small(figure: Image.Image, path: Path) -> None:
    """Save ``figure`` as PNG, as a 256-colour palette image when the full-colour one exceeds :data:`LIMIT`."""
    figure.save(path, optimize=True)
    if path.stat().st_size > LIMIT:
        figure.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def figure(name: str) -> tuple[Path, DetectionExplanation]:
    """Explain the hand-picked boxes with one family's random-init model and write its grid."""
    model, labels, categories = FIGURES[name]()
    image = Image.open(PHOTO).convert("RGB")
    result = explain_detections(model, image, boxes=BOXES, labels=labels, method=METHODS)
    result.categories = categories
    path = OUT / f"detect_{name}.png"
    save_small(result.grid(0, METHODS, cell_size=200), path)
    return path, result


def main(names: list[str] | None = None) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names or list(FIGURES):
        path, result = figure(name)
        layers = ", ".join(sorted({layer for used in result.layers.values() for layer in used}))
        found: Any = result.detections[0]
        scores = ", ".join(f"{float(s):.3f}" for s in found.scores)
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB, layer {layers}, box scores {scores}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
