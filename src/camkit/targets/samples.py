"""Per-sample targets: one callable called on ONE sample's output (TorchCAM's ``OutputTarget``).

camkit's engine differentiates one batched target ``target(output, rows=None) -> (B,)``. TorchCAM
(and pytorch-grad-cam) users write targets for one sample instead: ``target(sample_output)``
returning a scalar tensor, either one callable for every sample or a list with one per sample.
:class:`SampleTargets` turns those into one batched target, and :func:`as_target` decides which of
the two conventions a ``targets=`` argument follows:

* a list or tuple of callables: one per-sample target per sample;
* a callable that accepts a second positional argument (``rows``): a camkit batched target;
* any other callable (``operator.itemgetter("logits")``, ``lambda out: out[3]``): a per-sample
  target used for every sample.

A sample's output is ``output[b]`` of a tensor output (the batch dim removed) or element ``b`` of
a list output (one entry per sample, e.g. one dict per image).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["SampleTarget", "SampleTargets", "as_target", "takes_rows"]

#: A target called on ONE sample's output, returning a scalar tensor.
SampleTarget = Callable[[Any], Tensor]


def takes_rows(target: Callable[..., Any]) -> bool:
    """Whether ``target`` can be called as ``target(output, rows)`` (camkit's batched convention).

    Callables whose signature Python cannot read (``operator.itemgetter``, some builtins) count as
    per-sample targets.

    Example:
        >>> from camkit.targets import ClassTarget
        >>> takes_rows(ClassTarget(1)), takes_rows(lambda out: out[1])
        (True, False)
    """
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(None, None)
    except TypeError:
        return False
    return True


def _samples(output: Any) -> Sequence[Any]:
    """The per-sample outputs of a batched model output (a tensor's rows, or a list's entries)."""
    if isinstance(output, Tensor):
        if output.ndim == 0:
            raise ValueError(
                "model output must have a batch dimension for per-sample targets, got a 0-d tensor: "
                "run the model on a batch (x.unsqueeze(0))"
            )
        return output.unbind(0)
    if isinstance(output, list):
        return output
    raise TypeError(
        f"model output must be a tensor or a per-sample list for per-sample targets, got "
        f"{type(output).__name__}: pass a camkit target (target(output, rows=None) -> (B,), e.g. "
        "camkit.targets.ClassTarget(c, output_key=...)) instead"
    )


def _scalar(value: Any, target: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"each target must return a tensor, but {target!r} returned {type(value).__name__}: "
            "return a scalar tensor of the sample's output (e.g. sample_output[class_idx])"
        )
    if value.numel() != 1:
        raise ValueError(
            f"each target must return a scalar tensor, but {target!r} returned shape {tuple(value.shape)}: "
            "pick one value of the sample's output (e.g. sample_output[class_idx])"
        )
    return value.reshape(())


class SampleTargets:
    """One batched camkit target made of per-sample targets (TorchCAM's ``OutputTarget``).

    Output row ``b`` is scored by ``targets[rows[b]]`` (``rows=None``: row ``b`` is sample ``b``);
    a single callable scores every row. Perturbation methods send several rows per sample, each
    scored by its sample's target.

    Args:
        targets: one callable for every sample, or a list with one per sample.

    Raises:
        TypeError: when ``targets`` is not a callable or a list of callables.

    Example:
        >>> from operator import itemgetter
        >>> SampleTargets([itemgetter(0), itemgetter(1)])(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        tensor([1., 4.])
    """

    def __init__(self, targets: SampleTarget | Sequence[SampleTarget]) -> None:
        if callable(targets):
            self.targets: list[SampleTarget] | None = None
            self.target: SampleTarget | None = targets
        elif isinstance(targets, (list, tuple)) and targets and all(callable(t) for t in targets):
            self.targets = list(targets)
            self.target = None
        else:
            raise TypeError(
                f"targets must be a callable or a list of callables (one per sample), got {targets!r}: "
                "e.g. targets=operator.itemgetter(3), or targets=[t0, t1] for a batch of two"
            )

    def check_batch(self, batch: int) -> None:
        """Raise ``ValueError`` unless there is one target per sample (or one for all).

        Raises:
            ValueError: naming both sizes.
        """
        if self.targets is not None and len(self.targets) != batch:
            raise ValueError(
                f"per-sample targets must match the batch size: got {len(self.targets)} targets for a batch "
                f"of {batch}; pass one target per sample, or a single callable for all"
            )

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """The scalar of every output row, ``(B,)``."""
        samples = _samples(output)
        owners = list(range(len(samples))) if rows is None else [int(r) for r in rows.tolist()]
        if len(owners) != len(samples):
            raise ValueError(f"rows has {len(owners)} entries for an output of {len(samples)} rows")
        if self.targets is not None and owners and max(owners) >= len(self.targets):
            self.check_batch(max(owners) + 1)
        chosen = [self.target] * len(samples) if self.targets is None else [self.targets[o] for o in owners]
        values = [_scalar(t(sample), t) for t, sample in zip(chosen, samples, strict=True)]  # type: ignore[misc]
        if not values:
            return torch.zeros(0)
        return torch.stack([v.to(values[0].dtype) for v in values])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target if self.targets is None else self.targets!r})"


def as_target(targets: Any, batch: int | None = None) -> Any:
    """The batched camkit target for a ``targets=`` argument in either convention.

    Args:
        targets: a camkit target (``target(output, rows=None)``), a per-sample callable, or a list
            of per-sample callables (one per sample).
        batch: the batch size, to check a list's length against.

    Returns:
        ``targets`` itself when it is a camkit target, else a :class:`SampleTargets`.

    Raises:
        TypeError: for anything that is neither a callable nor a list of callables.
        ValueError: for a list whose length is not ``batch``.

    Example:
        >>> from operator import itemgetter
        >>> as_target(itemgetter(2))
        SampleTargets(operator.itemgetter(2))
    """
    if callable(targets) and takes_rows(targets):
        return targets
    resolved = SampleTargets(targets)
    if batch is not None:
        resolved.check_batch(batch)
    return resolved
