"""The engine: hooks, captured state, gradients, model-state restore and layer resolution.

It is the only part of camkit that registers hooks. It knows no method by name.

* :class:`Capture` hooks the target layers, keeps each layer's output (and, on request, the
  model input), and computes ``dY/dA`` with :func:`torch.autograd.grad` — never ``.backward()``,
  so no parameter's ``.grad`` is touched and the backward stops at the target layers.
* The forward hook hands the rest of the network a *copy* of the layer output, so an in-place op
  after the layer (``ReLU(inplace=True)``) cannot change what was captured or its gradient.
* :func:`preserved_state` restores train/eval flags and ``requires_grad`` on exit, exceptions
  included; :func:`paused` makes every camkit hook ignore forwards run inside it (dummy forwards,
  perturbation forwards), so two extractors on one model never overwrite each other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "Capture",
    "candidate_layers",
    "eval_mode",
    "guided_relus",
    "paused",
    "preserved_state",
]

logger = logging.getLogger("camkit")

# Which camkit hooks may record: None = all of them; _NOBODY = none; a Capture = only that one.
_GATE: ContextVar[object | None] = ContextVar("camkit_gate", default=None)
_NOBODY = object()

NO_GRAD_HINT = (
    "run the forward with gradients enabled (not under torch.no_grad() or torch.inference_mode(), "
    "e.g. outside a Lightning validation step), or use a gradient-free method (CAM, ScoreCAM)"
)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Make every camkit hook ignore the forwards run inside this block."""
    token = _GATE.set(_NOBODY)
    try:
        yield
    finally:
        _GATE.reset(token)


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag and every parameter's ``requires_grad`` on exit."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, flag in flags:
            param.requires_grad_(flag)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put the model in eval mode for the block (no BatchNorm statistics update), then restore."""
    with preserved_state(model):
        model.eval()
        yield


def _reference_tensor(model: nn.Module) -> Tensor | None:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor
    return None


def candidate_layers(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """Output shape of every submodule for one dummy input ``(1, *input_shape)``, in call order.

    Args:
        model: the model.
        input_shape: input shape without the batch dim.

    Returns:
        ``(name, output_shape)`` for each submodule whose output is a tensor.

    Raises:
        ValueError: if the dummy forward fails (a wrong ``input_shape``).
    """
    shapes: list[tuple[str, tuple[int, ...]]] = []
    handles: list[RemovableHandle] = []

    def record(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, Tensor):
                shapes.append((name, tuple(out.shape)))

        return hook

    ref = _reference_tensor(model)
    dummy = torch.zeros(
        (1, *input_shape),
        device=ref.device if ref is not None else None,
        dtype=ref.dtype if ref is not None else None,
    )
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(record(name)))
        with paused(), eval_mode(model), torch.no_grad():
            model(dummy)
    except Exception as exc:
        raise ValueError(
            f"the dummy forward of shape {tuple(dummy.shape)} used to pick target_layer failed ({exc}); "
            "pass input_shape=(C, H, W) matching your model, or name target_layer explicitly"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    return shapes


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


class Capture:
    """Hooks on the target layers that keep their outputs (and optionally the model input).

    Args:
        model: the model.
        layer_names: dotted names from :func:`resolve_layers`.
        capture_input: also keep a copy of the model's first positional input.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> with Capture(net, ["0"]) as cap:
        ...     score = net(torch.rand(1, 3, 8, 8))[:, 0].sum()
        ...     grads = cap.gradients(score)
        >>> grads[0].shape
        torch.Size([1, 4, 6, 6])
    """

    def __init__(self, model: nn.Module, layer_names: Sequence[str], capture_input: bool = False) -> None:
        self.model = model
        self.layer_names = list(layer_names)
        self.capture_input = capture_input
        self.enabled = True
        self._handles: list[RemovableHandle] = []
        self._replacement: tuple[int, Tensor] | None = None
        self.reset()

    # lifecycle -----------------------------------------------------------------------------
    def attach(self) -> None:
        """Register the hooks (idempotent)."""
        if self._handles:
            return
        modules = dict(self.model.named_modules())
        for idx, name in enumerate(self.layer_names):
            self._handles.append(modules[name].register_forward_hook(self._layer_hook(idx)))
        if self.capture_input:
            self._handles.append(self.model.register_forward_pre_hook(self._input_hook))

    def remove(self) -> None:
        """Remove every hook this capture registered."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def reset(self) -> None:
        """Forget captured tensors (the hooks stay)."""
        self._sources: list[Tensor | None] = [None] * len(self.layer_names)
        self._errors: list[str | None] = [None] * len(self.layer_names)
        self.input: Tensor | None = None

    def __enter__(self) -> Capture:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @contextlib.contextmanager
    def recording(self) -> Iterator[Capture]:
        """Capture into fresh storage for the block, then give back the previous tensors."""
        saved = (self._sources, self._errors, self.input)
        self.reset()
        token = _GATE.set(self)
        try:
            yield self
        finally:
            _GATE.reset(token)
            self._sources, self._errors, self.input = saved

    @contextlib.contextmanager
    def replacing(self, layer: int, output: Tensor) -> Iterator[None]:
        """For the block, layer ``layer`` outputs ``output`` instead of what it computes.

        The batch of ``output`` may differ from the input batch: the rest of the network then runs
        on ``output``'s batch (used to re-run only what follows the layer). Nothing is captured and
        every other camkit hook is paused.
        """
        token = _GATE.set(self)
        self._replacement = (layer, output)
        try:
            yield
        finally:
            self._replacement = None
            _GATE.reset(token)

    # hooks ---------------------------------------------------------------------------------
    def _recording(self) -> bool:
        gate = _GATE.get()
        return self.enabled and (gate is None or gate is self)

    def _layer_hook(self, idx: int) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            if not self._recording():
                return None
            if self._replacement is not None:
                layer, replacement = self._replacement
                return replacement if layer == idx else None
            if not isinstance(output, Tensor):
                self._errors[idx] = (
                    f"target layer {self.layer_names[idx]!r} returns a {type(output).__name__}, not a tensor; "
                    "choose a submodule that outputs the feature map tensor"
                )
                return None
            source = output
            if (
                torch.is_grad_enabled()
                and not output.requires_grad
                and output.is_floating_point()
                and not torch.is_inference(output)
            ):
                # Frozen layers before the target: differentiate from here on.
                source = output.detach().requires_grad_(True)
            self._sources[idx] = source
            self._errors[idx] = None
            # The network continues on a copy, so in-place ops downstream leave `source` intact.
            return source.clone()

        return hook

    def _input_hook(self, _module: nn.Module, args: Any) -> None:
        if not self._recording() or self._replacement is not None:
            return
        if args and isinstance(args[0], Tensor):
            self.input = args[0].detach().clone()

    # reading -------------------------------------------------------------------------------
    def sources(self) -> list[Tensor]:
        """The captured layer outputs as they are in the autograd graph.

        Returns:
            One tensor per target layer.

        Raises:
            ValueError: if a layer did not run or returned a non-tensor.
        """
        out = []
        for name, source, error in zip(self.layer_names, self._sources, self._errors, strict=True):
            if error is not None:
                raise ValueError(error)
            if source is None:
                raise ValueError(
                    f"no activation was captured for layer {name!r}: run the forward (scores = model(x)) "
                    "after creating the extractor and before calling it, and check that this layer is "
                    "used by the forward"
                )
            out.append(source)
        return out

    def activations(self) -> list[Tensor]:
        """The captured layer outputs, detached.

        Returns:
            One tensor per target layer.
        """
        return [s.detach() for s in self.sources()]

    def gradients(self, score: Tensor, retain_graph: bool = False, create_graph: bool = False) -> list[Tensor]:
        """``d score / d A`` for every target layer, by :func:`torch.autograd.grad`.

        Args:
            score: a scalar that depends on the captured activations.
            retain_graph: keep the graph for another call.
            create_graph: make the gradients differentiable.

        Returns:
            One gradient per target layer, shaped as its activation.

        Raises:
            ValueError: if the graph is missing (forward under ``no_grad``/``inference_mode``) or
                the score does not depend on a layer.
        """
        sources = self.sources()
        if not score.requires_grad or any(not s.requires_grad for s in sources):
            raise ValueError(f"the scores or activations carry no autograd graph: {NO_GRAD_HINT}")
        try:
            grads = torch.autograd.grad(
                score, sources, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True
            )
        except RuntimeError as exc:
            if "second time" in str(exc):
                raise ValueError(
                    "the graph of this forward was already used by a previous call: pass retain_graph=True "
                    "to every call but the last, or run the forward again"
                ) from exc
            raise
        result = []
        for name, grad in zip(self.layer_names, grads, strict=True):
            if grad is None:
                raise ValueError(
                    f"the target score does not depend on layer {name!r}: pick a layer that the output is "
                    "computed from, and pass the scores of the same forward"
                )
            result.append(grad)
        return result

    def hessian_vector(self, grads: list[Tensor], retain_graph: bool = False) -> list[Tensor]:
        r"""Hessian-vector products :math:`H A = \partial (g \cdot A) / \partial A` with ``A`` held fixed.

        Args:
            grads: gradients from :meth:`gradients` called with ``create_graph=True``.
            retain_graph: keep the graph for another call.

        Returns:
            One tensor per target layer; zeros where the gradient does not depend on ``A``
            (e.g. a piecewise-linear network after the layer).
        """
        sources = self.sources()
        connected = [(i, g) for i, g in enumerate(grads) if g.requires_grad]
        result = [torch.zeros_like(s) for s in sources]
        if connected:
            products = torch.autograd.grad(
                [g for _, g in connected],
                [sources[i] for i, _ in connected],
                grad_outputs=[sources[i].detach() for i, _ in connected],
                retain_graph=retain_graph,
                allow_unused=True,
            )
            for (i, _), product in zip(connected, products, strict=True):
                if product is not None:
                    result[i] = product
        return result
