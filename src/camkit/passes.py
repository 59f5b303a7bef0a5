"""Several methods on one input: the single place where camkit's own forwards turn inputs into maps.

:func:`camkit.compare`, :func:`camkit.explain` and dataset runs (:mod:`camkit.runner`) go through
here. Methods that need only the target layers' activations and gradients (Grad-CAM, ++, XGrad,
LayerCAM, HiRes, ElementWise, Eigen-CAM, FEM, ...) share ONE capture (:func:`shared_pass`): one
forward, and one backward per explained target; perturbation methods re-run the model from the
same captured input. FullGrad (its own layers and the input gradient), ShapleyCAM (second
derivatives) and differentiable maps (``create_graph``) run their own forward
(:func:`own_pass`). Both go through :func:`camkit.engine.forward`: the lean path (no autograd
graph before the target layers), none at all for gradient-free methods, the full graph for
``create_graph``.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> from camkit.engine import ModelInput
    >>> net = resnet18(num_classes=5).eval()
    >>> probs, classes, maps, layers = run_methods(
    ...     net, ModelInput.of(torch.rand(2, 3, 64, 64)), ["gradcam", "layercam"], lambda name: "layer4",
    ...     lambda p: p.topk(2, dim=1).indices, batch_size=8)
    >>> maps["gradcam"].shape, layers["layercam"]
    (torch.Size([2, 2, 2, 2]), ['layer4'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camkit import ops
from camkit.engine import CAMExtractor, Capture, LayerSpec, ModelInput, forward, resolve_layers
from camkit.methods import extractor_class
from camkit.registry import ENGINE_SWITCHES, MethodSpec, check_options, get_method
from camkit.targets import ClassTarget, Target, logits_of
from camkit.targets._unresolved import UnresolvedTarget

__all__ = [
    "build",
    "class_probabilities",
    "extractor_class",
    "method_options",
    "own_pass",
    "run_methods",
    "shared_pass",
    "shares_capture",
]


def method_options(
    specs: Iterable[MethodSpec], options: Mapping[str, Any], where: str, extra: Iterable[str] = ()
) -> dict[str, dict[str, Any]]:
    """Check ``options`` against the methods and hand each method only the options it declares.

    An option may be meant for one of several methods (``num_samples`` for SS-CAM beside
    Grad-CAM), so it is an error only when none of them declares it.

    Args:
        specs: the methods.
        options: the options given to ``where``.
        where: the function that received them (for the message).
        extra: further names ``where`` accepts.

    Returns:
        Registry name → that method's options.

    Raises:
        TypeError: for an option no method declares, naming the closest accepted one.
    """
    specs = list(specs)
    check_options(specs, options, where, extra)
    return {spec.name: {k: v for k, v in options.items() if k in spec.options} for spec in specs}


def shares_capture(spec: MethodSpec) -> bool:
    """Whether the method reads only the target layers' capture (so it can share one forward)."""
    return spec.layers is None and not spec.needs_hvp and not spec.input_gradient


def build(spec: MethodSpec, model: nn.Module, layers: Any, options: dict[str, Any], **extra: Any) -> CAMExtractor:
    """The method's extractor on ``model`` (its TorchCAM-style class), with the engine switches and its options."""
    return extractor_class(spec)(model, target_layer=layers, **extra, **options)


def shared_pass(
    model: nn.Module,
    call: ModelInput,
    specs: Sequence[MethodSpec],
    layers: list[str],
    options: Mapping[str, dict[str, Any]],
    targets_of: Callable[[Any], Sequence[Target]],
    *,
    normalized: bool = True,
    argument: str = "x",
    **switches: Any,
) -> list[dict[str, list[Tensor]]]:
    """The maps of methods that share one capture: one forward, and one backward per target.

    Args:
        model: the model.
        call: the model's input.
        specs: methods for which :func:`shares_capture` holds.
        layers: the resolved target layer names.
        options: registry name → the method's options (:func:`method_options`).
        targets_of: the model output → what to explain (one target per explained class).
        normalized: min-max normalize each map.
        argument: the name of the input in error messages.
        **switches: engine switches for every extractor (``batch_size``, ``image_arg``, ...).

    Returns:
        Per target, method name → one map ``(N, *S)`` per layer, exactly what the method's own
        extractor gives for that target.
    """
    capture = Capture(model, layers, capture_input=any(s.needs_input for s in specs), image_arg=call.image_key)
    grad_methods = [s for s in specs if s.needs_gradients]
    with capture:
        extractors = {s.name: build(s, model, layers, options[s.name], capture=capture, **switches) for s in specs}
        with forward(model, capture, call, gradients=bool(grad_methods), argument=argument) as scores:
            targets = targets_of(scores)
            per_target = []
            none: list[Tensor | None] = [None] * len(layers)  # what a gradient-free method is handed
            for k, target in enumerate(targets):
                grads = none
                if grad_methods:
                    extractors[grad_methods[0].name].check_scores(scores, target, call.batch)
                    grads = list(capture.gradients(target(scores).sum(), retain_graph=k < len(targets) - 1))
                per_target.append(
                    {
                        s.name: extractors[s.name].maps_from(target, grads if s.needs_gradients else none, normalized)
                        for s in specs
                    }
                )
        return per_target


def own_pass(
    spec: MethodSpec,
    model: nn.Module,
    call: ModelInput,
    layer: LayerSpec,
    options: dict[str, Any],
    targets_of: Callable[[Any], Sequence[Target]],
    *,
    normalized: bool = True,
    create_graph: bool = False,
    argument: str = "x",
    **switches: Any,
) -> tuple[Any, list[list[Tensor]], list[str]]:
    """One method's maps from a forward of its own, one list per target.

    Args:
        spec: the method.
        model: the model.
        call: the model's input.
        layer: its target layer(s) (``None``: the method's own or camkit's automatic choice).
        options: the method's options.
        targets_of: the model output → what to explain.
        normalized: min-max normalize each map.
        create_graph: maps that stay in the autograd graph (gradient and activation methods only).
        argument: the name of the input in error messages.
        **switches: engine switches (``batch_size``, ``image_arg``, ``eigen_smooth``, ...).

    Returns:
        The model output, per target the maps (one per layer, or one for a reducing method), and
        the target layer names.

    Raises:
        ValueError: for ``create_graph`` with a method whose map is not differentiable.
    """
    if create_graph and not spec.differentiable:
        raise ValueError(f"create_graph=True is not available for {spec.name}: use a gradient or activation method")
    switches.setdefault("input_shape", tuple(call.image.shape[1:]))
    with build(spec, model, layer, options, **switches) as extractor:
        gradients = spec.needs_gradients
        with forward(
            model, extractor.capture, call, gradients=gradients, full_graph=create_graph, argument=argument
        ) as scores:
            targets = targets_of(scores)
            per_target = []
            for k, target in enumerate(targets):
                keep = k < len(targets) - 1 or create_graph
                per_target.append(
                    extractor(
                        scores=scores,
                        targets=target,
                        normalized=normalized,
                        retain_graph=keep,
                        create_graph=create_graph,
                    )
                )
        return scores, per_target, list(extractor.target_names)


def _ranked(
    spec: MethodSpec, per_target: Sequence[list[Tensor]], size: Sequence[int] | None, *, keep_graph: bool
) -> Tensor:
    """One method's maps per explained class, layers fused and resized: ``(N, K, *S)``."""
    fuse = extractor_class(spec).fuse_cams
    ranks = [
        fuse(cams) if size is None else ops.normalize(ops.upsample(fuse(cams), tuple(size))) for cams in per_target
    ]
    maps = torch.stack(ranks, dim=1)
    return maps if keep_graph else maps.detach()


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
    batch_size: int | str | None,
    size: Sequence[int] | None = None,
    create_graph: bool = False,
    switches: Mapping[str, Any] | None = None,
    where: str = "explain",
    keywords: Sequence[str] = ENGINE_SWITCHES,
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
        batch_size: inputs per forward for methods that re-run the model (``None``: the device default).
        size: resize the maps to this size (then min-max normalize again); ``None`` keeps the layer's.
        create_graph: maps that stay in the autograd graph (gradient and activation methods only).
        switches: engine switches for every extractor (``progress``, ``reforward``, ...).
        where: the public function called (for error messages).
        keywords: its own keyword arguments (for error messages).
        **options: method options; each method gets those it declares.

    Returns:
        The probabilities ``(N, num_classes)``, the classes ``(N, K)``, method → maps ``(N, K, *S)``
        and method → target layer names. When every method is class-agnostic (``needs_target=False``)
        and the model output holds no class scores, the probabilities and classes have no columns
        and each method gives one map per sample (``K = 1``).
    """
    picked: dict[str, Tensor] = {}  # the first forward's probabilities and classes
    unresolved: list[str] = []  # why no class was chosen (class-agnostic methods on a non-classifier)

    def classes_of(scores: Any) -> Tensor:
        if not picked:
            try:
                picked["probabilities"] = class_probabilities(scores, call.batch)
            except (TypeError, ValueError) as error:
                if any(spec.needs_target for spec in specs.values()):
                    raise
                unresolved.append(str(error))  # Eigen-CAM & co. on a detector/segmenter: no class at all
                picked["probabilities"] = torch.zeros(call.batch, 0)
                picked["classes"] = torch.zeros(call.batch, 0, dtype=torch.long)
            else:
                picked["classes"] = choose(picked["probabilities"])
        return picked["classes"]

    def targets_of(scores: Any) -> list[Target]:
        classes = classes_of(scores)
        if unresolved:
            return [UnresolvedTarget(unresolved[0])]
        return [ClassTarget(column) for column in classes.t().tolist()]

    names = list(dict.fromkeys(get_method(name).name for name in names))
    specs = {name: get_method(name) for name in names}
    mine = method_options(specs.values(), options, where, keywords)
    switches = {"batch_size": batch_size, "image_arg": call.image_key, **(switches or {})}
    shape = tuple(call.image.shape[1:])
    resolved: list[tuple[LayerSpec, tuple[str, ...]]] = []  # each layer choice resolved once

    def layer_names(layer: LayerSpec) -> tuple[str, ...]:
        for spec, found in resolved:
            if spec is layer or (type(spec) is type(layer) and spec == layer):
                return found
        resolved.append((layer, tuple(resolve_layers(net, layer, shape))))
        return resolved[-1][1]

    groups: dict[tuple[str, ...], list[MethodSpec]] = {}
    for name, spec in specs.items():
        if shares_capture(spec) and not create_graph:
            groups.setdefault(layer_names(layer_of(name)), []).append(spec)
    group_of = {spec.name: key for key, group in groups.items() for spec in group}
    maps: dict[str, Tensor] = {}
    used: dict[str, list[str]] = {}
    for name in names:
        if name in maps:
            continue  # computed with its group
        if name not in group_of:
            spec = specs[name]
            _, own, used[name] = own_pass(
                spec,
                net,
                call,
                layer_of(name),
                mine[name],
                targets_of,
                create_graph=create_graph,
                argument="images",
                **switches,
            )
            maps[name] = _ranked(spec, own, size, keep_graph=create_graph)
            continue
        key = group_of[name]
        per_target = shared_pass(net, call, groups[key], list(key), mine, targets_of, argument="images", **switches)
        for spec in groups[key]:
            maps[spec.name] = _ranked(spec, [found[spec.name] for found in per_target], size, keep_graph=False)
            used[spec.name] = list(key)
    return picked["probabilities"], picked["classes"], {n: maps[n] for n in names}, {n: used[n] for n in names}
