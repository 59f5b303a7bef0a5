"""The autograd half of :class:`camkit.engine.Capture`: gradients and Hessian-vector products of the captures.

Only :func:`torch.autograd.grad` is used (never ``Tensor.backward``), so no parameter's ``.grad``
is touched and the backward stops at the target layers.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from camkit.engine._gate import NO_GRAD_HINT

__all__ = ["GradientsMixin"]


def _differentiable(t: Tensor) -> bool:
    return t.is_floating_point() and t.requires_grad


def _leaf_pairs(source: Any, grad: Any) -> list[tuple[Tensor, Tensor]]:
    """(activation, gradient) tensor pairs of one capture: itself, or a structured output's tensors in the graph."""
    if isinstance(source, Tensor):
        return [(source, grad)]
    return [(a, g) for a, g in zip(source.leaves(), grad.leaves(), strict=True) if _differentiable(a)]


def _parts(source: Any) -> list[Tensor]:
    """The tensors of a capture to differentiate: itself, or a structured output's floating tensors in the graph."""
    if isinstance(source, Tensor):
        return [source]
    return [t for t in source.leaves() if _differentiable(t)]


class GradientsMixin:
    """Gradients of a score with respect to what a capture holds (mixed into :class:`~camkit.engine.Capture`)."""

    layer_names: list[str]
    model: Any
    input: Tensor | None
    input_grad: Tensor | None
    last_gradients: list[Any] | None

    def sources(self) -> list[Tensor]:
        """The captured layer outputs in the autograd graph (implemented by the capture)."""
        raise NotImplementedError

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
        # a structured layer output (a dict or tuple of tensors) is differentiated tensor by tensor
        parts = [_parts(s) for s in sources]
        flat = [t for part in parts for t in part]
        x = self.input
        with_input = x is not None and x.requires_grad
        wrt = [*flat, x] if x is not None and with_input else flat
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
        result: list[Tensor] = []
        start = 0
        for name, source, part in zip(self.layer_names, sources, parts, strict=True):
            found = list(grads[start : start + len(part)])
            start += len(part)
            if all(grad is None for grad in found):
                if hasattr(self.model, "_orig_mod"):
                    raise ValueError(
                        f"no gradient reached layer {name!r} of a torch.compile'd model (compiled graphs skip "
                        "module hooks in the backward): pass the original module (compiled._orig_mod), or run "
                        "the forward inside extractor.lean()"
                    )
                raise ValueError(
                    f"the target score does not depend on layer {name!r}: pick a layer that the output is "
                    "computed from, and pass the scores of the same forward"
                )
            if isinstance(source, Tensor):
                result.append(found[0])  # not None: checked above
                continue
            # a tensor of the structure the score does not use has a zero gradient
            filled = iter(torch.zeros_like(t) if g is None else g for t, g in zip(part, found, strict=True))
            leaves = [next(filled) if _differentiable(t) else torch.zeros_like(t) for t in source.leaves()]
            result.append(cast(Tensor, source.replaced(leaves)))
        self.last_gradients = [g.detach() for g in result]
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
        # a structured layer output is handled tensor by tensor, and put back together
        pairs = [_leaf_pairs(s, g) for s, g in zip(sources, grads, strict=True)]
        flat = [(a, g) for layer in pairs for a, g in layer]
        connected = [(k, a, g) for k, (a, g) in enumerate(flat) if g.requires_grad]
        products: list[Tensor] = [torch.zeros_like(a) for a, _ in flat]
        if connected:
            found = torch.autograd.grad(
                [g for _, _, g in connected],
                [a for _, a, _ in connected],
                grad_outputs=[a.detach() for _, a, _ in connected],
                retain_graph=retain_graph,
                allow_unused=True,
            )
            for (k, _, _), product in zip(connected, found, strict=True):
                if product is not None:
                    products[k] = product
        result: list[Tensor] = []
        start = 0
        for source, layer in zip(sources, pairs, strict=True):
            mine, start = products[start : start + len(layer)], start + len(layer)
            if isinstance(source, Tensor):
                result.append(mine[0])
            else:
                filled = iter(mine)
                leaves = [next(filled) if _differentiable(t) else torch.zeros_like(t) for t in source.leaves()]
                result.append(source.replaced(leaves))
        return result
