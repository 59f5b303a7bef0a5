"""TorchCAM-style classes made from the registry's specs (see :mod:`camkit.registry`).

A method's class in :mod:`camkit.methods` is generated from its spec: the name (``class_name``),
the constructor (``model, target_layer=None, *positional options, input_shape=(3, 224, 224),
**options``, TorchCAM's signatures), the attributes TorchCAM sets and the docstring (summary,
formula, notes, paper, options, a runnable example). A spec that names a hand-written class
(``extractor=``, only CAM with its ``fc_layer`` argument) gets that class instead.
"""

from __future__ import annotations

import inspect
from typing import Any

from camkit.engine import CAMExtractor
from camkit.registry import ENGINE_SWITCHES, MethodSpec, get_method, list_methods

__all__ = ["class_for", "extractor_class", "option_lines", "spec_docstring"]

_CACHE: dict[str, tuple[MethodSpec, type[CAMExtractor]]] = {}
_INPUT_SHAPE = (3, 224, 224)


def option_lines(spec: MethodSpec, indent: str = "    ") -> list[str]:
    """One ``name: doc (default X).`` docstring line per declared option."""
    lines = []
    for key, option in spec.options.items():
        doc = option.doc.rstrip(".") or "method option"
        lines.append(f"{indent}{key}: {doc} (default ``{option.default!r}``).")
    return lines


def spec_docstring(spec: MethodSpec, args: list[str], example: list[str]) -> str:
    """A generated class's docstring: summary, formula, notes, paper, ``Args`` and ``Example``."""
    parts = [spec.summary]
    if spec.formula:
        parts.append(spec.formula)
    if spec.notes:
        parts.append(spec.notes.strip())
    parts.append(f"Paper: {spec.paper}.")
    parts.append("Args:\n" + "\n".join(args))
    parts.append("Example:\n" + "\n".join(example))
    return "\n\n".join(parts) + "\n"


def _example(spec: MethodSpec, import_line: str, construct: str, call: str, result: str) -> list[str]:
    return [
        "    >>> import torch",
        "    >>> from torch import nn",
        f"    >>> {import_line}",
        "    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),",
        "    ...                       nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()",
        f"    >>> with {construct} as cam:",
        f"    ...     {call}",
        f"    >>> {result}",
    ]


def _torchcam_docstring(spec: MethodSpec) -> str:
    needs = "needs ``scores``" if spec.needs_scores else "``scores`` not needed"
    args = [
        "    model: the model.",
        "    target_layer: layer(s) to explain, by module or dotted name; ``None`` picks one automatically"
        + (
            "; ignored: a black-box method reads no layer."
            if spec.black_box
            else " (this method's own layers)."
            if spec.layers is not None
            else "."
        ),
    ]
    if "batch_size" in spec.positional:
        args.append("    batch_size: inputs per forward when the method re-runs the model (default ``32``).")
    named = {line.strip().split(":", 1)[0]: line for line in option_lines(spec)}
    args += [named[key] for key in spec.positional if key in named]
    args.append("    input_shape: input shape without the batch dim, for the automatic layer choice.")
    rest = [line.strip() for key, line in named.items() if key not in spec.positional]
    args.append(
        "    **kwargs: "
        + (" ".join(rest) + " " if rest else "")
        + f"Engine switches of :class:`~camkit.CAMExtractor` ({', '.join(ENGINE_SWITCHES)}); an unknown "
        "name raises ``TypeError``."
    )
    # layer "2" keeps the input's 16x16 size, so every method's map has it (at the layer's or the input's size)
    shape = "torch.Size([2, 16, 16])"
    example = _example(
        spec,
        f"from camkit.methods import {spec.class_name}",
        f"{spec.class_name}(model, {'None' if spec.layers is not None else repr('2')})",
        "cams = cam(class_idx=[0, 1], scores=model(torch.rand(2, 3, 16, 16)))",
        "cams[0].shape",
    )
    example.append(f"    {shape}")
    doc = spec_docstring(spec, args, example)
    return doc.replace(f"{spec.summary}\n", f"{spec.summary} TorchCAM-style; {needs}.\n", 1)


def _make(spec: MethodSpec) -> type[CAMExtractor]:
    names = [*spec.positional, "input_shape"]

    def __init__(self: CAMExtractor, model: Any, target_layer: Any = None, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(
                f"{type(self).__name__}() takes at most {len(names) + 2} positional arguments "
                f"(model, target_layer, {', '.join(names)}), got {len(args) + 2}"
            )
        for key, value in zip(names, args, strict=False):
            if key in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {key!r}")
            kwargs[key] = value
        CAMExtractor.__init__(self, model, target_layer, **kwargs)
        for key in spec.positional:  # the attributes TorchCAM sets (``bs`` for the batch size)
            if key == "batch_size":
                setattr(self, "bs", self.batch_size)  # noqa: B010  (TorchCAM's attribute, not CAMExtractor's)
            else:
                setattr(self, key, self.options[key])

    parameters = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("target_layer", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
        *(
            inspect.Parameter(
                key,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=32 if key == "batch_size" else spec.options[key].default,
            )
            for key in spec.positional
        ),
        inspect.Parameter("input_shape", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=_INPUT_SHAPE),
        inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
    ]
    __init__.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{spec.class_name}.__init__"
    attrs = {
        "method": spec.name,
        "__init__": __init__,
        "__doc__": _torchcam_docstring(spec),
        "__module__": "camkit.methods",
        "__qualname__": spec.class_name,
    }
    return type(spec.class_name, (CAMExtractor,), attrs)


def extractor_class(method: str | MethodSpec) -> type[CAMExtractor]:
    """The TorchCAM-style class of a method: its hand-written class, else one made from its spec.

    Args:
        method: a registry name, a class name or a spec.

    Returns:
        The class (the same object on every call while the spec is registered).

    Raises:
        ValueError: for an unknown method.

    Example:
        >>> extractor_class("GradCAMpp").__name__
        'GradCAMpp'
    """
    spec = method if isinstance(method, MethodSpec) else get_method(method)
    if spec.extractor is not None:
        if not issubclass(spec.extractor, CAMExtractor):
            raise TypeError(f"the extractor of method {spec.name!r} must subclass CAMExtractor")
        return spec.extractor
    cached = _CACHE.get(spec.name)
    if cached is None or cached[0] is not spec:  # a spec registered again under the same name
        cached = _CACHE[spec.name] = (spec, _make(spec))
    return cached[1]


def class_for(name: str) -> type[CAMExtractor] | None:
    """The class whose name is ``name`` exactly (``None`` when no registered method has it)."""
    for key in list_methods():
        spec = get_method(key)
        if spec.class_name == name:
            return extractor_class(spec)
    return None
