"""Finding the tensor a target reads in whatever a model returned.

Models return a tensor, a tuple (PyTorch models with auxiliary heads, Hugging Face models called
with ``return_dict=False``), a dict (torchvision segmentation's ``{"out": ...}``) or a Hugging Face
``ModelOutput`` (a dict whose entries are also attributes). :func:`find_output` picks one tensor out
of any of them, by a key the caller names (``output_key``) or by the first default key present.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["OutputKey", "batch_size_of", "describe_output", "find_output", "key_repr", "select_rows"]

#: A key of a dict / ``ModelOutput`` / object attribute, an index of a tuple, or a path of them.
OutputKey = str | int | Sequence[str | int]


def key_repr(output_key: OutputKey | None) -> str:
    """``", output_key=..."`` for a target's ``repr`` (empty when it is ``None``)."""
    return "" if output_key is None else f", output_key={output_key!r}"


def _describe_value(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor{tuple(value.shape)}"
    return type(value).__name__


def describe_output(output: Any) -> str:
    """A short description of a model output: its type and, for containers, what they hold.

    Args:
        output: what the model returned.

    Returns:
        E.g. ``"dict with keys 'logits' (tensor(2, 3)), 'aux' (tensor(2,))"``.

    Example:
        >>> import torch
        >>> describe_output((torch.zeros(2, 3), None))
        'tuple of tensor(2, 3), NoneType'
    """
    if isinstance(output, Tensor):
        return _describe_value(output)
    if isinstance(output, Mapping):
        items = ", ".join(f"{key!r} ({_describe_value(value)})" for key, value in output.items())
        return f"{type(output).__name__} with keys {items or '(none)'}"
    if isinstance(output, (tuple, list)):
        return f"{type(output).__name__} of {', '.join(_describe_value(v) for v in output) or 'nothing'}"
    return type(output).__name__


def _step(output: Any, key: str | int, path: str) -> Any:
    """``output[key]`` for one key of a path, with an error that lists what was there."""
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"output_key must be a str, an int or a sequence of them, got {key!r} in {path}")
    if isinstance(key, int):
        values = list(output.values()) if isinstance(output, Mapping) else output
        if isinstance(values, (tuple, list)) and -len(values) <= key < len(values):
            return values[key]
    elif isinstance(output, Mapping):
        if key in output:
            return output[key]
    elif not isinstance(output, (tuple, list, Tensor)) and hasattr(output, key):
        return getattr(output, key)
    raise ValueError(
        f"output_key={path} does not fit the model output, a {describe_output(output)}: pass a key of a "
        "dict/ModelOutput (a str) or an index of a tuple (an int)"
    )


def find_output(
    output: Any,
    output_key: OutputKey | None = None,
    defaults: Sequence[str] = ("logits",),
    what: str = "class scores",
) -> Tensor:
    """The tensor a target reads in a model output.

    With ``output_key=None``: a tensor is used as it is, a tuple/list gives its first tensor, and
    a dict, a Hugging Face ``ModelOutput`` or any object gives the first of ``defaults`` it holds.
    With ``output_key``: a str is a key (or attribute), an int an index of a tuple (or of a
    ``ModelOutput``'s non-``None`` entries), and a sequence of them a path into nested outputs,
    e.g. ``("vision_model_output", "pooler_output")``. A tensor output is used as it is whatever
    ``output_key`` says, so a target keeps working on outputs that were already unpacked.

    Args:
        output: what the model returned.
        output_key: which entry to use (``None``: the defaults).
        defaults: keys tried in order when ``output_key`` is ``None``.
        what: what the tensor is, for error messages.

    Returns:
        The tensor.

    Raises:
        TypeError: when no entry fits (the message lists the keys and types found), or when the
            entry named is not a tensor.
        ValueError: when ``output_key`` names an entry the output does not have.

    Example:
        >>> import torch
        >>> find_output({"logits": torch.zeros(2, 3), "aux": torch.ones(2)}).shape
        torch.Size([2, 3])
        >>> find_output({"logits": torch.zeros(2, 3), "aux": torch.ones(2)}, output_key="aux")
        tensor([1., 1.])
        >>> find_output((torch.zeros(2, 3), torch.ones(2)), output_key=1)
        tensor([1., 1.])
    """
    if isinstance(output, Tensor):
        return output
    if output_key is not None:
        if isinstance(output_key, (str, int)):
            keys: list[Any] = [output_key]
        elif isinstance(output_key, Sequence):
            keys = list(output_key)
        else:
            raise TypeError(
                f"output_key must be a str, an int, a sequence of them or None, got {type(output_key).__name__}"
            )
        if not keys:
            raise ValueError("output_key is an empty sequence: pass a key, an index, or None")
        found = output
        for key in keys:
            found = _step(found, key, repr(output_key))
        if not isinstance(found, Tensor):
            raise TypeError(
                f"output_key={output_key!r} selects a {describe_output(found)}, not a tensor of {what}: "
                "extend output_key to a tensor inside it, e.g. output_key=(key, 'pooler_output')"
            )
        return found
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, Tensor):
                return item
    elif isinstance(output, Mapping):
        for key in defaults:
            value = output.get(key)
            if isinstance(value, Tensor):
                return value
    else:
        for key in defaults:
            value = getattr(output, key, None)
            if isinstance(value, Tensor):
                return value
    tried = " or ".join(repr(k) for k in defaults)
    raise TypeError(
        f"cannot find the {what} in a model output that is a {describe_output(output)}: expected a tensor, "
        f"a tuple whose first tensor holds them, or a dict/ModelOutput with {tried}; pass output_key= to "
        "name the entry (a key, or a tuple index), a target callable that picks it, or wrap the model "
        "(docs/any-model.md, 'Wrapping a model')"
    )


def batch_size_of(output: Any) -> int:
    """The number of rows of a model output (tensor, list of per-image outputs, tuple or dict).

    Args:
        output: what the model returned.

    Returns:
        The batch size.

    Raises:
        TypeError: when the output holds no batched tensor.
    """
    if isinstance(output, Tensor):
        return int(output.shape[0]) if output.ndim else 1
    if isinstance(output, list):
        return len(output)
    values = output.values() if isinstance(output, Mapping) else output if isinstance(output, tuple) else ()
    for value in values:
        if isinstance(value, Tensor) and value.ndim:
            return int(value.shape[0])
    raise TypeError(
        f"cannot tell the batch size of a model output of type {type(output).__name__}: expected a tensor, "
        "a list with one entry per image, or a tuple/dict of batched tensors"
    )


def select_rows(output: Any, index: Tensor | Sequence[int]) -> Any:
    """Rows ``index`` of a model output, keeping its structure.

    Args:
        output: a tensor, a list with one entry per image, or a tuple/dict of batched tensors.
        index: the rows to keep.

    Returns:
        The same kind of object restricted to those rows.

    Example:
        >>> select_rows({"out": torch.arange(6).view(3, 2)}, [2, 0])
        {'out': tensor([[4, 5],
                [0, 1]])}
    """
    positions = [int(i) for i in index]
    batch = batch_size_of(output)

    def pick(value: Any) -> Any:
        if isinstance(value, Tensor) and value.ndim and value.shape[0] == batch:
            return value[torch.as_tensor(positions, device=value.device, dtype=torch.long)]
        return value

    if isinstance(output, list):
        return [output[i] for i in positions]
    if isinstance(output, Mapping):
        return {key: pick(value) for key, value in output.items()}
    if isinstance(output, tuple):
        return tuple(pick(value) for value in output)
    return pick(output)
