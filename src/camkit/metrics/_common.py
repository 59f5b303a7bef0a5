"""What every metric shares: result types, map and target preparation, batched forwards.

Maps may come from any method: the list an extractor returns (several layers are fused with
:func:`camkit.ops.fuse`), one tensor ``(N, *S)`` or ``(N, 1, *S)``, or numpy arrays (e.g. the
pytorch-grad-cam front door's output). They are moved to the input's device and resized to the
input's spatial size with (bi/tri)linear interpolation. Maps or inputs holding NaN or inf values are
refused with a ``ValueError`` naming the samples (a metric of them would be meaningless); a value
left undefined by a metric itself (e.g. the pointing game on a flat map) is NaN, and means skip NaN
samples.

Targets are the engine's target objects (:mod:`camkit.targets`); a plain int or a list of ints
(one per sample) means the softmax probability of that class (:class:`ClassProbabilityTarget`),
and ``None`` the probability of the class the model predicts for the clean input. A list of
callables, one per sample, is accepted as pytorch-grad-cam passes targets.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor, nn

from camkit import ops
from camkit.engine import ImageArg, ModelInput, default_batch_size, paused, perturbed_forward
from camkit.targets import ClassProbabilityTarget, RowwiseTarget, logits_of, select_rows

__all__ = [
    "CurveResult",
    "MapsLike",
    "MetricResult",
    "TargetLike",
    "make_result",
    "prepare_maps",
]

#: Maps accepted by every metric.
MapsLike: TypeAlias = "Tensor | np.ndarray[Any, Any] | Sequence[Tensor | np.ndarray[Any, Any]]"
#: Targets accepted by every metric that runs the model.
TargetLike: TypeAlias = "Callable[..., Tensor] | int | Sequence[int] | Sequence[Callable[..., Tensor]] | Tensor | None"


@dataclass(frozen=True)
class MetricResult:
    """One value per sample and their mean.

    Attributes:
        per_sample: ``(N,)`` values; NaN where the sample's map was unusable (NaN/inf values).
        mean: mean over the samples whose value is not NaN (NaN when there are none).
    """

    per_sample: Tensor
    mean: float


@dataclass(frozen=True)
class CurveResult(MetricResult):
    """A per-sample value summarizing a curve, with the curve itself.

    Attributes:
        curve: ``(N, K)`` one point per perturbation level.
        fractions: ``(K,)`` the fraction of positions perturbed at each point, in ``[0, 1]``.
    """

    curve: Tensor
    fractions: Tensor


def make_result(per_sample: Tensor) -> MetricResult:
    """Wrap per-sample values with their NaN-skipping mean."""
    return MetricResult(per_sample, nanmean(per_sample))


def nanmean(values: Tensor) -> float:
    """Mean of the non-NaN values as a Python float (NaN when all are NaN)."""
    return float(torch.nanmean(values.double())) if values.numel() else float("nan")


def batch_of(value: Any, device: torch.device) -> int:
    """``batch_size`` checked (an int >= 1), or the device's default for ``None``: 8 on a CPU, 32 on a GPU."""
    if value is None:
        return default_batch_size(device)
    return positive_int(value, "batch_size")


def positive_int(value: Any, name: str) -> int:
    """Check that ``value`` is an int >= 1 and return it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def nonfinite_samples(values: Tensor) -> list[int]:
    """The indices of the samples (first dim) holding a NaN or inf value."""
    if values.numel() == 0 or math.isfinite(float(values.detach().sum())):  # one fast reduction first
        return []
    finite = torch.isfinite(values.detach().reshape(values.shape[0], -1)).all(dim=1)  # or the sum overflowed
    return [int(i) for i in (~finite).nonzero().flatten().tolist()]


def _samples(bad: Sequence[int], batch: int) -> str:
    shown = ", ".join(str(i) for i in bad[:10])
    return f"sample(s) [{shown}{', ...' if len(bad) > 10 else ''}] ({len(bad)} of {batch})"


def check_finite(values: Tensor, name: str, fix: str) -> Tensor:
    """Check that ``values`` holds no NaN/inf and return it.

    Args:
        values: a batch, samples along the first dim.
        name: the argument's name, for the message.
        fix: what to check, for the message.

    Raises:
        ValueError: naming the samples that hold NaN or inf values.
    """
    bad = nonfinite_samples(values)
    if bad:
        raise ValueError(f"{name} hold NaN/inf values in {_samples(bad, values.shape[0])}: {fix}")
    return values


def check_inputs(inputs: Any) -> Tensor:
    """Check that ``inputs`` is a finite floating tensor ``(N, C, *S)`` with at least one spatial dim and return it.

    Raises:
        TypeError: when ``inputs`` is not a tensor.
        ValueError: for a wrong dtype or rank, or NaN/inf values (naming the samples).
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor (N, C, *S), got {type(inputs).__name__}")
    if inputs.ndim < 3 or not inputs.is_floating_point():
        hint = "; add a batch dimension with x.unsqueeze(0)" if inputs.ndim == 2 else ""
        raise ValueError(
            f"inputs must be a floating-point tensor (N, C, *S) with at least one spatial dim "
            f"(1D, 2D, 3D inputs: (N, C, L), (N, C, H, W), (N, C, D, H, W)), "
            f"got dtype {inputs.dtype} and shape {tuple(inputs.shape)}{hint}"
        )
    return check_finite(inputs, "inputs", "a metric of them would be meaningless; check the preprocessing")


#: a tensor, or a tuple/dict of a model's arguments with the image among them
InputsLike: TypeAlias = "Tensor | tuple[Any, ...] | Mapping[str, Any]"


def split_inputs(inputs: Any, image_arg: ImageArg = None) -> tuple[Tensor, ModelInput | None]:
    """The image of ``inputs`` (checked as :func:`check_inputs`), and the whole call for tuple/dict inputs.

    Args:
        inputs: a tensor, or for a model with several inputs a tuple of positional arguments or a
            dict of keyword arguments (see :class:`camkit.engine.ModelInput`).
        image_arg: which argument is the image, when ambiguous.

    Returns:
        The image ``(N, C, *S)`` the metric perturbs, and the call (``None`` for a plain tensor).
    """
    if isinstance(inputs, Tensor):
        return check_inputs(inputs), None
    call = ModelInput.of(inputs, image_arg)
    return check_inputs(call.image), call


def _as_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(
        f"{name} must be a tensor, a numpy array, or a list of them (one per layer), got {type(value).__name__}"
    )


def prepare_maps(
    maps: MapsLike,
    batch: int,
    size: Sequence[int],
    device: torch.device,
    name: str = "maps",
    *,
    finite: bool = True,
) -> Tensor:
    """Turn any accepted maps into a float tensor ``(batch, *size)`` on ``device``.

    Args:
        maps: see the module docstring.
        batch: the number of samples.
        size: the spatial size to resize to.
        device: where the maps go.
        name: the argument name used in error messages.
        finite: refuse maps holding NaN/inf values; ``False`` leaves such rows as they are (see
            :func:`valid_rows`), for a caller that skips them itself.

    Returns:
        The maps.

    Raises:
        TypeError: for maps of an unknown type.
        ValueError: for an empty list, a wrong number of dims, a batch mismatch, or NaN/inf values
            (naming the samples).

    Example:
        >>> maps = torch.rand(2, 4, 4)
        >>> maps[1, 0, 0] = float("nan")
        >>> prepare_maps(maps, 2, (8, 8), torch.device("cpu"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: maps hold NaN/inf values in sample(s) [1] (1 of 2): a metric of them would be meaningless; ...
    """
    size = tuple(int(s) for s in size)
    if isinstance(maps, (list, tuple)):
        if len(maps) == 0:
            raise ValueError(f"{name} is an empty list: pass the maps returned by the extractor")
        layers = [_as_tensor(m, name) for m in maps]
    else:
        layers = [_as_tensor(maps, name)]
    shaped = []
    for layer in layers:
        if layer.ndim == len(size) + 2 and layer.shape[1] == 1:
            layer = layer.squeeze(1)
        if layer.ndim != len(size) + 1:
            raise ValueError(
                f"{name} must have shape (N, *S) or (N, 1, *S) with {len(size)} spatial dim(s) like the input, "
                f"got {tuple(layer.shape)}"
            )
        if layer.shape[0] != batch:
            raise ValueError(
                f"{name} has {layer.shape[0]} map(s) but the input batch has {batch} sample(s): pass one map per sample"
            )
        if not layer.is_floating_point() or layer.dtype in (torch.float16, torch.bfloat16):
            layer = layer.float()
        if finite:
            fix = f"a metric of them would be meaningless; check the method's output (torch.isfinite({name}).all())"
            check_finite(layer, name, fix)
        shaped.append(layer.to(device))
    fused = shaped[0] if len(shaped) == 1 else ops.fuse(shaped, size)
    return ops.upsample(fused, size)


def valid_rows(maps: Tensor) -> Tensor:
    """``(N,)`` True where a map holds only finite values."""
    return torch.isfinite(maps.flatten(1)).all(dim=1)


class PerSampleTargets:
    """Targets given one per sample (pytorch-grad-cam's convention) as one batched target.

    Row ``b`` of an output is scored by ``targets[rows[b]]``: a :class:`RowwiseTarget` gets all
    rows of its sample at once, any other callable one row at a time (a 1-D output), as
    pytorch-grad-cam calls its targets.

    Args:
        targets: one callable per sample.
    """

    def __init__(self, targets: Sequence[Callable[..., Tensor]]) -> None:
        self.targets = list(targets)

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Scores ``(B,)`` of the output rows."""
        out = output if isinstance(output, Tensor) else logits_of(output)
        if rows is None:
            rows = torch.arange(out.shape[0])
        rows = rows.cpu()
        values: list[Tensor | None] = [None] * out.shape[0]
        for sample in torch.unique(rows).tolist():
            pick = (rows == sample).nonzero().squeeze(1).tolist()
            target = self.targets[sample]
            if isinstance(target, RowwiseTarget):  # keeps the output's structure (output_key, ModelOutput)
                got = torch.as_tensor(target(select_rows(output, pick))).reshape(-1)
                for i, row in enumerate(pick):
                    values[row] = got[i]
            else:
                for row in pick:
                    values[row] = torch.as_tensor(target(out[row])).reshape(())
        return torch.stack([v for v in values if v is not None]).to(out.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.targets!r})"


def resolve_target(targets: TargetLike, batch: int) -> Callable[..., Tensor] | None:
    """Turn any accepted ``targets`` into one batched target (``None``: the predicted class).

    Raises:
        TypeError: for targets of an unknown type.
        ValueError: for a list whose length is not the batch size.
    """
    if targets is None:
        return None
    if isinstance(targets, (Tensor, np.ndarray)):
        if targets.ndim > 1:
            raise ValueError(f"targets as a tensor must hold class indices (N,), got shape {tuple(targets.shape)}")
        targets = [int(v) for v in targets.reshape(-1).tolist()]
    if isinstance(targets, bool):
        raise TypeError("targets must be a target object, a class index, or a list of them, got a bool")
    if isinstance(targets, (int, np.integer)):
        return ClassProbabilityTarget(operator.index(targets))
    if isinstance(targets, Sequence) and not isinstance(targets, str):
        items: list[Any] = list(targets)
        if len(items) != batch:
            raise ValueError(f"targets has {len(items)} entries but the batch has {batch} samples: pass one per sample")
        if all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in items):
            return ClassProbabilityTarget([int(t) for t in items])
        if all(callable(t) for t in items):
            return PerSampleTargets(items)
        raise TypeError("targets as a list must hold either class indices (ints) or target callables, one per sample")
    if callable(targets):
        return targets
    raise TypeError(
        f"targets must be a camkit target (e.g. ClassTarget(3)), a class index, a list of either, or None; "
        f"got {type(targets).__name__}"
    )


def _checked(values: Any, rows: int) -> Tensor:
    if not isinstance(values, Tensor) or values.shape != (rows,):
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(
            f"the target returned {shape} for a batch of {rows} output rows; "
            f"a metric needs one scalar per row ({rows},)"
        )
    return values.to(torch.promote_types(values.dtype, torch.float32))


def forward_scores(
    model: nn.Module,
    target: Callable[..., Tensor],
    rows: Tensor,
    make: Callable[[slice], Tensor],
    batch_size: int,
    call: ModelInput | None = None,
) -> Tensor:
    """Target scores of ``len(rows)`` inputs built by ``make``, ``batch_size`` per forward.

    Runs under :func:`torch.inference_mode` with camkit's hooks paused; the caller sets eval mode.

    Args:
        model: the model.
        target: the batched target.
        rows: the sample each input belongs to.
        make: builds the inputs of a slice of rows.
        batch_size: inputs per forward.
        call: for a model with several inputs, its call: the built images replace its image and its
            other arguments are repeated along the batch by ``rows``.

    Returns:
        ``(len(rows),)`` scores.
    """
    parts = []
    with paused(), torch.inference_mode():
        for start in range(0, rows.shape[0], batch_size):
            part = slice(start, min(start + batch_size, rows.shape[0]))
            images, picked = make(part), rows[part]

            def forward(batch: Tensor, picked: Tensor = picked) -> Any:
                return model(batch) if call is None else call.replace(batch, picked)(model)

            out = perturbed_forward(model, images, forward)
            parts.append(_checked(target(out, picked), part.stop - part.start))
    return torch.cat(parts)


def clean_scores(
    model: nn.Module, inputs: Tensor, targets: TargetLike, batch_size: int, call: ModelInput | None = None
) -> tuple[Callable[..., Tensor], Tensor]:
    """Resolve ``targets`` and score the clean inputs (the caller sets eval mode).

    Returns:
        The batched target (the predicted class's probability when ``targets`` is ``None``) and
        the ``(N,)`` scores of the clean inputs.
    """
    batch = inputs.shape[0]
    rows = torch.arange(batch, device=inputs.device)
    target = resolve_target(targets, batch)
    if target is not None:
        return target, forward_scores(model, target, rows, lambda part: inputs[part], batch_size, call)
    classes: list[Tensor] = []

    def predicted(output: Any, rows: Tensor | None = None) -> Tensor:
        chosen = logits_of(output).argmax(dim=-1)
        classes.append(chosen)
        return ClassProbabilityTarget(chosen.tolist())(output)

    scores = forward_scores(model, predicted, rows, lambda part: inputs[part], batch_size, call)
    return ClassProbabilityTarget(torch.cat(classes).tolist()), scores
