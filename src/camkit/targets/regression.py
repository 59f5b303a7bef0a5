"""Targets for heads that are not a softmax over classes: regression and multi-label outputs.

Binary heads (one logit per sample) are explained by
:class:`~camkit.targets.BinaryClassifierOutputTarget`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from camkit.targets._output import OutputKey, find_output, key_repr
from camkit.targets.classification import RowwiseTarget, category_index

__all__ = ["MultiLabelTarget", "RegressionTarget"]


class RegressionTarget(RowwiseTarget):
    r"""One unit of a regression output, optionally negated: :math:`\pm Y_u`.

    ``negate=True`` explains what lowers the value (e.g. regions that make a predicted age
    younger). The output may be ``(N, K)`` (unit ``u`` of each row) or ``(N,)`` (one value per
    sample, ``unit=0``); one sample's value of an ``(N,)`` head (a 0-d tensor) gives a 0-d scalar.
    A 1-D output is always read as one value per sample, never as one sample's ``K`` units.

    Args:
        unit: the output unit (column) to explain.
        negate: explain :math:`-Y_u` instead of :math:`Y_u`.
        output_key: where the values are in a tuple/dict/``ModelOutput`` output (``None``: a
            tensor, the first tensor of a tuple, or ``logits``); see :func:`camkit.targets.find_output`.

    Raises:
        TypeError: if ``unit`` is not an int or ``negate`` not a bool.
        ValueError: if ``unit`` is negative.

    Example:
        >>> RegressionTarget(1)(torch.tensor([[0.5, 2.0], [1.0, -3.0]]))
        tensor([ 2., -3.])
        >>> RegressionTarget(negate=True)(torch.tensor([0.5, 1.0]))  # an (N,) head
        tensor([-0.5000, -1.0000])
    """

    def __init__(self, unit: int = 0, negate: bool = False, *, output_key: OutputKey | None = None) -> None:
        self.unit = category_index(unit, "unit")
        if not isinstance(negate, bool):
            raise TypeError(f"negate must be True or False, got {negate!r}")
        self.negate = negate
        self.output_key = output_key

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        r"""The unit's value per row, ``(B,)`` (a 0-d scalar for one sample's 0-d value).

        Args:
            output: the model output.
            rows: unused (the value of a row depends on that row only).

        Returns:
            :math:`\pm Y_u` per row.

        Raises:
            ValueError: when the output is not ``(N,)`` or ``(N, K)`` with ``K > unit``.
        """
        values = find_output(output, self.output_key, ("logits",), "regression output")
        if values.ndim == 2 and self.unit < values.shape[1]:
            picked = values[:, self.unit]
        elif values.ndim <= 1 and self.unit == 0:
            picked = values
        else:
            raise ValueError(
                f"RegressionTarget(unit={self.unit}) needs an output (N, K) with K > {self.unit}, or (N,) with "
                f"unit=0 (one value per sample), got shape {tuple(values.shape)}"
                + ("; pick the output with output_key= or flatten it in the model" if values.ndim > 2 else "")
            )
        return -picked if self.negate else picked

    def __repr__(self) -> str:
        return f"{type(self).__name__}(unit={self.unit}, negate={self.negate}{key_repr(self.output_key)})"


class MultiLabelTarget(RowwiseTarget):
    r"""The sigmoid probability of one label of a multi-label head: :math:`\sigma(Y^{(l)})`.

    Multi-label heads score every label independently (trained with a binary cross-entropy per
    label), so the probability of a label is the sigmoid of its logit, not a softmax over labels.
    The output is ``(N, K)`` (returns ``(N,)``) or one sample's ``(K,)`` (returns a 0-d scalar).

    Args:
        label: the label index.
        output_key: where the logits are in a structured output (see :class:`RegressionTarget`).

    Raises:
        TypeError: if ``label`` is not an int.
        ValueError: if it is negative.

    Example:
        >>> MultiLabelTarget(1)(torch.tensor([[3.0, 0.0], [0.0, 2.0]]))
        tensor([0.5000, 0.8808])
    """

    def __init__(self, label: int, *, output_key: OutputKey | None = None) -> None:
        self.label = category_index(label, "label")
        self.output_key = output_key

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        r"""The label's sigmoid probability per row (a 0-d scalar for one sample's ``(K,)`` logits).

        Args:
            output: the model output.
            rows: unused (the value of a row depends on that row only).

        Returns:
            :math:`\sigma(Y^{(l)})` per row.

        Raises:
            ValueError: when the output is not ``(K,)`` or ``(N, K)`` with ``K > label``.
        """
        logits = find_output(output, self.output_key, ("logits",), "label logits")
        if logits.ndim not in (1, 2) or self.label >= logits.shape[-1]:
            raise ValueError(
                f"MultiLabelTarget({self.label}) needs logits (N, K) (or one sample's (K,)) with K > {self.label}, "
                f"got shape {tuple(logits.shape)}"
            )
        return torch.sigmoid(logits[..., self.label])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label}{key_repr(self.output_key)})"
