"""The store's sanity verdicts (``camkit run --sanity``): one model-randomisation check per method of the run.

Before the run explains its images, rank 0 runs :func:`camkit.sanity.model_randomization` once on
the first ``images`` readable images of the source (in the source's order), with the run's model,
methods, layer, method options and first explained class, and writes each method's verdict into
the store's ``camkit-store.json`` under ``"sanity"``::

    {"check": "model_randomization",
     "settings": {"images": 4, "mode": "cascading", "threshold": 0.5,
                  "similarity": ["spearman", "ssim", "hog_pearson"], "seed": 0},
     "images": ["cat/000.png", "..."], "classes": [3, 1], "layers": ["classifier", "..."],
     "methods": {"gradcam": {"passed": true, "similarity": {"spearman": 0.08, "ssim": 0.21, "hog_pearson": 0.11},
                             "per_image": {"spearman": [0.1, 0.06], "...": []}}}}

``similarity`` is what the pass rule reads (:attr:`camkit.sanity.ModelRandomization.scores`: the
mean over the images at full randomisation, cascading; at the step closest to 0, independent);
a non-finite value is ``null``. A resumed run with the same settings keeps the stored verdicts;
other settings replace them (the store's other options are checked as always: verdicts never
outlive the maps they belong to). The images go through the model in chunks of the run's batch
size (each chunk randomises its own copy of the model with the same seeded draws, so the
verdicts equal one call on all the images).

Example:
    >>> sanity_settings(4, "cascading")["similarity"]
    ['spearman', 'ssim', 'hog_pearson']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from camkit.engine import LayerSpec
from camkit.models import LoadedModel
from camkit.runner.data import Items, Source

__all__ = ["SANITY_IMAGES", "check_sanity", "compute_sanity", "describe", "sanity_settings", "stored_sanity"]

#: images of the check by default
SANITY_IMAGES = 4
#: the similarity measures of the check (all of :data:`camkit.sanity.MEASURES`)
MEASURES = ("spearman", "ssim", "hog_pearson")


def check_sanity(images: int, mode: str) -> None:
    """Refuse a bad image count or mode with a one-line ``ValueError``.

    Example:
        >>> check_sanity(0, "cascading")
        Traceback (most recent call last):
        ...
        ValueError: sanity_images must be a positive int, got 0
    """
    from camkit.sanity import MODES

    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"sanity_images must be a positive int, got {images!r}")
    if mode not in MODES:
        raise ValueError(f"sanity_mode must be one of {', '.join(MODES)}, got {mode!r}")


def sanity_settings(images: int, mode: str) -> dict[str, Any]:
    """What the stored verdicts depend on besides the store's options (compared when a run resumes)."""
    from camkit.sanity import DEFAULT_THRESHOLD

    return {"images": images, "mode": mode, "threshold": DEFAULT_THRESHOLD, "similarity": list(MEASURES), "seed": 0}


def stored_sanity(meta: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any] | None:
    """The store's verdicts when they were made with ``settings`` (else ``None``: compute them)."""
    found = meta.get("sanity")
    return found if isinstance(found, dict) and found.get("settings") == settings else None


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


def _first_images(src: Source, items: Items, count: int, need_label: bool) -> tuple[list[str], Tensor, list[int]]:
    """The first ``count`` readable images of the source (with a label where the target needs one)."""
    keys: list[str] = []
    tensors: list[Tensor] = []
    labels: list[int] = []
    for index in range(len(src.keys)):
        if len(keys) == count:
            break
        item = items[index]
        if item.pixels is None or (need_label and item.label is None):
            continue
        if tensors and item.pixels.shape != tensors[0].shape:
            continue
        keys.append(src.keys[index])
        tensors.append(item.pixels)
        labels.append(int(item.label or 0))
    if not tensors:
        what = "could be read with a label (--target label)" if need_label else "could be read"
        raise ValueError(f"--sanity: none of the source's images {what}, so no check can run")
    return keys, torch.stack(tensors), labels


def compute_sanity(
    src: Source,
    loaded: LoadedModel,
    methods: Sequence[str],
    layer: LayerSpec,
    rule: tuple[str, int],
    settings: dict[str, Any],
    batch_size: int,
    device: torch.device,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Run the check on the first images and return the store's ``"sanity"`` entry (see the module docstring).

    Args:
        src: the run's source.
        loaded: the run's model (on ``device``, in eval mode).
        methods: the run's methods.
        layer: the run's layer argument (``None``: the model's).
        rule: the run's parsed target; the check explains the first class it picks (the top class
            for ``pred`` and ``topk:K``).
        settings: :func:`sanity_settings`.
        batch_size: images per chunk (and per forward of the methods that re-run the model).
        device: where the model is.
        options: the run's method options.
    """
    from camkit.sanity import ModelRandomization, model_randomization

    keys, x, labels = _first_images(src, Items(src, loaded.preprocess), settings["images"], rule[0] == "label")
    similarity: dict[str, list[Tensor]] = {m: [] for m in settings["similarity"]}
    classes: list[Tensor] = []
    result = None
    for start in range(0, len(keys), batch_size):
        chunk = x[start : start + batch_size].to(device)
        if rule[0] == "class":
            class_idx: Any = rule[1]
        elif rule[0] == "label":
            class_idx = labels[start : start + batch_size]
        else:
            class_idx = None
        result = model_randomization(
            loaded,
            chunk,
            list(methods),
            layer,
            class_idx,
            mode=settings["mode"],
            similarity=settings["similarity"],
            threshold=settings["threshold"],
            generator=torch.Generator().manual_seed(settings["seed"]),
            batch_size=batch_size,
            progress=False,
            keep_maps=False,
            **options,
        )
        for measure, values in result.similarity.items():
            similarity[measure].append(values)
        classes.append(result.classes)
    assert result is not None
    merged = ModelRandomization(
        result.mode,
        result.methods,
        result.layers,
        torch.cat(classes),
        {m: torch.cat(v, dim=1) for m, v in similarity.items()},
        torch.empty(0),
        result.threshold,
        torch.empty(0),
    )
    step = -1 if merged.mode == "cascading" else None
    verdicts: dict[str, Any] = {}
    for j, name in enumerate(merged.methods):
        scores = merged.scores[name]
        per_image: dict[str, list[float | None]] = {}
        for measure, values in merged.similarity.items():
            if step is None:  # independent: each image at the step the verdict reads
                mean = values[..., j].double().mean(dim=1)
                at = int(mean.abs().argmin())
            else:
                at = step
            per_image[measure] = [_finite(v) for v in values[at, :, j].tolist()]
        verdicts[name] = {
            "passed": merged.passed[name],
            "similarity": {m: _finite(v) for m, v in scores.items()},
            "per_image": per_image,
        }
    return {
        "check": "model_randomization",
        "settings": settings,
        "images": keys,
        "classes": [int(c) for c in merged.classes.tolist()],
        "layers": merged.layers,
        "methods": verdicts,
    }


def describe(entry: dict[str, Any]) -> str:
    """One line for the run's summary: each method's verdict.

    Example:
        >>> describe({"settings": {"mode": "cascading"}, "images": ["a", "b"],
        ...           "methods": {"gradcam": {"passed": True}, "edges": {"passed": False}}})
        'sanity (cascading model randomisation, 2 images): gradcam pass, edges FAIL'
    """
    count = len(entry.get("images", []))
    verdicts = ", ".join(f"{m} {'pass' if v.get('passed') else 'FAIL'}" for m, v in entry.get("methods", {}).items())
    mode = entry.get("settings", {}).get("mode", "")
    return f"sanity ({mode} model randomisation, {count} image{'s' if count != 1 else ''}): {verdicts}"
