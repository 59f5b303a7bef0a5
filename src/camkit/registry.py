"""The method registry: every CAM method is one weight function plus one :func:`register` line.

Everything that lists methods (the extractor classes, the CLI, the docs table, the generated
tests) reads this table, so a new method is one function and one decorator.

A weight function has the signature ``fn(A, G, ctx) -> w`` where ``A`` is the captured
activation ``(N, C, *S)``, ``G`` its gradient (or ``None`` for gradient-free methods) and ``ctx`` a
:class:`MethodContext`. It returns channel weights ``(N, C)`` or spatial weights ``(N, C, *S)``;
the engine then combines ``sum_k w_k A_k`` in one broadcast step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor

__all__ = [
    "MethodContext",
    "MethodSpec",
    "Probe",
    "get_method",
    "list_methods",
    "register",
]


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
        layer_name: its dotted name in the model.
        target: the target object (what scalar is explained), see :mod:`camkit.targets`.
        options: method options (``num_samples``, ``std``, ``fc_weight``, ``generator``, ...).
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


WeightFn = Callable[[Tensor, "Tensor | None", MethodContext], Tensor]


@dataclass(frozen=True)
class MethodSpec:
    """A registry entry.

    Attributes:
        name: registry key (lower case, e.g. ``"gradcam"``).
        weights: the weight function.
        needs_gradients: the engine must provide ``G = dY/dA``.
        needs_scores: in the TorchCAM-style call, ``scores`` (the model output) is required.
        needs_input: the method re-runs the model on modified inputs (gets ``ctx.input``/``ctx.probe``).
        relu: apply ReLU to the combined map.
        summary: one line for ``camkit methods`` and the docs table.
        paper: reference of the method.
        family: ``"activation"``, ``"gradient"`` or ``"perturbation"``.
        output: ``"weights"`` (the function returns ``w`` for the combine step) or ``"map"`` (it
            returns the map ``(N, *S)`` itself, e.g. a projection on a principal component).
        stochastic: the result depends on random draws (tests compare such methods by shape only).
        needs_hvp: the engine must also provide the Hessian-vector product ``H A`` (``ctx.hvp``).
        layers: the method's own default target layers (``model -> names``), used when the user
            passes ``target_layer=None`` (FullGrad: every layer with a bias).
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


_REGISTRY: dict[str, MethodSpec] = {}


def register(
    name: str,
    *,
    needs_gradients: bool,
    needs_scores: bool | None = None,
    needs_input: bool = False,
    relu: bool = True,
    summary: str,
    paper: str,
    family: str,
    output: str = "weights",
    stochastic: bool = False,
    needs_hvp: bool = False,
    layers: Callable[[Any], list[str]] | None = None,
) -> Callable[[WeightFn], WeightFn]:
    """Register a weight function under ``name``.

    Args:
        name: registry key, lower case.
        needs_gradients: whether ``G`` must be computed.
        needs_scores: whether the TorchCAM-style call requires ``scores`` (default: ``needs_gradients
            and not needs_input``).
        needs_input: whether the method re-runs the model (perturbation or noise).
        relu: whether ReLU is applied to the combined map.
        summary: one-line description.
        paper: citation.
        family: ``"activation"``, ``"gradient"`` or ``"perturbation"``.
        output: ``"weights"`` or ``"map"`` (see :class:`MethodSpec`).
        stochastic: whether the result depends on random draws.
        needs_hvp: whether the Hessian-vector product ``H A`` must be computed (implies gradients).
        layers: the method's own default target layers, see :class:`MethodSpec`.

    Returns:
        A decorator that stores the function and returns it unchanged.

    Raises:
        ValueError: if the name is taken or malformed.
    """
    if name != name.lower() or not name.isidentifier():
        raise ValueError(f"method name {name!r} must be a lower-case identifier")
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered")
    if output not in ("weights", "map"):
        raise ValueError(f"output must be 'weights' or 'map', got {output!r}")
    scores = (needs_gradients and not needs_input) if needs_scores is None else needs_scores

    def decorator(fn: WeightFn) -> WeightFn:
        _REGISTRY[name] = MethodSpec(
            name,
            fn,
            needs_gradients,
            scores,
            needs_input,
            relu,
            summary,
            paper,
            family,
            output,
            stochastic,
            needs_hvp,
            layers,
        )
        return fn

    return decorator


def list_methods() -> list[str]:
    """Names of all registered methods, sorted.

    Returns:
        The registry keys.

    Example:
        >>> import camkit
        >>> "gradcam" in camkit.list_methods()
        True
    """
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    """Look up a registry entry by name (case-insensitive).

    Args:
        name: a name from :func:`list_methods`.

    Returns:
        The entry.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    key = name.lower().replace("-", "").replace("_", "")
    for spec_name, spec in _REGISTRY.items():
        if spec_name.replace("_", "") == key:
            return spec
    raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(list_methods())}")
