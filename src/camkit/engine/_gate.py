"""The hook gate, model-state restore, input checks, layer listing and guided ReLUs.

With :class:`camkit.engine.Capture` (the target-layer hooks and their gradients) it is the only part of
camkit that registers hooks. It knows no method by name.

* :func:`paused` makes every camkit hook ignore the forwards run inside it (dummy forwards,
  perturbation forwards), so two extractors on one model never overwrite each other.
* :func:`eval_mode` puts the model in eval mode for a block and restores every train/eval flag on
  exit, exceptions included.
* :func:`candidate_layers` lists every submodule's output shape for one dummy input
  (:func:`output_shapes` records them for any call, :func:`module_calls` every call's output).
* :func:`guided_relus` turns ReLUs into guided ReLUs for a block, without replacing modules.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from camkit.ops import autocast_enabled

__all__ = [
    "autocast_state",
    "candidate_layers",
    "eval_mode",
    "first_convolution",
    "guided_relus",
    "input_errors",
    "input_problem",
    "module_calls",
    "output_shapes",
    "paused",
    "reference_tensor",
]

logger = logging.getLogger("camkit")

# Which camkit hooks may record: None = all of them; _NOBODY = none; a Capture = only that one.
GATE: ContextVar[object | None] = ContextVar("camkit_gate", default=None)
_NOBODY = object()

NO_GRAD_HINT = (
    "run the forward with gradients enabled (not under torch.no_grad() or torch.inference_mode(), "
    "e.g. outside a Lightning validation step), or use a gradient-free method (CAM, ScoreCAM)"
)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Make every camkit hook ignore the forwards run inside this block."""
    token = GATE.set(_NOBODY)
    try:
        yield
    finally:
        GATE.reset(token)


def _training_flags(model: nn.Module) -> dict[nn.Module, bool]:
    """Every module under ``model`` (itself included), each once, with its train/eval flag.

    An iterative walk of ``_modules``: the same set as ``model.modules()`` at a third of its cost
    (no names are built), which matters on the per-call path of small networks.
    """
    flags = {model: model.training}
    stack = [model]
    while stack:
        for child in stack.pop()._modules.values():
            if child is not None and child not in flags:
                flags[child] = child.training
                stack.append(child)
    return flags


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put the model in eval mode for the block (no BatchNorm statistics update), then restore.

    Every module's train/eval flag is restored on exit, exceptions included; only the flags that
    changed are written back. A model already in eval mode is left untouched: it is not switched,
    and not walked again on exit (nothing in the block changes flags). camkit never
    changes a parameter's ``requires_grad`` (gradients come from ``torch.autograd.grad`` with
    respect to the captured activations), so there is nothing else to restore.
    """
    flags = _training_flags(model)
    changed = True in flags.values()
    try:
        if changed:  # inside the try: a model whose eval() raises half-way is restored too
            model.eval()
        yield
    finally:
        if changed:  # a model in eval mode was not touched, so it is not walked again
            for module, training in flags.items():
                if module.training != training:
                    module.training = training


def reference_tensor(model: nn.Module) -> Tensor | None:
    """The model's first floating-point parameter or buffer (its device and dtype), if any.

    Args:
        model: the model.

    Returns:
        The tensor, or ``None`` for a model without floating-point state.
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor
    return None


def autocast_state(device_type: str) -> tuple[str, torch.dtype] | None:
    """``(device_type, dtype)`` when autocast is on for that device type, else ``None`` (torch >= 2.1)."""
    if not autocast_enabled(device_type):
        return None
    try:
        dtype = torch.get_autocast_dtype(device_type)  # torch >= 2.4
    except AttributeError:  # older torch: per-device functions
        dtype = torch.get_autocast_cpu_dtype() if device_type == "cpu" else torch.get_autocast_gpu_dtype()
    return (device_type, dtype)


def first_convolution(model: nn.Module) -> nn.Module | None:
    """The model's first ``Conv1d``/``Conv2d``/``Conv3d`` in module order (what its input's rank must suit)."""
    return next((m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)), None)


def input_problem(x: Tensor, model: nn.Module, argument: str) -> Exception | None:
    """Why the model may have failed on the image ``x``: a dtype or rank it cannot take, if so.

    The rank is read from the model's first convolution (``Conv1d``: ``(N, C, L)``, ``Conv2d``:
    ``(N, C, H, W)``, ``Conv3d``: ``(N, C, D, H, W)``); the dtype should be the model's parameters'
    (any floating dtype under autocast). Models that convert or reshape their input themselves are
    fine, so front doors ask only after the forward failed (:func:`input_errors`).

    Args:
        x: the image batch.
        model: the model.
        argument: the argument's name, for the message.

    Returns:
        A ``TypeError`` (dtype) or ``ValueError`` (rank) naming the argument and the fix, or ``None``.
    """
    ref = reference_tensor(model)
    autocast = autocast_state(x.device.type) is not None
    if ref is not None and x.dtype != ref.dtype and not (autocast and x.is_floating_point()):
        fix = "x.float() / 255 for 8-bit images" if x.dtype == torch.uint8 else f"x.to({ref.dtype})"
        return TypeError(
            f"{argument} has dtype {x.dtype} but the model's parameters are {ref.dtype}: convert it ({fix})"
        )
    first = first_convolution(model)
    ranks: dict[type[nn.Module], int] = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}
    rank = None if first is None else ranks.get(type(first))
    if first is not None and rank is not None and x.ndim != rank:
        layout = {3: "(N, C, L)", 4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}[rank]
        return ValueError(
            f"{argument} has shape {tuple(x.shape)} but the model's first convolution ({type(first).__name__}) "
            f"takes {layout} batches: reshape the input (one image: x.unsqueeze(0))"
        )
    return None


@contextlib.contextmanager
def input_errors(x: Tensor, model: nn.Module, argument: str) -> Iterator[None]:
    """Turn a forward's ``RuntimeError`` caused by the input's dtype or rank into a message naming the fix.

    Raises:
        TypeError: the input's dtype is not the model's.
        ValueError: the input's rank is not what the model's first convolution takes.
    """
    try:
        yield
    except RuntimeError as error:
        problem = input_problem(x, model, argument)
        if problem is None:
            raise
        raise problem from error


def candidate_layers(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """Output shape of every submodule for one dummy input ``(1, *input_shape)``, in call order.

    A module called several times in one forward (a shared activation, a block applied twice) is
    listed once, with the output of its **last** call and at that call's place in the order: the
    call whose output a capture keeps, so the shape a map is computed from.

    Args:
        model: the model.
        input_shape: input shape without the batch dim.

    Returns:
        ``(name, output_shape)`` for each submodule whose (last) output is a tensor, ordered by last call.

    Raises:
        ValueError: if the dummy forward fails (a wrong ``input_shape``).

    Example:
        >>> pool = nn.MaxPool2d(2)
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        >>> net.add_module("pool", pool)
        >>> net.add_module("again", nn.Sequential(pool))  # the same module, called a second time
        >>> candidate_layers(net, (3, 8, 8))[-2:]
        [('pool', (1, 4, 2, 2)), ('again', (1, 4, 2, 2))]
    """
    ref = reference_tensor(model)
    dummy = torch.zeros(
        (1, *input_shape),
        device=ref.device if ref is not None else None,
        dtype=ref.dtype if ref is not None else None,
    )
    with output_shapes(model) as shapes, eval_mode(model), torch.no_grad():  # an error of model.eval() passes through
        try:
            model(dummy)
        except Exception as exc:
            raise ValueError(
                f"the dummy forward of shape {tuple(dummy.shape)} used to pick target_layer failed ({exc}); "
                "pass input_shape=(C, H, W) matching your model, or name target_layer explicitly"
            ) from exc
    return list(shapes.items())


@contextlib.contextmanager
def module_calls(
    model: nn.Module,
    names: Sequence[str] | None = None,
    *,
    before: bool = False,
    pause: bool = True,
    keep: Callable[[Any], Any] | None = None,
) -> Iterator[list[tuple[str, Any]]]:
    """For the block, every call of the named submodules, in call order: ``(name, output)``.

    Args:
        model: the model.
        names: the dotted names of the submodules to record; ``None``: every named submodule.
        before: record each call when it starts (its positional arguments instead of its output),
            so that a module comes before the modules it calls.
        pause: pause camkit's own hooks during the block (a dummy forward); ``False`` when the
            block's forward is itself being explained.
        keep: what to store of each output (or arguments), e.g. its shape; ``None``: the object
            itself (it then stays alive until the list is dropped).

    The hooks are removed on exit, also after an error. This and :class:`~camkit.engine.Capture`
    are the only places camkit registers hooks.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
        >>> with module_calls(net, ["1"]) as calls:
        ...     _ = net(torch.zeros(1, 3, 5, 5))
        >>> [(name, tuple(out.shape)) for name, out in calls]
        [('1', (1, 36))]
    """
    calls: list[tuple[str, Any]] = []
    modules = dict(model.named_modules())
    wanted = [name for name in modules if name] if names is None else list(names)
    missing = [name for name in wanted if name not in modules]
    if missing:
        raise ValueError(f"{type(model).__name__} has no submodule {missing[0]!r}")

    stored = keep if keep is not None else (lambda value: value)

    def after_hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        return lambda _m, _i, out: calls.append((name, stored(out)))

    def before_hook(name: str) -> Callable[[nn.Module, Any], None]:
        return lambda _m, args: calls.append((name, stored(args)))

    handles: list[RemovableHandle] = []
    try:
        for name in wanted:
            module = modules[name]
            handles.append(
                module.register_forward_pre_hook(before_hook(name))
                if before
                else module.register_forward_hook(after_hook(name))
            )
        with paused() if pause else contextlib.nullcontext():
            yield calls
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def output_shapes(model: nn.Module) -> Iterator[dict[str, tuple[int, ...]]]:
    """For the block, the output shape of every named submodule, camkit's own hooks paused.

    A module called several times is kept with its **last** call's shape, at that call's place in
    the (insertion) order of the yielded dict; modules whose output is not a tensor are left out.
    The dict is filled when the block ends (see :func:`module_calls`).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
        >>> with output_shapes(net) as shapes:
        ...     _ = net(torch.zeros(1, 3, 5, 5))
        >>> shapes
        {'0': (1, 4, 3, 3), '1': (1, 36)}
    """
    shapes: dict[str, tuple[int, ...]] = {}
    with module_calls(model, keep=lambda out: tuple(out.shape) if isinstance(out, Tensor) else None) as calls:
        try:
            yield shapes
        finally:
            for name, shape in calls:
                shapes.pop(name, None)  # a later call replaces an earlier one, and takes its place in the order
                if shape is not None:
                    shapes[name] = shape


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[None]:
    """Guided backpropagation for the block (Springenberg et al., 2015).

    Every ``nn.ReLU``/``nn.ReLU6`` passes back only positive gradients where its input was positive.
    Implemented with forward hooks that wrap each ReLU module's output in an identity whose
    backward clamps the gradient at 0, so the model's modules are never replaced. ReLUs called as
    functions (``F.relu``) are not affected.
    """
    handles = [
        m.register_forward_hook(lambda _m, _i, out: _PositiveGradient.apply(out))
        for m in model.modules()
        if isinstance(m, (nn.ReLU, nn.ReLU6))
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
