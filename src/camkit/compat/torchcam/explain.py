"""``torchcam.explain``: explain one image's prediction with one extractor class, TorchCAM's call.

:func:`explain` runs a camkit extractor (default :class:`camkit.methods.GradCAM`) on a
``(1, C, H, W)`` input and returns a :class:`PredictionExplanation` with the logits, the predicted
(and expected) class and their maps. For several methods, images or classes at once, see
:func:`camkit.explain`.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from PIL.Image import Image
from torch import Tensor, nn

import camkit
from camkit.methods import GradCAM

__all__ = ["PredictionExplanation", "explain"]


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
        """Not mirrored: TorchCAM's on-disk layout (maps, heatmaps, overlays, manifest).

        Raises:
            NotImplementedError: always (TorchCAM's bundle and manifest are not mirrored yet); save
                ``self.cams`` yourself, or write overlays with ``camkit explain`` on the command line.
        """
        raise NotImplementedError(
            "PredictionExplanation.save (TorchCAM's bundle with manifest.json) is not mirrored yet: save self.cams "
            "yourself (torch.save), or write overlays and maps with `camkit explain IMAGES --out DIR`"
        )


def _logits(output: Any) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError(
            "model output must be a tensor; wrap models that return tuples or dicts (or use camkit.explain)"
        )
    if output.ndim != 2 or output.shape[0] != 1 or output.shape[1] < 1:
        raise ValueError(f"model output must have shape (1, num_classes), got {tuple(output.shape)}")
    if not torch.isfinite(output).all():
        raise ValueError("model output contains non-finite logits")
    return output


def _maps(maps: list[Tensor]) -> tuple[Tensor, ...]:
    if not maps or any(not torch.isfinite(cam).all() for cam in maps):
        raise ValueError("the extractor returned no map or a non-finite one: try another target_layer")
    return tuple(cam[0].detach().to(device="cpu", dtype=torch.float32).contiguous() for cam in maps)


def _check(model: nn.Module, input_tensor: Tensor, expected_class_idx: int | None) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError("`model` must be a torch.nn.Module")
    if any(module.training for module in model.modules()):
        raise ValueError("`model` must be in evaluation mode; call model.eval() first")
    if not isinstance(input_tensor, Tensor) or input_tensor.ndim != 4 or input_tensor.shape[0] != 1:
        raise ValueError("`input_tensor` must be a tensor of shape (1, channels, height, width)")
    if not input_tensor.is_floating_point():
        raise ValueError("`input_tensor` must have a floating-point dtype: use input_tensor.float()")
    if expected_class_idx is not None and (
        not isinstance(expected_class_idx, int) or isinstance(expected_class_idx, bool)
    ):
        raise TypeError("`expected_class_idx` must be an int or None")


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
    _check(model, input_tensor, expected_class_idx)
    kwargs = dict(method_kwargs or {})
    if "target_layer" in kwargs:
        raise ValueError("pass `target_layer` directly, not through `method_kwargs`")
    kwargs["target_layer"] = target_layer
    if target_layer is None:
        kwargs.setdefault("input_shape", tuple(input_tensor.shape[1:]))
    with torch.enable_grad(), method(model, **kwargs) as extractor:
        logits = _logits(model(input_tensor))
        predicted = int(logits[0].argmax().item())
        n_classes = logits.shape[1]
        if expected_class_idx is not None and not 0 <= expected_class_idx < n_classes:
            raise ValueError(f"`expected_class_idx` must be in [0, {n_classes}), got {expected_class_idx}")
        names: tuple[str, ...] | None = None
        if class_names is not None:
            if isinstance(class_names, str) or len(class_names) != n_classes:
                raise ValueError(f"`class_names` must hold one name per class ({n_classes})")
            names = tuple(class_names)
        retain = expected_class_idx is not None and expected_class_idx != predicted
        cams = {predicted: _maps(extractor(predicted, logits, retain_graph=retain))}
        if retain and expected_class_idx is not None:
            cams[expected_class_idx] = _maps(extractor(expected_class_idx, logits))
        return PredictionExplanation(
            logits=logits.detach().cpu(),
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
