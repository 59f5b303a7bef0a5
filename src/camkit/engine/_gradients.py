"""The autograd half of :class:`camkit.engine.Capture`: gradients and Hessian-vector products of the captures.

Only :func:`torch.autograd.grad` is used (never ``Tensor.backward``), so no parameter's ``.grad``
is touched and the backward stops at the target layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from camkit.engine._gate import NO_GRAD_HINT

__all__ = ["GradientsMixin"]


class GradientsMixin:
    """Gradients of a score with respect to what a capture holds (mixed into :class:`~camkit.engine.Capture`)."""

    layer_names: list[str]
    model: Any
    input: Tensor | None
    input_grad: Tensor | None

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
