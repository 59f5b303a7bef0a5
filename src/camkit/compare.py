"""Many methods from one pass: :func:`compare`.

Every method that needs only the target layers' activations and their gradients (Grad-CAM, ++,
XGrad, LayerCAM, HiRes, ElementWise, Eigen-CAM, EigenGrad-CAM, FEM, ...) reads them from ONE
forward and at most ONE backward; perturbation methods re-run the model from the same captured
input and activations. Methods that need a capture of their own — FullGrad (its own layers and
the input gradient) and ShapleyCAM (second derivatives through the attention paths) — run their
own lean forward, so every method gives exactly what its extractor gives alone.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> from camkit import compare
    >>> maps = compare(resnet18().eval(), torch.rand(2, 3, 64, 64), ["gradcam", "GradCAMpp", "layercam"], "layer4")
    >>> sorted(maps), maps["gradcam"][0].shape
    (['gradcam', 'gradcampp', 'layercam'], torch.Size([2, 2, 2]))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camkit import methods as _methods
from camkit.engine import eval_mode, input_errors
from camkit.extractor import CAMExtractor
from camkit.inputs import ImageArg, ModelInput
from camkit.layers import LayerSpec, resolve_layers
from camkit.passes import build, shared_pass, shares_capture
from camkit.registry import get_method
from camkit.targets import ClassTarget, Target, logits_of

__all__ = ["compare", "method_name"]


def method_name(method: str) -> str:
    """The registry name of a registry name or a TorchCAM-style class name (case-insensitive).

    Raises:
        ValueError: for an unknown name, listing the registry.

    Example:
        >>> method_name("GradCAMpp"), method_name("Layer-CAM")
        ('gradcampp', 'layercam')
    """
    if not isinstance(method, str):
        raise TypeError(f"methods must be names (str), got {type(method).__name__}")
    found = getattr(_methods, method, None)
    if isinstance(found, type) and issubclass(found, CAMExtractor) and found.method:
        return found.method
    return get_method(method).name


def compare(
    model: nn.Module,
    x: Tensor | tuple[Any, ...] | Mapping[str, Any],
    methods: Sequence[str],
    target_layer: LayerSpec = None,
    targets: Target | None = None,
    *,
    class_idx: int | Sequence[int] | None = None,
    normalized: bool = True,
    batch_size: int | str = 32,
    image_arg: ImageArg = None,
    **options: Any,
) -> dict[str, list[Tensor]]:
    """The maps of several methods from one forward and at most one backward.

    The model runs in eval mode (its flags are restored), on the lean path: no autograd graph is
    recorded before the target layers. The target's gradient with respect to the target layers is
    computed once and handed to every gradient method; gradient-free and perturbation methods
    read the same captured activations and input.

    Args:
        model: the model.
        x: the input batch ``(N, C, *S)``; for a model with several inputs, a tuple of positional
            arguments or a dict of keyword arguments with the image among them (name it with
            ``image_arg`` when it is ambiguous, see :mod:`camkit.inputs`).
        methods: registry names or TorchCAM-style class names (``"GradCAMpp"``).
        target_layer: a module, dotted name or list of them; ``None``: camkit's automatic choice
            (FullGrad always uses its own layers).
        targets: a :mod:`camkit.targets` object (what scalar to explain).
        class_idx: instead of ``targets``: one class for the batch or one per sample. With neither,
            each sample's top class is explained.
        normalized: min-max normalize each map to ``[0, 1]``.
        batch_size: inputs per forward for methods that re-run the model (``"auto"``: see :mod:`camkit.batching`).
        image_arg: which argument of a tuple/dict ``x`` is the image.
        **options: method options for every method (``num_samples``, ``generator``, ...).

    Returns:
        Registry name → one map ``(N, *S)`` per target layer, as the method's TorchCAM-style
        extractor returns them.

    Raises:
        ValueError: for an unknown method, both ``targets`` and ``class_idx``, or a misuse the
            extractors report.
    """
    if isinstance(methods, str) or not methods:
        raise ValueError(f"methods must be a non-empty list of method names, got {methods!r}")
    if targets is not None and class_idx is not None:
        raise ValueError("pass at most one of targets and class_idx")
    specs = {name: get_method(name) for name in dict.fromkeys(method_name(m) for m in methods)}
    shared = [s for s in specs.values() if shares_capture(s)]
    results: dict[str, list[Tensor]] = {}
    call = ModelInput.of(x, image_arg)
    common = {"batch_size": batch_size, "image_arg": call.image_key, **options}
    with eval_mode(model), torch.inference_mode(False):
        if shared:
            layers = resolve_layers(model, target_layer, tuple(call.image.shape[1:]))
            per_target = shared_pass(
                model,
                call,
                shared,
                layers,
                common,
                lambda scores: [_target(targets, class_idx, scores)],
                normalized=normalized,
            )
            results.update(per_target[0])
        for spec in specs.values():
            if spec.name in results:
                continue
            with build(spec, model, target_layer if spec.layers is None else None, common) as extractor:
                with extractor.own_forward(lean=spec.needs_gradients), input_errors(call.image, model, "x"):
                    scores = call(model)
                target = _target(targets, class_idx, scores)
                results[spec.name] = extractor(scores=scores, targets=target, normalized=normalized)
    return {spec.name: results[spec.name] for spec in specs.values()}


def _target(targets: Target | None, class_idx: int | Sequence[int] | None, scores: Any) -> Target:
    if targets is not None:
        return targets
    if class_idx is None:
        class_idx = logits_of(scores).argmax(dim=1).tolist()
    return ClassTarget(class_idx)
