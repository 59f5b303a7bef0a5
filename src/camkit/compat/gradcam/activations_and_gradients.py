"""pytorch-grad-cam's hook helper (``pytorch_grad_cam.activations_and_gradients``).

camkit's own methods do not use it (their hooks live in :class:`camkit.engine.Capture` and exist
only during a call); it is here for client code written against pytorch-grad-cam's object.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    >>> x = torch.rand(1, 3, 5, 5, requires_grad=True)
    >>> with ActivationsAndGradients(model, [model[0]], None) as hooks:
    ...     _ = torch.autograd.grad(hooks(x)[:, 0].sum(), x)  # also caught: no parameter's .grad filled
    ...     hooks.activations[0].shape == hooks.gradients[0].shape
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["ActivationsAndGradients"]


class ActivationsAndGradients:
    """Record the outputs of target layers in a forward, and their gradients in the backward.

    Forward hooks on ``target_layers`` append each layer's output to :attr:`activations` (in
    forward order) and register an autograd hook on it; when a backward (``loss.backward()`` or
    ``torch.autograd.grad``) reaches that output, its gradient is put in front of
    :attr:`gradients`, so ``gradients[i]`` belongs to ``activations[i]`` once the backward is done.
    With ``detach=True`` both are detached CPU tensors passed through ``reshape_transform``; with
    ``detach=False`` they are the graph's tensors, untransformed (pytorch-grad-cam's behaviour).
    Outputs that do not require gradients (e.g. under ``torch.no_grad()``) record no gradient.
    The hooks stay until :meth:`release` (or the end of a ``with`` block).

    Args:
        model: the model, called by :meth:`__call__`.
        target_layers: the modules to record.
        reshape_transform: ``None``, or a function applied to each recorded tensor (``detach=True`` only).
        detach: store detached CPU copies (default) or the tensors themselves.

    Attributes:
        activations: the recorded outputs of the last call.
        gradients: their gradients, after a backward.
        handles: the hook handles (empty after :meth:`release`).
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Callable[[Tensor], Tensor] | None,
        detach: bool = True,
    ) -> None:
        layers = list(target_layers)
        for layer in layers:
            if not isinstance(layer, nn.Module):
                raise TypeError(f"target_layers must be modules (e.g. [model.layer4[-1]]), got {type(layer).__name__}")
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(f"reshape_transform must be callable or None, got {type(reshape_transform).__name__}")
        self.model = model
        self.target_layers = layers
        self.reshape_transform = reshape_transform
        self.detach = detach
        self.activations: list[Any] = []
        self.gradients: list[Any] = []
        self.handles: list[RemovableHandle] = [layer.register_forward_hook(self.save_activation) for layer in layers]

    def _keep(self, value: Tensor) -> Any:
        if not self.detach:
            return value
        if self.reshape_transform is not None:
            value = self.reshape_transform(value)
        return value.detach().cpu()

    def save_activation(self, module: nn.Module, input: Any, output: Any) -> None:
        """Forward hook: record ``output`` and hook its gradient."""
        self.activations.append(self._keep(output))
        if isinstance(output, Tensor) and output.requires_grad:

            def store(grad: Tensor) -> None:
                self.gradients = [self._keep(grad), *self.gradients]

            output.register_hook(store)  # type: ignore[no-untyped-call]

    def __call__(self, x: Any) -> Any:
        """Clear the records and run ``model(x)``.

        Args:
            x: the model input.

        Returns:
            The model output.
        """
        self.gradients = []
        self.activations = []
        return self.model(x)

    def clear(self) -> None:
        """Empty the record lists (in place) so the recorded tensors and their graphs can be freed."""
        self.activations.clear()
        self.gradients.clear()

    def release(self) -> None:
        """Drop the records and remove the hooks."""
        self.clear()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def __enter__(self) -> ActivationsAndGradients:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
