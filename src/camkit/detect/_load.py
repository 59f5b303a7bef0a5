"""Build a detector by name, offline (random init from its config), optionally with the user's weights.

The names the ``camkit`` command will take with ``--task detect`` (``--model``):

* ``torchvision:<builder>``, e.g. ``torchvision:fasterrcnn_mobilenet_v3_large_320_fpn``: the
  builder of :mod:`torchvision.models.detection` with ``weights=None, weights_backbone=None``;
* ``ultralytics:<config>``, e.g. ``ultralytics:yolov8n.yaml``: ``ultralytics.YOLO(config)`` from
  a bundled or local YAML config (a ``.pt`` name would make Ultralytics download or unpickle it);
* ``transformers:<folder>``: ``AutoModelForObjectDetection.from_pretrained(folder,
  local_files_only=True)`` from a local folder.

``checkpoint`` is a state dict file read with ``torch.load(..., weights_only=True)`` (no pickled
code runs) and loaded strictly into the model (for YOLO: into its ``DetectionModel``).

Example:
    >>> model = load_detector("torchvision:ssdlite320_mobilenet_v3_large", num_classes=3)
    >>> type(model).__name__
    'SSD'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camkit.detect._adapters import YoloAdapter, require

__all__ = ["FAMILIES", "load_detector"]

#: the prefixes :func:`load_detector` accepts
FAMILIES = ("torchvision", "ultralytics", "transformers")


def _torchvision(name: str, num_classes: int | None) -> nn.Module:
    from torchvision.models import detection  # type: ignore[import-untyped]

    builders = sorted(n for n in dir(detection) if n[0].islower() and callable(getattr(detection, n)))
    builder = getattr(detection, name, None)
    if builder is None or name not in builders:
        raise ValueError(f"torchvision has no detector {name!r}; available: {', '.join(builders)}")
    extra = {} if num_classes is None else {"num_classes": num_classes}
    model: nn.Module = builder(weights=None, weights_backbone=None, **extra)
    return model


def _ultralytics(name: str) -> nn.Module:
    if not name.endswith((".yaml", ".yml")):
        raise ValueError(
            f"ultralytics:{name}: camkit builds YOLO from a config (e.g. ultralytics:yolov8n.yaml) and loads weights "
            "only as a state dict (checkpoint=, read with weights_only=True); save yours with "
            "torch.save(YOLO('best.pt').model.state_dict(), 'weights.pt')"
        )
    os.environ.setdefault("YOLO_OFFLINE", "1")
    ultralytics = require("ultralytics")
    model: nn.Module = ultralytics.YOLO(name)
    return model


def _transformers(name: str) -> nn.Module:
    if not Path(name).is_dir():
        raise ValueError(
            f"transformers:{name} is not a local folder: camkit loads Hugging Face detectors offline from a folder "
            "holding config.json and the weights (model.save_pretrained(folder))"
        )
    transformers = require("transformers")
    model: nn.Module = transformers.AutoModelForObjectDetection.from_pretrained(name, local_files_only=True)
    return model


def load_detector(
    spec: str, *, checkpoint: str | os.PathLike[str] | None = None, num_classes: int | None = None
) -> nn.Module:
    """Build a detector from ``family:name``, offline.

    Args:
        spec: ``torchvision:<builder>``, ``ultralytics:<config.yaml>`` or ``transformers:<folder>``.
        checkpoint: a state dict file (``torch.save(model.state_dict(), path)``) loaded with
            ``weights_only=True`` and ``strict=True``.
        num_classes: the number of classes of a torchvision detector (its default otherwise).

    Returns:
        The model (for Ultralytics: the ``YOLO`` object).

    Raises:
        ValueError: for an unknown family or name, a missing or mismatched checkpoint.
        ImportError: when ``ultralytics``/``transformers`` is missing (``pip install camkit[detect]``).
    """
    family, _, name = spec.partition(":")
    if family not in FAMILIES or not name:
        raise ValueError(
            f"model {spec!r} must be family:name with family one of {', '.join(FAMILIES)} "
            "(e.g. torchvision:fasterrcnn_mobilenet_v3_large_320_fpn, ultralytics:yolov8n.yaml)"
        )
    if num_classes is not None and family != "torchvision":
        raise ValueError(f"num_classes applies to torchvision detectors; {family} takes it from the config")
    if family == "torchvision":
        model = _torchvision(name, num_classes)
    else:
        model = _ultralytics(name) if family == "ultralytics" else _transformers(name)
    if checkpoint is not None:
        target: Any = YoloAdapter(model).module if family == "ultralytics" else model
        path = Path(checkpoint)
        if not path.is_file():
            raise ValueError(f"checkpoint {str(path)!r} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a pickled object instead of a state dict, a corrupt file
            raise ValueError(
                f"cannot read {str(path)!r} as a state dict with weights_only=True ({error}); "
                "save one with torch.save(model.state_dict(), path)"
            ) from None
        try:
            target.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(f"checkpoint {str(path)!r} does not fit {spec}: {first}") from None
    return model
