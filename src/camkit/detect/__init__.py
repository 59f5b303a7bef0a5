r"""Explaining object detectors: one map per box, with no wrapper to write.

:func:`explain_detections` runs a detector through its :class:`DetectorAdapter` (torchvision,
Ultralytics YOLO and Hugging Face DETR are found automatically), explains its detections (or
given boxes) with gradient methods, the class-agnostic Eigen-CAM family, Ablation-CAM or D-RISE, and returns
a :class:`DetectionExplanation` with ``.detections[i]``, ``.maps[method][i]`` ``(K, H, W)`` and
``.overlay(i, method)``. See docs/detection.md.

Example:
    >>> import torch
    >>> from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    >>> from camkit.detect import explain_detections
    >>> model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    >>> result = explain_detections(model, torch.rand(3, 96, 128), boxes=[[8.0, 8.0, 60.0, 50.0]], labels=[1],
    ...                             method=["gradcam", "eigencam"])
    >>> sorted(result.maps), tuple(result.maps["eigencam"][0].shape)
    (['eigencam', 'gradcam'], (1, 96, 128))
"""

from __future__ import annotations

from camkit.detect._adapters import ADAPTERS as ADAPTERS
from camkit.detect._adapters import DetectorAdapter as DetectorAdapter
from camkit.detect._adapters import DetrAdapter as DetrAdapter
from camkit.detect._adapters import TorchvisionAdapter as TorchvisionAdapter
from camkit.detect._adapters import YoloAdapter as YoloAdapter
from camkit.detect._adapters import adapter_for as adapter_for
from camkit.detect._adapters import require as require
from camkit.detect._command import detector_layers as detector_layers
from camkit.detect._drise import random_masks as random_masks
from camkit.detect._explain import explain_detections as explain_detections
from camkit.detect._load import load_detector as load_detector
from camkit.detect._registry import DETECTION_METHODS as DETECTION_METHODS
from camkit.detect._registry import DetectionContext as DetectionContext
from camkit.detect._registry import DetectionMethod as DetectionMethod
from camkit.detect._registry import detection_methods as detection_methods
from camkit.detect._registry import register_detection_method as register_detection_method
from camkit.detect._result import DetectionExplanation as DetectionExplanation
from camkit.detect._target import BoxColumn as BoxColumn
from camkit.detect._target import BoxScores as BoxScores
from camkit.detect._target import box_scores as box_scores
from camkit.detect._types import Candidates as Candidates
from camkit.detect._types import Detections as Detections
from camkit.detect._types import Frame as Frame
from camkit.detect._types import box_iou as box_iou

__all__ = [
    "ADAPTERS",
    "DETECTION_METHODS",
    "BoxColumn",
    "BoxScores",
    "Candidates",
    "DetectionContext",
    "DetectionExplanation",
    "DetectionMethod",
    "Detections",
    "DetectorAdapter",
    "DetrAdapter",
    "Frame",
    "TorchvisionAdapter",
    "YoloAdapter",
    "adapter_for",
    "box_iou",
    "box_scores",
    "detection_methods",
    "detector_layers",
    "explain_detections",
    "load_detector",
    "random_masks",
    "register_detection_method",
    "require",
]
