"""``torchcam.explain``: explain one image's prediction with one extractor class, TorchCAM's call.

:func:`explain` runs a camkit extractor (default :class:`camkit.methods.GradCAM`) on a
``(1, C, H, W)`` input and returns a :class:`PredictionExplanation` with the logits, the predicted
(and expected) class and their maps; :meth:`PredictionExplanation.save` writes TorchCAM's bundle
(maps, heatmaps, overlays, and ``manifest.json`` schema version 1, written last). For several
methods, images or classes at once, see :func:`camkit.explain`.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from PIL import Image as _PIL
from PIL.Image import Image
from torch import Tensor, nn

import camkit
from camkit.compat.torchcam.utils import overlay_mask
from camkit.engine import CAMExtractor, HookedExtractor
from camkit.methods import GradCAM

__all__ = ["PredictionExplanation", "explain"]

#: the version of the bundle layout :meth:`PredictionExplanation.save` writes (TorchCAM's schema 1)
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PredictionExplanation:
    """Prediction, class activation maps (one ``(H, W)`` CPU tensor per layer) and metadata for one image."""

    logits: Tensor
    predicted_class_idx: int
    expected_class_idx: int | None
    cams: Mapping[int, tuple[Tensor, ...]]
    method: str
    target_layers: tuple[str, ...]
    model: str
    input_shape: tuple[int, ...]
    versions: Mapping[str, str]
    class_names: tuple[str, ...] | None = None

    def save(self, directory: str | Path, image: Image, alpha: float = 0.5) -> Path:
        """Write the maps, heatmaps, overlays and ``manifest.json`` (schema 1) to a NEW directory.

        For each class and map ``i``: ``class-<c>-layer-<i>.npy`` (the float32 map),
        ``class-<c>-layer-<i>-heatmap.png`` (8-bit grayscale) and ``class-<c>-layer-<i>-overlay.png``
        (:func:`camkit.compat.torchcam.utils.overlay_mask` on ``image``). ``manifest.json`` is written
        last, so its presence marks a complete bundle; on an error nothing is left behind.

        Args:
            directory: the output directory; it must not exist yet.
            image: the source image the overlays are drawn on (any size).
            alpha: the image's weight in the overlays.

        Returns:
            The directory.

        Raises:
            TypeError: when ``image`` is not a PIL image.
            FileExistsError: when ``directory`` exists (bundles are never overwritten).
        """
        if not isinstance(image, Image):
            raise TypeError(
                f"`image` must be a PIL image (PIL.Image.open(path).convert('RGB')), got {type(image).__name__}"
            )
        out = Path(directory)
        if out.exists():
            raise FileExistsError(f"output directory already exists: {out}; pass a new directory")
        out.mkdir(parents=True)
        try:
            manifest = self._write_artifacts(out, image, alpha)
            text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False)
            (out / "manifest.json").write_text(text + "\n", encoding="utf-8")
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
        return out

    def _write_artifacts(self, out: Path, image: Image, alpha: float) -> dict[str, Any]:
        probabilities = torch.softmax(self.logits.double(), dim=1)[0]
        classes: dict[str, Any] = {}
        for class_idx in sorted(self.cams):
            maps = self.cams[class_idx]
            # one map for all layers (a reducing method) or one per layer
            layers = [list(self.target_layers)] if len(maps) == 1 else [[name] for name in self.target_layers]
            artifacts = []
            for i, (cam, names) in enumerate(zip(maps, layers, strict=True)):
                values = cam.numpy().astype(np.float32, copy=False)
                files = {kind: f"class-{class_idx}-layer-{i}{suffix}" for kind, suffix in _SUFFIXES.items()}
                np.save(out / files["map"], values, allow_pickle=False)
                grey = np.rint(255 * np.clip(values, 0.0, 1.0)).astype(np.uint8)
                _PIL.fromarray(grey, mode="L").save(out / files["heatmap"])
                overlay_mask(image, _PIL.fromarray(values, mode="F"), alpha=alpha).save(out / files["overlay"])
                artifacts.append({"target_layers": names, **files})
            classes[str(class_idx)] = {
                "class_idx": class_idx,
                "class_name": self._name(class_idx),
                "logit": float(self.logits[0, class_idx]),
                "probability": float(probabilities[class_idx]),
                "artifacts": artifacts,
            }
        return {
            "schema_version": SCHEMA_VERSION,
            "prediction": self._reference(self.predicted_class_idx),
            "expected": self._reference(self.expected_class_idx),
            "classes": classes,
            "method": self.method,
            "target_layers": list(self.target_layers),
            "model": self.model,
            "input_shape": list(self.input_shape),
            "versions": dict(self.versions),
            "image_size": list(image.size),
            "alpha": alpha,
        }

    def _name(self, class_idx: int) -> str | None:
        return self.class_names[class_idx] if self.class_names is not None else None

    def _reference(self, class_idx: int | None) -> dict[str, Any] | None:
        return None if class_idx is None else {"class_idx": class_idx, "class_name": self._name(class_idx)}


_SUFFIXES = {"map": ".npy", "heatmap": "-heatmap.png", "overlay": "-overlay.png"}


def _validate_logits(output: Any) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError(
            "model output must be a tensor; wrap models that return tuples or dicts (or use camkit.explain)"
        )
    if output.ndim != 2 or output.shape[0] != 1 or output.shape[1] < 1:
        raise ValueError(f"model output must have shape (1, num_classes), got {tuple(output.shape)}")
    if not torch.isfinite(output).all():
        raise ValueError("model output contains non-finite logits")
    return output


def _prepare_maps(maps: list[Tensor]) -> tuple[Tensor, ...]:
    if not maps:
        raise ValueError("the extractor returned no CAMs: check target_layer")
    for cam in maps:
        if not isinstance(cam, Tensor) or cam.ndim != 3 or cam.shape[0] != 1:
            shape = tuple(cam.shape) if isinstance(cam, Tensor) else type(cam).__name__
            raise ValueError(f"CAMs must have shape (1, height, width) (one 2D image), got {shape}")
        if not torch.isfinite(cam).all():
            raise ValueError("the CAM contains non-finite values: try another target_layer, or check the model")
    return tuple(cam[0].detach().to(device="cpu", dtype=torch.float32).contiguous() for cam in maps)


def _check(
    model: nn.Module, input_tensor: Tensor, expected_class_idx: int | None, method: Any, method_kwargs: Any
) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if any(module.training for module in model.modules()):
        raise ValueError("`model` must be in evaluation mode; call model.eval() first")
    if not isinstance(input_tensor, Tensor):
        raise TypeError(f"`input_tensor` must be a torch.Tensor, got {type(input_tensor).__name__}")
    if input_tensor.ndim != 4 or input_tensor.shape[0] != 1:
        raise ValueError(
            f"`input_tensor` must have shape (1, channels, height, width), got {tuple(input_tensor.shape)}: "
            "explain one image at a time (x.unsqueeze(0)), or use camkit.explain for batches"
        )
    if not input_tensor.is_floating_point():
        raise ValueError(f"`input_tensor` must have a floating-point dtype, got {input_tensor.dtype}: use .float()")
    if expected_class_idx is not None and (
        not isinstance(expected_class_idx, int) or isinstance(expected_class_idx, bool)
    ):
        raise TypeError(f"`expected_class_idx` must be an integer or None, got {expected_class_idx!r}")
    if not isinstance(method, type) or not issubclass(method, HookedExtractor):
        raise TypeError(
            f"`method` must be a CAM extractor class (camkit.methods.GradCAM, LayerCAM, LeGrad, ...), got {method!r}"
        )
    if method_kwargs is not None and not isinstance(method_kwargs, Mapping):
        raise TypeError(f"`method_kwargs` must be a mapping or None, got {type(method_kwargs).__name__}")


def _names(class_names: Sequence[str] | None, n_classes: int) -> tuple[str, ...] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str) or len(class_names) != n_classes:
        raise ValueError(f"`class_names` length must match the number of model classes ({n_classes})")
    if any(not isinstance(name, str) for name in class_names):
        raise TypeError("every class name must be a string")
    return tuple(class_names)


def explain(
    model: nn.Module,
    input_tensor: Tensor,
    *,
    expected_class_idx: int | None = None,
    class_names: Sequence[str] | None = None,
    method: type[Any] = GradCAM,
    target_layer: nn.Module | str | list[nn.Module | str] | None = None,
    method_kwargs: Mapping[str, Any] | None = None,
) -> PredictionExplanation:
    """Explain the predicted (and the expected) class of one 2D image.

    Args:
        model: the classifier, in eval mode.
        input_tensor: a ``(1, C, H, W)`` float input.
        expected_class_idx: a second class to explain (e.g. the label).
        class_names: one name per class.
        method: an extractor class (``camkit.methods.GradCAM``, ``LayerCAM``, ...).
        target_layer: the layer(s); ``None``: the automatic choice.
        method_kwargs: more constructor arguments of ``method``.

    Returns:
        The logits, the classes, their maps (one ``(h, w)`` CPU tensor per layer) and metadata.

    Raises:
        RuntimeError: inside ``torch.inference_mode()`` (maps need gradients).
        ValueError: for a bad argument, model output or map; the message names the fix.
        TypeError: for arguments of the wrong type.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("explain cannot run inside torch.inference_mode(): CAM extraction needs gradients")
    _check(model, input_tensor, expected_class_idx, method, method_kwargs)
    kwargs = dict(method_kwargs or {})
    if "target_layer" in kwargs:
        raise ValueError("pass `target_layer` directly, not through `method_kwargs`")
    if target_layer is not None:
        kwargs["target_layer"] = target_layer
    elif issubclass(method, CAMExtractor):  # the automatic layer choice runs a dummy input of this shape
        kwargs.setdefault("input_shape", tuple(input_tensor.shape[1:]))
    x = input_tensor.detach()  # the user's tensor gets no .grad
    with torch.enable_grad(), method(model, **kwargs) as extractor:
        logits = _validate_logits(model(x))
        predicted = int(logits[0].argmax().item())
        n_classes = logits.shape[1]
        if expected_class_idx is not None and not 0 <= expected_class_idx < n_classes:
            raise ValueError(
                f"`expected_class_idx` is outside the model output range [0, {n_classes}), got {expected_class_idx}"
            )
        names = _names(class_names, n_classes)
        cams = {predicted: _prepare_maps(extractor(predicted, logits))}
        if expected_class_idx is not None and expected_class_idx != predicted:
            again = _validate_logits(model(x))  # a fresh forward for the expected class
            if again.shape != logits.shape:
                raise ValueError(
                    f"model output shape changed between explanation forwards: {tuple(logits.shape)} then "
                    f"{tuple(again.shape)}"
                )
            cams[expected_class_idx] = _prepare_maps(extractor(expected_class_idx, again))
        return PredictionExplanation(
            logits=logits.detach().to(device="cpu", dtype=torch.float32),
            predicted_class_idx=predicted,
            expected_class_idx=expected_class_idx,
            cams=MappingProxyType(cams),
            method=method.__name__,
            target_layers=tuple(extractor.target_names),
            model=f"{type(model).__module__}.{type(model).__qualname__}",
            input_shape=tuple(input_tensor.shape),
            versions=MappingProxyType(
                {"python": platform.python_version(), "torch": str(torch.__version__), "camkit": camkit.__version__}
            ),
            class_names=names,
        )
