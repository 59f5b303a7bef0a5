r"""The method registry: one :func:`register` spec per CAM method is its only description.

Everything else is derived from the spec: the TorchCAM-style class in :mod:`camkit.methods`, the
pytorch-grad-cam-style class in :mod:`camkit.compat.gradcam`, :func:`camkit.explain`,
:func:`camkit.compare`, the ``camkit`` command's choices, the docs table and the generated tests.
A method registered by a user at run time gets all of them too.

A weight function has the signature ``fn(A, G, ctx) -> w`` where ``A`` is the captured
activation ``(N, C, *S)``, ``G`` its gradient (a tensor for methods registered with
``needs_gradients=True``, ``None`` otherwise: :class:`GradientWeights` and
:class:`ActivationWeights`) and ``ctx`` a :class:`MethodContext`. It returns channel weights
``(N, C)`` or spatial weights ``(N, C, *S)`` (the engine then combines :math:`\sum_k w_k A_k` in one
broadcast step), or with ``output="map"`` the map ``(N, *S)`` itself.

Example — a method of your own in a few lines (see docs/methods.md, "Add your own method"):

    >>> import torch
    >>> import camkit
    >>> @camkit.register("abs_gradcam", family="gradient", needs_gradients=True,
    ...                  summary="Grad-CAM with the mean absolute gradient as channel weight.",
    ...                  paper="(example)")
    ... def absgradcam(a, g, ctx):
    ...     return g.abs().flatten(2).mean(-1)
    >>> from camkit.methods import AbsGradCAM
    >>> AbsGradCAM.method
    'abs_gradcam'
    >>> camkit.unregister("abs_gradcam")
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from types import MappingProxyType
from typing import Any, Literal, Protocol, overload

from torch import Tensor

__all__ = [
    "ENGINE_SWITCHES",
    "FAMILIES",
    "ActivationWeights",
    "GradientWeights",
    "MethodContext",
    "MethodSpec",
    "Option",
    "Probe",
    "check_options",
    "get_method",
    "list_methods",
    "register",
    "unregister",
]

#: The families a method may declare (the docs table groups by them).
FAMILIES = ("activation", "gradient", "perturbation")

#: Keyword arguments every extractor takes besides its method's options (see
#: :class:`camkit.CAMExtractor`); an option may not use one of these names.
ENGINE_SWITCHES = (
    "batch_size",
    "eigen_smooth",
    "enable_hooks",
    "image_arg",
    "input_shape",
    "progress",
    "reforward",
    "reshape_transform",
)


class Probe(Protocol):
    """What the engine offers a method that must run the model again (perturbation, noise)."""

    batch_size: int

    def scores(self, inputs: Tensor, rows: Tensor) -> Tensor:
        """Target scores ``(B,)`` of ``inputs`` ``(B, ...)``; row ``b`` belongs to sample ``rows[b]``."""
        ...

    def gradients(self, inputs: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Activation and gradient of the target score at this layer for ``inputs`` (rows as above)."""
        ...

    def replaced_scores(self, activations: Tensor, rows: Tensor) -> Tensor:
        """Target scores ``(B,)`` when this layer outputs ``activations`` (rows as above)."""
        ...

    def input_gradients(self, inputs: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Target scores ``(B,)`` of ``inputs`` and their gradient with respect to ``inputs`` (rows as above)."""
        ...

    def chunks(
        self, rows: int, repeat: int = 1, label: str = "inputs", row_bytes: int | None = None
    ) -> Iterator[tuple[int, slice]]:
        """``(repeat index, slice)`` of rows per forward, with a progress line on long runs."""
        ...


@dataclass
class MethodContext:
    """What a weight function may read besides ``A`` and ``G``.

    Attributes:
        model: the model being explained (read-only for methods).
        layer: index of the target layer being weighted.
        target: the target object (what scalar is explained), see :mod:`camkit.targets`.
        layer_name: its dotted name in the model.
        options: the method's options, every declared one present (the given value or its default).
        input: the model input that produced ``A`` (methods registered with ``needs_input``).
        probe: re-runs the model for perturbation methods (``needs_input``).
        hvp: the Hessian-vector product ``H A`` (methods registered with ``needs_hvp``).
    """

    model: Any
    layer: int
    target: Any
    layer_name: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    input: Tensor | None = None
    probe: Probe | None = None
    hvp: Tensor | None = None


class GradientWeights(Protocol):
    """The weight function of a method registered with ``needs_gradients=True``: ``G`` is a tensor."""

    def __call__(self, a: Tensor, g: Tensor, ctx: MethodContext, /) -> Tensor:
        """Weights ``(N, C)`` or ``(N, C, *S)``, or the map ``(N, *S)`` (``output="map"``)."""
        ...


class ActivationWeights(Protocol):
    """The weight function of a gradient-free method: ``G`` is always ``None``."""

    def __call__(self, a: Tensor, g: None, ctx: MethodContext, /) -> Tensor:
        """Weights ``(N, C)`` or ``(N, C, *S)``, or the map ``(N, *S)`` (``output="map"``)."""
        ...


WeightFn = GradientWeights | ActivationWeights
#: maps of every target layer, the model input and its gradient → the method's one map (FullGrad)
Reduce = Callable[[Sequence[Tensor], "Tensor | None", "Tensor | None"], Tensor]


@dataclass(frozen=True)
class Option:
    """One declared option of a method.

    Attributes:
        default: the value when the option is not given.
        types: the accepted types (``None`` is always accepted when it is the default); empty: any.
        doc: one line for the generated docstrings and the docs.
    """

    default: Any = None
    types: tuple[type, ...] = ()
    doc: str = ""

    def check(self, method: str, name: str, value: Any) -> None:
        """Raise ``TypeError`` when ``value`` has none of the accepted types.

        Raises:
            TypeError: naming the option, the value and the accepted types.
        """
        if not self.types or (value is None and self.default is None):
            return
        wrong_bool = isinstance(value, bool) and bool not in self.types
        if wrong_bool or not isinstance(value, self.types):
            accepted = " or ".join(t.__name__ for t in self.types)
            raise TypeError(f"{method}: option {name}={value!r} must be {accepted}, got {type(value).__name__}")


@dataclass(frozen=True)
class MethodSpec:
    r"""A registry entry: everything camkit needs to know about one method.

    Attributes:
        name: registry key (lower case, e.g. ``"gradcam"``).
        weights: the weight (or map) function.
        needs_gradients: the engine must provide ``G = dY/dA``.
        needs_scores: in the TorchCAM-style call, ``scores`` (the model output) is required.
        needs_target: the map depends on what is explained (a class, a score); ``False`` for
            class-agnostic methods (Eigen-CAM, FEM, ...), which then run without any target on models
            whose output holds no class scores (detectors, segmenters, embedding models).
        needs_input: the method re-runs the model on modified inputs (gets ``ctx.input``/``ctx.probe``).
        relu: apply ReLU to the combined map.
        summary: one line for ``camkit methods`` and the docs table.
        paper: reference of the method.
        family: one of :data:`FAMILIES`.
        output: ``"weights"`` (the function returns ``w`` for the combine step) or ``"map"`` (it
            returns the map ``(N, *S)`` itself, e.g. a projection on a principal component).
        stochastic: the result depends on random draws (its tests compare seeded runs).
        needs_hvp: the engine must also provide the Hessian-vector product ``H A`` (``ctx.hvp``).
        layers: the method's own default target layers (``model -> names``), used when the user
            passes ``target_layer=None`` (FullGrad: every layer with a bias).
        class_name: the name of its classes in :mod:`camkit.methods` and :mod:`camkit.compat.gradcam`.
        peer_names: further class names in :mod:`camkit.compat.gradcam` (pytorch-grad-cam's own,
            e.g. ``GradCAMPlusPlus``).
        options: the method's declared options (name → :class:`Option`), in signature order.
        positional: options the TorchCAM-style constructor also takes by position, after
            ``target_layer`` and before ``input_shape`` (TorchCAM's signatures), e.g. ``batch_size``.
        input_gradient: the engine also differentiates the score with respect to the model input.
        reduce: the maps of every target layer → the method's single map (FullGrad's sum with the
            input term); ``None``: one map per layer.
        fuse_scale: applied to each layer's map before :meth:`~camkit.CAMExtractor.fuse_cams`
            takes their maximum (LayerCAM's :math:`\tanh(2L)`).
        extractor: a hand-written TorchCAM-style class (only where the constructor takes extra
            positional arguments, e.g. CAM's ``fc_layer``); ``None``: the class is generated.
        notes: extra paragraphs for the generated docstrings (how camkit differs from the peers).
        cost: the model forwards per image and explained class beyond the shared one, as an
            expression in ``C`` (the target layer's channels), ``P`` (its positions) and the
            options (``"min(C, max_channels or C) * num_samples"``); ``"0"`` for methods that
            need only the shared forward (and backward). See :meth:`forwards`.
        black_box: the method reads no layer, only the model's input and output (RISE, occlusion):
            it takes no target layer, its weight function gets the model input as ``A`` and returns
            the map ``(N, *S_in)`` at the input's size (``output="map"``, implies ``needs_input``).
    """

    name: str
    weights: WeightFn
    needs_gradients: bool
    needs_scores: bool
    needs_input: bool
    relu: bool
    summary: str
    paper: str
    family: str
    output: str = "weights"
    stochastic: bool = False
    needs_hvp: bool = False
    layers: Callable[[Any], list[str]] | None = None
    class_name: str = ""
    peer_names: tuple[str, ...] = ()
    options: Mapping[str, Option] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    input_gradient: bool = False
    reduce: Reduce | None = None
    fuse_scale: Callable[[Tensor], Tensor] | None = None
    extractor: type | None = None
    notes: str = ""
    cost: str = "0"
    needs_target: bool = True
    black_box: bool = False

    @property
    def differentiable(self) -> bool:
        """Whether the map is a differentiable function of the captured activations and gradients.

        Methods that re-run the model, use second derivatives or reduce layers with the input
        gradient (FullGrad) are not: ``create_graph=True`` is refused for them.
        """
        return not (self.needs_input or self.needs_hvp or self.reduce is not None)

    @property
    def formula(self) -> str:
        """The weight function's docstring: the formula and its reference."""
        doc = getattr(self.weights, "__doc__", None) or ""
        return _dedent(doc)

    def forwards(self, channels: int, positions: int, options: Mapping[str, Any] | None = None) -> int:
        """Model forwards per image and explained class, the shared one included (``1 + cost``).

        Args:
            channels: the target layer's channels ``C``.
            positions: its spatial positions ``P`` (``H * W``).
            options: the options given (defaults fill the rest).

        Returns:
            The count at these settings (perturbation forwards are batched, ``batch_size`` at a time).

        Example:
            >>> get_method("gradcam").forwards(1280, 49), get_method("scorecam").forwards(1280, 49)
            (1, 1281)
        """
        return 1 + _cost(self.cost, channels, positions, {**self.defaults(), **(options or {})})

    def defaults(self) -> dict[str, Any]:
        """Every declared option with its default value."""
        return {name: option.default for name, option in self.options.items()}

    def resolve_options(self, given: Mapping[str, Any], where: str = "", extra: Iterable[str] = ()) -> dict[str, Any]:
        """The declared options with ``given`` values over the defaults, checked.

        Args:
            given: the options a user passed.
            where: the class or function that received them (for the message).
            extra: further names ``where`` accepts (its engine switches), for the message.

        Returns:
            Every declared option, given or default.

        Raises:
            TypeError: for an unknown option (naming the closest accepted one) or a wrong type.
        """
        check_options([self], given, where or self.class_name, extra)
        for key, value in given.items():
            self.options[key].check(where or self.class_name, key, value)
        return {**self.defaults(), **given}


def _cost(expression: str, channels: int, positions: int, options: Mapping[str, Any]) -> int:
    """Evaluate a spec's ``cost`` expression (names: ``C``, ``P``, the options; functions: min, max)."""
    names = {
        **{k: v for k, v in options.items() if isinstance(v, int | float) or v is None},
        "C": channels,
        "P": positions,
    }
    value = eval(expression, {"__builtins__": {"min": min, "max": max}}, names)
    return max(0, round(float(value)))


def _dedent(text: str) -> str:
    lines = text.strip("\n").splitlines()
    if not lines:
        return ""
    rest = [line for line in lines[1:] if line.strip()]
    indent = min((len(line) - len(line.lstrip()) for line in rest), default=0)
    return "\n".join([lines[0].strip(), *(line[indent:] for line in lines[1:])]).strip()


def class_name_of(name: str) -> str:
    """The default class name of a registry name: ``"abs_gradcam"`` → ``"AbsGradCAM"``.

    Example:
        >>> class_name_of("abs_gradcam"), class_name_of("myfancycam")
        ('AbsGradCAM', 'MyfancyCAM')
    """
    camel = "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    return re.sub("cam", "CAM", camel, flags=re.IGNORECASE)


_REGISTRY: dict[str, MethodSpec] = {}
_BUILTINS = {"loaded": False}


def _table() -> dict[str, MethodSpec]:
    """The method table, with camkit's built-in methods registered on first use.

    ``import camkit`` loads nothing heavy; the built-in methods (:mod:`camkit.methods`, which
    imports torch) register themselves the first time any caller reads or extends the table.
    """
    if not _BUILTINS["loaded"]:
        _BUILTINS["loaded"] = True  # first: the built-ins' own register() calls land here again
        import_module("camkit.methods")
    return _REGISTRY


@overload
def register(
    name: str,
    *,
    needs_gradients: Literal[True],
    family: str,
    summary: str,
    paper: str,
    needs_scores: bool | None = ...,
    needs_input: bool = ...,
    relu: bool = ...,
    output: str = ...,
    stochastic: bool = ...,
    needs_hvp: bool = ...,
    layers: Callable[[Any], list[str]] | None = ...,
    class_name: str | None = ...,
    peer_names: Sequence[str] = ...,
    options: Mapping[str, Option | Any] | None = ...,
    positional: Sequence[str] = ...,
    input_gradient: bool = ...,
    reduce: Reduce | None = ...,
    fuse_scale: Callable[[Tensor], Tensor] | None = ...,
    extractor: type | None = ...,
    notes: str = ...,
    cost: str = ...,
    needs_target: bool = ...,
    black_box: bool = ...,
) -> Callable[[GradientWeights], GradientWeights]: ...


@overload
def register(
    name: str,
    *,
    needs_gradients: Literal[False],
    family: str,
    summary: str,
    paper: str,
    needs_scores: bool | None = ...,
    needs_input: bool = ...,
    relu: bool = ...,
    output: str = ...,
    stochastic: bool = ...,
    needs_hvp: bool = ...,
    layers: Callable[[Any], list[str]] | None = ...,
    class_name: str | None = ...,
    peer_names: Sequence[str] = ...,
    options: Mapping[str, Option | Any] | None = ...,
    positional: Sequence[str] = ...,
    input_gradient: bool = ...,
    reduce: Reduce | None = ...,
    fuse_scale: Callable[[Tensor], Tensor] | None = ...,
    extractor: type | None = ...,
    notes: str = ...,
    cost: str = ...,
    needs_target: bool = ...,
    black_box: bool = ...,
) -> Callable[[ActivationWeights], ActivationWeights]: ...


def register(
    name: str,
    *,
    needs_gradients: bool,
    family: str,
    summary: str,
    paper: str,
    needs_scores: bool | None = None,
    needs_input: bool = False,
    relu: bool = True,
    output: str = "weights",
    stochastic: bool = False,
    needs_hvp: bool = False,
    layers: Callable[[Any], list[str]] | None = None,
    class_name: str | None = None,
    peer_names: Sequence[str] = (),
    options: Mapping[str, Option | Any] | None = None,
    positional: Sequence[str] = (),
    input_gradient: bool = False,
    reduce: Reduce | None = None,
    fuse_scale: Callable[[Tensor], Tensor] | None = None,
    extractor: type | None = None,
    notes: str = "",
    cost: str = "0",
    needs_target: bool = True,
    black_box: bool = False,
) -> Callable[[Any], Any]:
    r"""Register a method: its weight function and everything else camkit derives from it.

    The decorated function is returned unchanged. Its docstring (the formula, the paper) becomes
    part of the generated classes' docstrings.

    Args:
        name: registry key, a lower-case identifier.
        needs_gradients: whether ``G`` must be computed (then the function gets a tensor ``G``).
        family: one of :data:`FAMILIES`.
        summary: one-line description (``camkit methods``, the docs table).
        paper: citation.
        needs_scores: whether the TorchCAM-style call requires ``scores`` (default: ``needs_gradients
            and not needs_input``).
        needs_input: whether the method re-runs the model (perturbation or noise).
        relu: whether ReLU is applied to the combined map.
        output: ``"weights"`` or ``"map"`` (see :class:`MethodSpec`).
        stochastic: whether the result depends on random draws.
        needs_hvp: whether the Hessian-vector product ``H A`` must be computed (implies gradients).
        layers: the method's own default target layers, see :class:`MethodSpec`.
        class_name: its class name (default: derived from ``name``, ``"abs_gradcam"`` → ``"AbsGradCAM"``).
        peer_names: further pytorch-grad-cam-style class names (``("GradCAMPlusPlus",)``).
        options: option name → :class:`Option`, or → a plain default value (any type accepted).
        positional: options the TorchCAM-style constructor takes by position (see :class:`MethodSpec`).
        input_gradient: whether the score is also differentiated with respect to the model input.
        reduce: how the maps of several layers become one (see :class:`MethodSpec`).
        fuse_scale: per-map transform before fusing layers (see :class:`MethodSpec`).
        extractor: a hand-written TorchCAM-style class, see :class:`MethodSpec`.
        notes: extra docstring paragraphs.
        cost: forwards per image beyond the shared one, an expression in ``C``, ``P`` and the
            options (see :class:`MethodSpec`).
        needs_target: ``False`` when the map never reads the target (class-agnostic methods), see
            :class:`MethodSpec`.
        black_box: the method needs no target layer (see :class:`MethodSpec`); it is given the
            model input as ``A`` and must return the map (``output="map"``).

    Returns:
        A decorator that stores the spec and returns the function unchanged.

    Raises:
        ValueError: if the name or a class name is taken or malformed, or a field is invalid.

    Example:
        >>> import camkit
        >>> @camkit.register("maxgradcam", family="gradient", needs_gradients=True,
        ...                  summary="Channel weights = the spatial maximum of the gradient.", paper="(example)",
        ...                  options={"scale": camkit.Option(1.0, (float, int), "multiplies the weights")})
        ... def maxgradcam(a, g, ctx):
        ...     return ctx.options["scale"] * g.flatten(2).amax(-1)
        >>> camkit.get_method("MaxGradCAM").options["scale"].default
        1.0
        >>> camkit.unregister("maxgradcam")
    """
    if not isinstance(name, str) or name != name.lower() or not name.isidentifier():
        raise ValueError(f"method name {name!r} must be a lower-case identifier")
    if name in _table():
        raise ValueError(f"method {name!r} is already registered")
    if output not in ("weights", "map"):
        raise ValueError(f"output must be 'weights' or 'map', got {output!r}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    cls_name = class_name or class_name_of(name)
    names = (cls_name, *peer_names)
    for candidate in names:
        if not candidate.isidentifier():
            raise ValueError(f"class name {candidate!r} of method {name!r} is not an identifier")
        for other in _table().values():
            if candidate in (other.class_name, *other.peer_names):
                raise ValueError(f"class name {candidate!r} of method {name!r} is taken by method {other.name!r}")
    declared = {key: value if isinstance(value, Option) else Option(value) for key, value in (options or {}).items()}
    for key in declared:
        if key in ENGINE_SWITCHES or not key.isidentifier():
            raise ValueError(f"option {key!r} of method {name!r} is an engine switch or not an identifier")
    for key in positional:
        if key not in declared and key != "batch_size":
            raise ValueError(f"positional option {key!r} of method {name!r} is not declared in options")
    spec_options: Mapping[str, Option] = MappingProxyType(declared)
    try:
        _cost(cost, 64, 49, {key: option.default for key, option in declared.items()})
    except Exception as error:
        raise ValueError(
            f"cost {cost!r} of method {name!r} is not an expression in C, P and its options: {error}"
        ) from None
    if black_box and (output != "map" or needs_gradients or layers is not None):
        raise ValueError(f"black-box method {name!r} must return the map (output='map'), without gradients or layers")
    scores = (needs_gradients and not needs_input) if needs_scores is None else needs_scores

    def decorator(fn: Any) -> Any:
        _table()[name] = MethodSpec(
            name=name,
            weights=fn,
            needs_gradients=needs_gradients or needs_hvp,
            needs_scores=scores,
            needs_input=needs_input or black_box,
            relu=relu,
            summary=summary,
            paper=paper,
            family=family,
            output=output,
            stochastic=stochastic,
            needs_hvp=needs_hvp,
            layers=_no_layers if black_box else layers,
            class_name=cls_name,
            peer_names=tuple(peer_names),
            options=spec_options,
            positional=tuple(positional),
            input_gradient=input_gradient,
            reduce=reduce,
            fuse_scale=fuse_scale,
            extractor=extractor,
            notes=notes,
            cost=cost,
            needs_target=needs_target,
            black_box=black_box,
        )
        return fn

    return decorator


def _no_layers(model: Any) -> list[str]:
    """The target layers of a black-box method: none (it reads the model's input and output only)."""
    return []


def unregister(name: str) -> None:
    """Remove a method registered at run time (for tests and notebooks that register their own).

    Args:
        name: its registry name.

    Raises:
        ValueError: for an unknown name.
    """
    del _table()[get_method(name).name]


def list_methods() -> list[str]:
    """Names of all registered methods, sorted.

    Returns:
        The registry keys.

    Example:
        >>> import camkit
        >>> "gradcam" in camkit.list_methods()
        True
    """
    return sorted(_table())


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def get_method(name: str) -> MethodSpec:
    """Look up a method by registry name or class name, case-insensitively (``"Grad-CAM"``, ``"GradCAMpp"``).

    Args:
        name: a name from :func:`list_methods`, or a class name of either front door.

    Returns:
        The entry.

    Raises:
        TypeError: when ``name`` is not a string.
        ValueError: for an unknown name, listing the known ones.

    Example:
        >>> get_method("GradCAMPlusPlus").name, get_method("layer-cam").name
        ('gradcampp', 'layercam')
    """
    if not isinstance(name, str):
        raise TypeError(f"a method is named by a string, got {type(name).__name__}")
    if name in _table():
        return _table()[name]
    key = _key(name)
    for spec in _table().values():
        if key in (_key(spec.name), *(_key(n) for n in (spec.class_name, *spec.peer_names))):
            return spec
    close = difflib.get_close_matches(name.lower(), list(_table()), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown method {name!r}; {hint}choose one of: {', '.join(list_methods())}")


def check_options(specs: Iterable[MethodSpec], given: Iterable[str], where: str, extra: Iterable[str] = ()) -> None:
    """Raise ``TypeError`` for an option that none of ``specs`` declares (nor ``extra`` names).

    The message names the closest accepted option (``did you mean 'eigen_smooth'?``), else the
    methods that do declare it, and lists what is accepted.

    Args:
        specs: the methods the options go to.
        given: the option names passed.
        where: the class or function that received them.
        extra: further accepted names (the receiver's own keyword arguments).

    Raises:
        TypeError: for the first unknown option.

    Example:
        >>> try:
        ...     check_options([get_method("sscam")], ["nmu_samples"], "SSCAM")
        ... except TypeError as error:
        ...     print(str(error).split("?")[0])
        SSCAM got an unexpected argument 'nmu_samples': did you mean 'num_samples'
    """
    specs = list(specs)
    accepted = sorted({key for spec in specs for key in spec.options} | set(extra))
    everywhere = sorted({key for spec in _table().values() for key in spec.options} - set(accepted))
    for key in given:
        if key in accepted:
            continue
        here = _closest(key, accepted)
        elsewhere = _closest(key, everywhere)
        if key in everywhere:
            owners = [spec.name for spec in _table().values() if key in spec.options]
            hint = f"it is an option of {', '.join(owners)}, not of the method(s) given."
        elif elsewhere is not None and (here is None or elsewhere[0] > here[0]):
            owners = [spec.name for spec in _table().values() if elsewhere[1] in spec.options]
            hint = f"did you mean {elsewhere[1]!r}? It is an option of {', '.join(owners)}, not of the method(s) given."
        elif here is not None:
            hint = f"did you mean {here[1]!r}?"
        else:
            hint = "no method has it."
        listed = ", ".join(accepted) if accepted else "none"
        raise TypeError(f"{where} got an unexpected argument {key!r}: {hint} Accepted: {listed}")


def _closest(key: str, names: Iterable[str]) -> tuple[float, str] | None:
    """The most similar name and its similarity (at least 0.6), or ``None``."""
    scored = [(difflib.SequenceMatcher(None, key, name).ratio(), name) for name in names]
    best = max(scored, default=None)
    return best if best is not None and best[0] >= 0.6 else None
