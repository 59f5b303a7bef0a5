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
    >>> list(maps), maps["GradCAMpp"][0].shape  # the names as passed
    (['gradcam', 'GradCAMpp', 'layercam'], torch.Size([2, 2, 2]))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from camkit.engine import ImageArg, LayerSpec, ModelInput, resolve_layers
from camkit.passes import method_options, own_pass, shared_pass, shares_capture
from camkit.registry import get_method
from camkit.targets import ClassTarget, Target, logits_of
from camkit.targets._unresolved import UnresolvedTarget

__all__ = ["compare", "method_name"]


def method_name(method: str) -> str:
    """The registry name of a registry name or a class name of either front door (case-insensitive).

    Raises:
        ValueError: for an unknown name, listing the registry.

    Example:
        >>> method_name("GradCAMpp"), method_name("Layer-CAM")
        ('gradcampp', 'layercam')
    """
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
    batch_size: int | str | None = None,
    image_arg: ImageArg = None,
    progress: bool | None = None,
    reforward: str = "auto",
    reshape_transform: Any = None,
    eigen_smooth: bool = False,
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
            ``image_arg`` when it is ambiguous, see :class:`camkit.engine.ModelInput`).
        methods: registry names or TorchCAM-style class names (``"GradCAMpp"``), in any case; they
            are the keys of the result.
        target_layer: a module, dotted name or list of them; ``None``: camkit's automatic choice
            (FullGrad always uses its own layers).
        targets: a :mod:`camkit.targets` object (what scalar to explain).
        class_idx: instead of ``targets``: one class for the batch or one per sample. With neither,
            each sample's top class is explained.
        normalized: min-max normalize each map to ``[0, 1]``.
        batch_size: inputs per forward for methods that re-run the model (``None``: 8 on a CPU,
            32 on a GPU; ``"auto"``: see :func:`camkit.engine.auto_batch_size`).
        image_arg: which argument of a tuple/dict ``x`` is the image.
        progress: a progress line with rate and ETA for long perturbation runs (``None``: only
            for work that lasts a few seconds, see :class:`camkit.engine.Progress`).
        reforward: how AblationCAM-like methods re-run the network (see :class:`camkit.CAMExtractor`).
        reshape_transform: maps activations and gradients to ``(N, C, *S)`` (default: automatic).
        eigen_smooth: the first principal component of the weighted activations instead of their sum.
        **options: method options (``num_samples``, ``generator``, ...); each method gets those it
            declares, and one that no method declares raises ``TypeError`` naming the closest.

    Returns:
        Each name exactly as passed in ``methods``, in their order → one map ``(N, *S)`` per target
        layer, as the method's TorchCAM-style extractor returns them: ``compare(model, x,
        ["GradCAMpp"])["GradCAMpp"]``. A method named twice (``"gradcampp"`` and ``"GradCAMpp"``)
        is computed once; each spelling gets a list of the same tensors.

    Raises:
        ValueError: for an unknown method, both ``targets`` and ``class_idx``, or a misuse the
            extractors report.
        TypeError: for an unknown option.
    """
    if isinstance(methods, str) or not methods:
        raise ValueError(f"methods must be a non-empty list of method names, got {methods!r}")
    if targets is not None and class_idx is not None:
        raise ValueError("pass at most one of targets and class_idx")
    registry_names = {name: method_name(name) for name in methods}  # as passed -> registry name
    specs = {name: get_method(name) for name in dict.fromkeys(registry_names.values())}
    mine = method_options(specs.values(), options, "compare", _KEYWORDS)
    shared = [s for s in specs.values() if shares_capture(s)]
    results: dict[str, list[Tensor]] = {}
    call = ModelInput.of(x, image_arg)
    switches = {
        "batch_size": batch_size,
        "image_arg": call.image_key,
        "progress": progress,
        "reforward": reforward,
        "reshape_transform": reshape_transform,
        "eigen_smooth": eigen_smooth,
    }

    agnostic = not any(spec.needs_target for spec in specs.values())

    def targets_of(scores: Any) -> list[Target]:
        return [_target(targets, class_idx, scores, agnostic)]

    if shared:
        layers = resolve_layers(model, target_layer, tuple(call.image.shape[1:]))
        shared_maps = shared_pass(model, call, shared, layers, mine, targets_of, normalized=normalized, **switches)
        results.update(shared_maps[0])
    for spec in specs.values():
        if spec.name not in results:
            layer = target_layer if spec.layers is None else None
            _, own_maps, _ = own_pass(
                spec, model, call, layer, mine[spec.name], targets_of, normalized=normalized, **switches
            )
            results[spec.name] = own_maps[0]
    return {name: list(results[registry]) for name, registry in registry_names.items()}


#: compare's own keyword arguments (named when an unknown option is close to one of them)
_KEYWORDS = (
    "targets",
    "class_idx",
    "normalized",
    "batch_size",
    "image_arg",
    "progress",
    "reforward",
    "reshape_transform",
    "eigen_smooth",
)


def _target(targets: Target | None, class_idx: int | Sequence[int] | None, scores: Any, agnostic: bool) -> Target:
    """What to explain; with neither ``targets`` nor ``class_idx``, each sample's top class.

    When the output holds no ``(N, num_classes)`` scores and every method is class-agnostic
    (Eigen-CAM, FEM, ...), a target that is never read; otherwise an error naming the fix.
    """
    if targets is not None:
        return targets
    if class_idx is None:
        try:
            logits = logits_of(scores)
            problem = "" if logits.ndim == 2 else f"the model output has shape {tuple(logits.shape)}"
        except TypeError as error:
            problem = str(error)
        if problem:
            reason = (
                f"compare explains each sample's top class of (N, num_classes) scores by default, but {problem}: "
                "pass targets= (e.g. a camkit.targets object) or class_idx="
            )
            if agnostic:
                return UnresolvedTarget(reason)
            raise ValueError(reason)
        class_idx = logits.argmax(dim=1).tolist()
    return ClassTarget(class_idx)
