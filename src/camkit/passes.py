"""Several methods on one input: the single place where camkit's own forwards turn inputs into maps.

:func:`camkit.compare`, :func:`camkit.explain` and dataset runs (:mod:`camkit.runner`) go through
here. Methods that need only the target layers' activations and gradients (Grad-CAM, ++, XGrad,
LayerCAM, HiRes, ElementWise, Eigen-CAM, FEM, ...) share ONE capture (:func:`shared_pass`): one
forward, and one backward per explained target; perturbation methods re-run the model from the
same captured input. FullGrad (its own layers and the input gradient), ShapleyCAM (second
derivatives) and differentiable maps (``create_graph``) run their own forward
(:func:`method_maps`). Every forward runs on the lean path: no autograd graph before the target
layers, none at all for gradient-free methods.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> from camkit.inputs import ModelInput
    >>> net = resnet18(num_classes=5).eval()
    >>> probs, classes, maps, layers = run_methods(
    ...     net, ModelInput.of(torch.rand(2, 3, 64, 64)), ["gradcam", "layercam"], lambda name: "layer4",
    ...     lambda p: p.topk(2, dim=1).indices, batch_size=8)
    >>> maps["gradcam"].shape, layers["layercam"]
    (torch.Size([2, 2, 2, 2]), ['layer4'])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camkit import methods as _methods
from camkit import ops
from camkit.capture import Capture
from camkit.engine import input_errors
from camkit.extractor import CAMExtractor
from camkit.inputs import ModelInput
from camkit.layers import LayerSpec, resolve_layers
from camkit.registry import MethodSpec, get_method
from camkit.targets import ClassTarget, Target, logits_of

__all__ = [
    "build",
    "class_probabilities",
    "extractor_class",
    "method_maps",
    "run_methods",
    "shared_pass",
    "shares_capture",
]


def extractor_class(method: str) -> type[CAMExtractor]:
    """The TorchCAM-style extractor class of a registry method (``CAMExtractor`` when it has none)."""
    name = get_method(method).name  # raises with the list of methods for an unknown name
    for value in vars(_methods).values():
        if isinstance(value, type) and issubclass(value, CAMExtractor) and value.method == name:
            return value
    return CAMExtractor


def shares_capture(spec: MethodSpec) -> bool:
    """Whether the method reads only the target layers' capture (so it can share one forward)."""
    return spec.layers is None and not spec.needs_hvp and not extractor_class(spec.name).input_gradient


def build(spec: MethodSpec, model: nn.Module, layers: Any, options: dict[str, Any], **extra: Any) -> CAMExtractor:
    """The method's extractor on ``model`` (its TorchCAM-style class, or ``CAMExtractor``)."""
    cls = extractor_class(spec.name)
    named: dict[str, Any] = {"method": spec.name} if cls is CAMExtractor else {}
    return cls(model, target_layer=layers, **named, **extra, **options)


def shared_pass(
    model: nn.Module,
    call: ModelInput,
    specs: Sequence[MethodSpec],
    layers: list[str],
    options: dict[str, Any],
    targets_of: Callable[[Any], Sequence[Target]],
    *,
    normalized: bool = True,
    argument: str = "x",
) -> list[dict[str, list[Tensor]]]:
    """The maps of methods that share one capture: one forward, and one backward per target.

    Args:
        model: the model (in eval mode, outside inference mode).
        call: the model's input.
        specs: methods for which :func:`shares_capture` holds.
        layers: the resolved target layer names.
        options: extractor options (``batch_size``, ``image_arg``, method options).
        targets_of: the model output → what to explain (one target per explained class).
        normalized: min-max normalize each map.
        argument: the name of the input in error messages.

    Returns:
        Per target, method name → one map ``(N, *S)`` per layer, exactly what the method's own
        extractor gives for that target.
    """
    capture = Capture(model, layers, capture_input=any(s.needs_input for s in specs), image_arg=call.image_key)
    with capture:
        extractors = {s.name: build(s, model, layers, options, capture=capture) for s in specs}
        grad_methods = [s for s in specs if s.needs_gradients]
        with (
            capture.exclusive(),
            capture.lean() if grad_methods else torch.no_grad(),
            input_errors(call.image, model, argument),
        ):
            scores = call(model)
        targets = targets_of(scores)
        per_target = []
        none: list[Tensor | None] = [None] * len(layers)  # what a gradient-free method is handed
        for k, target in enumerate(targets):
            grads = none
            if grad_methods:
                extractors[grad_methods[0].name]._check_scores(scores, target, call.batch)
                grads = list(capture.gradients(target(scores).sum(), retain_graph=k < len(targets) - 1))
            per_target.append(
                {
                    s.name: extractors[s.name].maps_from(target, grads if s.needs_gradients else none, normalized)
                    for s in specs
                }
            )
        return per_target


def method_maps(
    name: str,
    net: nn.Module,
    call: ModelInput,
    classes: Callable[[Any], Tensor],
    layer: LayerSpec,
    *,
    batch_size: int | str,
    size: Sequence[int] | None = None,
    create_graph: bool = False,
    **options: Any,
) -> tuple[Tensor, list[str]]:
    """One method's maps from a forward of its own, for the classes ``classes(model output)`` ``(N, K)``.

    Args:
        name: a registry name.
        net: the model (in eval mode).
        call: the model's input.
        classes: the model output → the classes to explain ``(N, K)``.
        layer: the target layer(s).
        batch_size: inputs per forward for methods that re-run the model.
        size: resize the maps to this size (then min-max normalize again); ``None`` keeps the layer's.
        create_graph: maps that stay in the autograd graph (gradient and activation methods only).
        **options: method options.

    Returns:
        The maps ``(N, K, *S)`` in ``[0, 1]`` and the target layer names.
    """
    spec = get_method(name)
    if create_graph and extractor_class(name).__call__ is not CAMExtractor.__call__:
        raise ValueError(f"create_graph=True is not available for {name}: use a gradient or activation method")
    x = call.image
    options = {"batch_size": batch_size, "image_arg": call.image_key, "input_shape": tuple(x.shape[1:]), **options}
    with build(spec, net, layer, options) as extractor:
        # lean: no graph before the target layers; the whole graph for create_graph; none without gradients
        lean = spec.needs_gradients and not create_graph
        mode: Any = torch.enable_grad() if create_graph else contextlib.nullcontext() if lean else torch.no_grad()
        with extractor.own_forward(lean=lean), mode, input_errors(x, net, "images"):
            scores = call(net)  # the graph is kept until the last class
        wanted = classes(scores)
        per_rank = []
        for rank in range(wanted.shape[1]):
            keep = rank < wanted.shape[1] - 1 or create_graph
            ranked = wanted[:, rank].tolist()
            if create_graph:
                cams = extractor(ranked, scores, retain_graph=keep, create_graph=True)
            else:
                cams = extractor(ranked, scores, retain_graph=keep)
            per_rank.append(_resized(extractor.fuse_cams(cams), size))
        maps = torch.stack(per_rank, dim=1)
        return (maps if create_graph else maps.detach()), list(extractor.target_names)


def _resized(fused: Tensor, size: Sequence[int] | None) -> Tensor:
    return fused if size is None else ops.normalize(ops.upsample(fused, tuple(size)))


def class_probabilities(scores: Any, batch: int) -> Tensor:
    """Softmax of the model's class scores ``(N, num_classes)``, float32 and detached.

    Raises:
        ValueError: when the output holds no ``(N, num_classes)`` scores, naming the fix.
    """
    logits = logits_of(scores)
    if logits.ndim != 2 or logits.shape[0] != batch:
        raise ValueError(
            f"camkit needs class scores (N, num_classes) from the model to choose the classes to explain, but "
            f"its output has shape {tuple(logits.shape)}: wrap the model so it returns them (docs/any-model.md, "
            "'Wrapping a model'), or explain another scalar with camkit.compare(..., targets=...)"
        )
    return logits.detach().float().softmax(dim=1)


def run_methods(
    net: nn.Module,
    call: ModelInput,
    names: Sequence[str],
    layer_of: Callable[[str], LayerSpec],
    choose: Callable[[Tensor], Tensor],
    *,
    batch_size: int | str,
    size: Sequence[int] | None = None,
    create_graph: bool = False,
    **options: Any,
) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, list[str]]]:
    """Every method's maps; the first forward also gives the probabilities and the classes to explain.

    Methods that share a capture (:func:`shares_capture`) and the same target layers run from one
    forward (:func:`shared_pass`, unless ``create_graph``); the others run their own. No forward
    runs just to find the classes.

    Args:
        net: the model, in eval mode.
        call: the model's input.
        names: registry names (at least one).
        layer_of: method name → its target layer(s).
        choose: the probabilities ``(N, num_classes)`` → the classes to explain ``(N, K)``.
        batch_size: inputs per forward for methods that re-run the model.
        size: see :func:`method_maps`.
        create_graph: see :func:`method_maps`.
        **options: method options.

    Returns:
        The probabilities ``(N, num_classes)``, the classes ``(N, K)``, method → maps ``(N, K, *S)``
        and method → target layer names.
    """
    picked: dict[str, Tensor] = {}  # the first forward's probabilities and classes

    def classes_of(scores: Any) -> Tensor:
        if not picked:
            picked["probabilities"] = class_probabilities(scores, call.batch)
            picked["classes"] = choose(picked["probabilities"])
        return picked["classes"]

    def targets_of(scores: Any) -> list[Target]:
        return [ClassTarget(column) for column in classes_of(scores).t().tolist()]

    names = list(dict.fromkeys(get_method(name).name for name in names))
    shape = tuple(call.image.shape[1:])
    resolved: list[tuple[LayerSpec, tuple[str, ...]]] = []  # each layer choice resolved once

    def layer_names(layer: LayerSpec) -> tuple[str, ...]:
        for spec, found in resolved:
            if spec is layer or (type(spec) is type(layer) and spec == layer):
                return found
        resolved.append((layer, tuple(resolve_layers(net, layer, shape))))
        return resolved[-1][1]

    groups: dict[tuple[str, ...], list[MethodSpec]] = {}
    for name in names:
        spec = get_method(name)
        if shares_capture(spec) and not create_graph:
            groups.setdefault(layer_names(layer_of(name)), []).append(spec)
    group_of = {spec.name: key for key, specs in groups.items() for spec in specs}
    maps: dict[str, Tensor] = {}
    used: dict[str, list[str]] = {}
    common = {"batch_size": batch_size, "image_arg": call.image_key, **options}
    for name in names:
        if name in maps:
            continue  # computed with its group
        if name not in group_of:
            maps[name], used[name] = method_maps(
                name,
                net,
                call,
                classes_of,
                layer_of(name),
                batch_size=batch_size,
                size=size,
                create_graph=create_graph,
                **options,
            )
            continue
        key = group_of[name]
        per_target = shared_pass(net, call, groups[key], list(key), common, targets_of, argument="images")
        for spec in groups[key]:
            cls = extractor_class(spec.name)
            ranks = [_resized(cls.fuse_cams(found[spec.name]), size) for found in per_target]
            maps[spec.name], used[spec.name] = torch.stack(ranks, dim=1).detach(), list(key)
    return picked["probabilities"], picked["classes"], {n: maps[n] for n in names}, {n: used[n] for n in names}
