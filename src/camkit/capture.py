"""The capture: hooks on the target layers that keep their outputs, and their gradients.

* The forward hook hands the rest of the network a *copy* of the layer output, so an in-place op
  after the layer (``ReLU(inplace=True)``) cannot change what was captured or its gradient.
* Gradients come from :func:`torch.autograd.grad` — never ``Tensor.backward`` — so no parameter's
  ``.grad`` is touched and the backward stops at the target layers.
* Hooks record only when the engine's gate allows it (see :func:`camkit.engine.paused`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from camkit.engine import _GATE, NO_GRAD_HINT

__all__ = ["Capture"]


class Capture:
    """Hooks on the target layers that keep their outputs (and optionally the model input).

    Args:
        model: the model.
        layer_names: dotted names from :func:`resolve_layers`.
        capture_input: also keep a copy of the model's first positional input.
        input_grad: when the forward runs with gradients, hand the model a leaf copy of its input
            that requires grad, so :meth:`gradients` also yields ``d score / d x`` (in
            :attr:`input_grad`); implies ``capture_input``.

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

    def __init__(
        self, model: nn.Module, layer_names: Sequence[str], capture_input: bool = False, input_grad: bool = False
    ) -> None:
        self.model = model
        self.layer_names = list(layer_names)
        self.capture_input = capture_input or input_grad
        self.input_grad_wanted = input_grad
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
        self.input_grad: Tensor | None = None

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

    def _input_hook(self, _module: nn.Module, args: Any) -> Any:
        if not self._recording() or self._replacement is not None:
            return None
        if args and isinstance(args[0], Tensor):
            x = args[0]
            if (
                self.input_grad_wanted
                and torch.is_grad_enabled()
                and x.is_floating_point()
                and not torch.is_inference(x)
            ):
                self.input = x.detach().clone().requires_grad_(True)
                return (self.input, *args[1:])
            self.input = x.detach().clone()
        return None

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
        x = self.input
        with_input = x is not None and x.requires_grad
        wrt = [*sources, x] if x is not None and with_input else list(sources)
        try:
            grads = torch.autograd.grad(
                score, wrt, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True
            )
        except RuntimeError as exc:
            if "second time" in str(exc):
                raise ValueError(
                    "the graph of this forward was already used by a previous call: pass retain_graph=True "
                    "to every call but the last, or run the forward again"
                ) from exc
            raise
        if with_input:
            self.input_grad = grads[-1]
        result = []
        for name, grad in zip(self.layer_names, grads[: len(sources)], strict=True):
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
