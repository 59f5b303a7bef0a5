"""The capture: hooks on the target layers that keep their outputs, and their gradients.

* The forward hook hands the rest of the network a *copy* of the layer output, so an in-place op
  after the layer (``ReLU(inplace=True)``) cannot change what was captured or its gradient.
* Gradients come from :func:`torch.autograd.grad` — never ``Tensor.backward`` — so no parameter's
  ``.grad`` is touched and the backward stops at the target layers.
* Hooks record only when the engine's gate allows it (see :func:`camkit.engine.paused`).
* The lean path (:meth:`Capture.lean`): forwards run under ``torch.no_grad()`` until the first
  target layer, whose hook turns gradients on and hands the rest of the network a fresh leaf. No
  graph is recorded for the layers before it, which a CAM never differentiates; the gradients
  with respect to the target layers are those of the full path (tested for every method).
* A layer whose output is a structure of tensors (a dict such as the FPN's ``OrderedDict``, a
  tuple, a list, nested) is captured whole: each floating tensor in it is a source, and the
  structure (a :class:`StructuredOutput`, of the output's own kind) reaches the user's
  ``reshape_transform`` as it came, for the activations and for the gradients (pytorch-grad-cam
  hands it the raw output the same way).
* Attention probabilities ``(N, heads, T, T)`` of transformer blocks are read without changing the
  model's code: timm's ``Attention`` runs its unfused path (``fused_attn = False``; the softmax
  output passes its ``attn_drop`` dropout, which is hooked), Hugging Face attention runs in eager
  mode (``config._attn_implementation = "eager"``; the module returns the probabilities), and
  :class:`torch.nn.MultiheadAttention`'s are recomputed from its inputs and weights. With
  gradients on, that module's output becomes ``out.detach() + (r - r.detach())`` for the
  recomputed ``r``: the same values, with gradients through the recomputed probabilities. Every
  flag is restored when the hooks are removed.
"""

from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from camkit.engine._gate import GATE, autocast_state
from camkit.engine._gradients import GradientsMixin
from camkit.engine._inputs import ImageArg, ModelInput
from camkit.reshape import attention_kind, multihead_self_attention

__all__ = ["Capture", "Recorded", "StructuredOutput", "structure_leaves", "structured"]


def structure_leaves(value: Any) -> list[Tensor]:
    """The tensors of a layer output, depth first (dict values in order, tuple and list items).

    Example:
        >>> [t.shape for t in structure_leaves({"a": torch.zeros(1), "b": (torch.zeros(2), 3)})]
        [torch.Size([1]), torch.Size([2])]
    """
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in structure_leaves(item)]
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in structure_leaves(item)]
    return []


def _rebuild(value: Any, leaves: Iterator[Tensor]) -> Any:
    """``value`` with its tensors replaced, in :func:`structure_leaves` order, by ``leaves``."""
    if isinstance(value, Tensor):
        return next(leaves)
    if isinstance(value, Mapping):
        items = [(key, _rebuild(item, leaves)) for key, item in value.items()]
        if not isinstance(value, MutableMapping):
            return dict(items)
        out = copy.copy(value)  # the same kind (OrderedDict, a model's output class), new values
        for key, item in items:
            out[key] = item
        return out
    if isinstance(value, tuple):
        items_t = [_rebuild(item, leaves) for item in value]
        return type(value)(*items_t) if hasattr(value, "_fields") else type(value)(items_t)
    if isinstance(value, list):
        return type(value)(_rebuild(item, leaves) for item in value)
    return value


class StructuredOutput:
    """A captured layer output that is a structure of tensors (mixed into its dict, tuple or list kind).

    It is what the user's ``reshape_transform`` receives (``x["pool"]``, ``x[0]``, ``x.items()``
    work as on the layer's own output), and it answers the few tensor questions the engine asks
    of a capture before the transform runs (:attr:`shape` of the first tensor, :meth:`detach`,
    :meth:`sum`, ...). Without a ``reshape_transform`` it cannot be read as a feature map:
    :attr:`ndim` then raises a ``ValueError`` that says so.
    """

    layer_name: str = "?"

    def leaves(self) -> list[Tensor]:
        """Its tensors, depth first."""
        return structure_leaves(self._plain())

    def _plain(self) -> Any:
        raise NotImplementedError

    def replaced(self, leaves: Sequence[Tensor]) -> StructuredOutput:
        """The same structure holding ``leaves`` instead of its tensors."""
        return structured(_rebuild(self._plain(), iter(leaves)), self.layer_name)

    def detach(self) -> StructuredOutput:
        """The structure of detached tensors."""
        return self.replaced([leaf.detach() for leaf in self.leaves()])

    def clone(self) -> StructuredOutput:
        """The structure of copies."""
        return self.replaced([leaf.clone() for leaf in self.leaves()])

    @property
    def shape(self) -> torch.Size:
        """The first tensor's shape (its first entry is the batch)."""
        return self.leaves()[0].shape

    @property
    def dtype(self) -> torch.dtype:
        """The first floating tensor's dtype."""
        return next((t.dtype for t in self.leaves() if t.is_floating_point()), self.leaves()[0].dtype)

    @property
    def device(self) -> torch.device:
        """The first tensor's device."""
        return self.leaves()[0].device

    @property
    def requires_grad(self) -> bool:
        """Whether a floating tensor of it is in the autograd graph."""
        return any(t.requires_grad for t in self.leaves())

    @property
    def ndim(self) -> int:
        """Not a feature map: raises a ``ValueError`` naming the fix."""
        kind = type(self).__mro__[2].__name__  # the output's own kind: OrderedDict, tuple, ...
        raise ValueError(
            f"target layer {self.layer_name!r} returns a {kind}, not a tensor; choose a submodule that outputs "
            f"the feature map tensor, or pass reshape_transform=f where f(output) turns the {kind} of "
            f"{len(self.leaves())} tensors into (N, C, H, W) (e.g. camkit.compat.gradcam.utils.reshape_transforms."
            "fasterrcnn_reshape_transform for a torchvision FPN backbone)"
        )

    def sum(self) -> Tensor:
        """The sum of all its floating values (a finiteness check)."""
        floats = [t.detach().float().sum().cpu() for t in self.leaves() if t.is_floating_point()]
        return torch.stack(floats).sum() if floats else torch.zeros(())

    def flatten(self, start_dim: int = 0) -> Tensor:
        """Its floating tensors flattened from ``start_dim`` and concatenated (per sample for ``1``)."""
        floats = [t.detach().float().flatten(start_dim).cpu() for t in self.leaves() if t.is_floating_point()]
        return torch.cat(floats, dim=start_dim if start_dim == 0 else -1)


class _StructuredDict(StructuredOutput, dict):  # type: ignore[type-arg]
    def _plain(self) -> Any:
        return dict(self.items())


class _StructuredOrderedDict(StructuredOutput, OrderedDict):  # type: ignore[type-arg]
    def _plain(self) -> Any:
        return OrderedDict(self.items())


class _StructuredTuple(StructuredOutput, tuple):  # type: ignore[type-arg]
    def _plain(self) -> Any:
        return tuple(self)


class _StructuredList(StructuredOutput, list):  # type: ignore[type-arg]
    def _plain(self) -> Any:
        return list(self)


def structured(value: Any, layer_name: str = "?") -> StructuredOutput:
    """A layer output (dict, ``OrderedDict``, tuple or list of tensors) as a :class:`StructuredOutput`.

    Example:
        >>> out = structured(OrderedDict(a=torch.zeros(2, 3, 4, 4)), "backbone")
        >>> isinstance(out, OrderedDict), out.shape[0], list(out.detach())
        (True, 2, ['a'])
    """
    wrapped: StructuredOutput
    if isinstance(value, OrderedDict):
        wrapped = _StructuredOrderedDict(value.items())
    elif isinstance(value, Mapping):
        wrapped = _StructuredDict(value.items())
    elif isinstance(value, tuple):
        wrapped = _StructuredTuple(value)
    elif isinstance(value, list):
        wrapped = _StructuredList(value)
    else:
        raise TypeError(f"not a structure of tensors: {type(value).__name__}")
    wrapped.layer_name = layer_name
    return wrapped


@dataclass
class Recorded:
    """What the last recorded forward left in a :class:`Capture`: all of it, in one place.

    :meth:`Capture.reset` replaces it with an empty one and :meth:`Capture.recording` swaps it for
    the length of a block, so no field can be forgotten by either.
    """

    #: each target layer's output (a copy; a :class:`StructuredOutput` for a dict/tuple/list output), or
    #: ``None`` before a forward reached it
    sources: list[Tensor | StructuredOutput | None]
    #: why a layer's output could not be captured (a tuple output, ...), per layer
    errors: list[str | None]
    #: attention probabilities per attention module, and why they are missing
    attention: list[Tensor | None]
    attention_errors: list[str | None]
    #: calls of each target layer in the last recorded forward (the last call is the captured one)
    calls: list[int]
    #: calls so far in a replacing forward
    seen: list[int]
    #: the model's image input of the last forward (``capture_input``)
    input: Tensor | None = None
    #: the last forward's call (every argument), with :attr:`input` as its image
    call: ModelInput | None = None
    input_error: str | None = None
    #: ``(device type, dtype)`` of the autocast the last forward ran under, if any
    autocast: tuple[str, torch.dtype] | None = None
    #: ``d score / d input`` (``input_grad`` captures), set by :meth:`Capture.gradients`
    input_grad: Tensor | None = None
    #: ``d score / d A`` per target layer of the last :meth:`Capture.gradients` call (detached)
    gradients: list[Any] | None = None
    #: spatial size of the model input of the last forward (``x.shape[2:]``)
    input_size: tuple[int, ...] | None = None

    @classmethod
    def empty(cls, layers: int, attention: int) -> Recorded:
        """Nothing recorded yet, for ``layers`` target layers and ``attention`` attention modules."""
        return cls([None] * layers, [None] * layers, [None] * attention, [None] * attention, [0] * layers, [0] * layers)


def _state_field(name: str, doc: str) -> Any:
    """A read-write attribute of :class:`Capture` kept in its :class:`Recorded` state."""

    def get(self: Capture) -> Any:
        return getattr(self.state, name)

    def put(self: Capture, value: Any) -> None:
        setattr(self.state, name, value)

    return property(get, put, doc=doc)


class Capture(GradientsMixin):
    """Hooks on the target layers that keep their outputs (and optionally the model input).

    Args:
        model: the model.
        layer_names: dotted names from :func:`resolve_layers`.
        capture_input: also keep a copy of the model's image input (:attr:`input`) and the whole
            call (:attr:`call`: every argument, for re-running the model).
        input_grad: when the forward runs with gradients, hand the model a leaf copy of its image
            input that requires grad, so :meth:`gradients` also yields ``d score / d x`` (in
            :attr:`input_grad`); implies ``capture_input``.
        attention: dotted names of attention modules whose probabilities to keep (:meth:`attention`).
        image_arg: which argument of the model's call is the image (a position or a keyword); default:
            see :class:`camkit.engine.ModelInput`.
        check: ``check(capture, idx)`` is called each time target layer ``idx``'s output has been recorded
            (from the layer's forward hook); it may raise to refuse the forward there, naming the fix
            (LeGrad's checks).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> with Capture(net, ["0"]) as cap:
        ...     score = net(torch.rand(1, 3, 8, 8))[:, 0].sum()
        ...     grads = cap.gradients(score)
        >>> grads[0].shape
        torch.Size([1, 4, 6, 6])
    """

    def __init__(
        self,
        model: nn.Module,
        layer_names: Sequence[str],
        capture_input: bool = False,
        input_grad: bool = False,
        attention: Sequence[str] = (),
        image_arg: ImageArg = None,
        check: Callable[[Capture, int], None] | None = None,
    ) -> None:
        self.model = model
        self.check = check
        self.image_arg = image_arg
        self.layer_names = list(layer_names)
        self.attention_names = list(attention)
        self.capture_input = capture_input or input_grad
        self.input_grad_wanted = input_grad
        self.enabled = True
        self._handles: list[RemovableHandle] = []
        self._flags: list[tuple[object, str, Any]] = []
        self._replacement: tuple[int, Tensor] | None = None
        self._lean = False
        self.reset()

    # lifecycle -----------------------------------------------------------------------------
    def attach(self) -> None:
        """Register the hooks and set the attention flags (idempotent).

        Raises:
            ValueError: for an attention module camkit cannot read (see :func:`camkit.reshape.attention_kind`).
        """
        if self._handles:
            return
        module = self.model.get_submodule
        try:
            for idx, name in enumerate(self.layer_names):
                self._handles.append(module(name).register_forward_hook(self._layer_hook(idx)))
            for idx, name in enumerate(self.attention_names):
                self._attach_attention(idx, name, module(name))
            self._handles.append(self.model.register_forward_pre_hook(self._input_hook, with_kwargs=True))
        except BaseException:
            self.remove()
            raise

    def _attach_attention(self, idx: int, name: str, module: nn.Module) -> None:
        kind = attention_kind(module)
        hook = self._attention_hook(idx, kind or "")
        if kind == "timm":
            self._set_flag(module, "fused_attn", False)
            self._handles.append(module.get_submodule("attn_drop").register_forward_hook(hook))
        elif kind == "huggingface":
            self._set_flag(module.config, "_attn_implementation", "eager")
            self._handles.append(module.register_forward_hook(hook))
        elif kind == "torch":
            self._handles.append(module.register_forward_hook(hook, with_kwargs=True))
        else:
            raise ValueError(
                f"{name!r} ({type(module).__name__}) is not an attention module camkit can read: expected timm's "
                "Attention, torch.nn.MultiheadAttention or a Hugging Face attention module (transformers >= 5)"
            )

    def _set_flag(self, owner: object, attribute: str, value: Any) -> None:
        if not any(o is owner and a == attribute for o, a, _ in self._flags):
            self._flags.append((owner, attribute, getattr(owner, attribute)))
        setattr(owner, attribute, value)

    def remove(self) -> None:
        """Remove every hook this capture registered and restore the attention flags."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for owner, attribute, value in reversed(self._flags):
            setattr(owner, attribute, value)
        self._flags.clear()

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def reset(self) -> None:
        """Forget captured tensors (the hooks stay)."""
        self.state = Recorded.empty(len(self.layer_names), len(self.attention_names))

    input = _state_field("input", "The model's image input of the last forward (``capture_input``).")
    call = _state_field("call", "The last forward's call (every argument), with :attr:`input` as its image.")
    input_error = _state_field("input_error", "Why the last forward's input could not be captured.")
    autocast = _state_field("autocast", "``(device type, dtype)`` of the autocast the last forward ran under.")
    input_grad = _state_field("input_grad", "``d score / d input`` of the last :meth:`gradients` call.")
    last_gradients = _state_field(
        "gradients", "``d score / d A`` per target layer of the last :meth:`gradients` call (detached), or ``None``."
    )
    input_size = _state_field("input_size", "Spatial size of the model input of the last forward.")

    def __enter__(self) -> Capture:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @contextlib.contextmanager
    def recording(self) -> Iterator[Capture]:
        """Capture into fresh storage for the block, then give back the previous tensors."""
        saved = self.state
        self.reset()
        token = GATE.set(self)
        try:
            yield self
        finally:
            GATE.reset(token)
            self.state = saved

    @contextlib.contextmanager
    def lean(self) -> Iterator[None]:
        """Run the block's forwards without an autograd graph before the target layers.

        The block runs under ``torch.no_grad()``; the first target layer a forward reaches turns
        gradients on, so only the layers after it are recorded. On exit the grad mode is what it
        was before the block (exceptions included). When the input gradient is wanted (FullGrad)
        the whole network must be recorded, so the block then runs in plain grad mode.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            >>> with Capture(net, ["1"]) as cap, cap.lean():
            ...     out = net(torch.rand(1, 3, 8, 8))
            >>> out.requires_grad, net[0].weight.requires_grad, torch.is_grad_enabled()
            (True, True, True)
        """
        if self.input_grad_wanted:
            with torch.enable_grad():
                yield
            return
        self._lean = True
        try:
            with torch.no_grad():
                yield
        finally:
            self._lean = False

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Only this capture records the block's forwards; other extractors open on the model ignore them.

        camkit's own forwards (:func:`camkit.explain`, :func:`camkit.compare`, the pytorch-grad-cam
        style front door) run in it, so they never overwrite what a user's extractor captured.
        """
        token = GATE.set(self)
        try:
            yield
        finally:
            GATE.reset(token)

    @contextlib.contextmanager
    def replacing(self, layer: int, output: Tensor) -> Iterator[None]:
        """For the block, layer ``layer`` outputs ``output`` instead of what it computes.

        The batch of ``output`` may differ from the input batch: the rest of the network then runs
        on ``output``'s batch (used to re-run only what follows the layer). Nothing is captured and
        every other camkit hook is paused. For a layer called several times in one forward, only
        the call that was captured (the last) is replaced.
        """
        token = GATE.set(self)
        self.state.seen = [0] * len(self.layer_names)
        self._replacement = (layer, output)
        try:
            yield
        finally:
            self._replacement = None
            GATE.reset(token)

    # hooks ---------------------------------------------------------------------------------
    def _recording(self) -> bool:
        gate = GATE.get()
        return self.enabled and (gate is None or gate is self)

    def _layer_hook(self, idx: int) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            if not self._recording():
                return None
            if self._replacement is not None:
                layer, replacement = self._replacement
                self.state.seen[idx] += 1
                captured = self.state.calls[idx] in (0, self.state.seen[idx])  # 0: the count is unknown
                return replacement if layer == idx and captured else None
            result = self._record(idx, output)
            if self.check is not None:
                self.check(self, idx)
            return result

        return hook

    def _record(self, idx: int, output: Any) -> Any:
        """Keep layer ``idx``'s output; return what the network continues with (``None``: the output itself)."""
        if not isinstance(output, Tensor):
            leaves = structure_leaves(output)
            if not any(leaf.is_floating_point() for leaf in leaves):
                self.state.errors[idx] = (
                    f"target layer {self.layer_names[idx]!r} returns a {type(output).__name__}, not a tensor; "
                    "choose a submodule that outputs the feature map tensor"
                )
                return None
            sources = [self._source(leaf) for leaf in leaves]
            self.state.sources[idx] = structured(_rebuild(output, iter(sources)), self.layer_names[idx])
            self.state.errors[idx] = None
            self.state.calls[idx] += 1
            return _rebuild(output, (source.clone() for source in sources))
        source = self._source(output)
        self.state.sources[idx] = source
        self.state.errors[idx] = None
        self.state.calls[idx] += 1
        # The network continues on a copy, so in-place ops downstream leave `source` intact.
        return source.clone()

    def _source(self, output: Tensor) -> Tensor:
        """What is captured of one output tensor: the tensor, or a leaf that requires grad after frozen layers."""
        if self._lean and not torch.is_grad_enabled() and output.is_floating_point():
            torch.set_grad_enabled(True)  # gradients from here on; `lean()` restores the mode on exit
        if (
            torch.is_grad_enabled()
            and not output.requires_grad
            and output.is_floating_point()
            and not torch.is_inference(output)
        ):
            # Frozen layers before the target: differentiate from here on.
            return output.detach().requires_grad_(True)
        return output

    def _attention_hook(self, idx: int, kind: str) -> Callable[..., Any]:
        def hook(module: nn.Module, *rest: Any) -> Any:
            if not self._recording() or self._replacement is not None:
                return None
            output, result = rest[-1], None
            if kind == "torch":
                found = multihead_self_attention(module, rest[0], rest[1])
                probs = None if found is None else found[0]
                if found is not None and found[0].requires_grad:  # the output, with gradients through probs
                    result = (output[0].detach() + (found[1] - found[1].detach()), *output[1:])
            else:
                probs = output[1] if kind == "huggingface" and isinstance(output, tuple) else output
            if isinstance(probs, Tensor) and probs.ndim == 4 and probs.shape[-1] == probs.shape[-2]:
                self.state.attention[idx], self.state.attention_errors[idx] = probs, None
            else:
                self.state.attention_errors[idx] = (
                    f"attention module {self.attention_names[idx]!r} gave no (N, heads, T, T) self-attention "
                    "probabilities (masks, cross-attention and added key/value tokens are not supported)"
                )
            return result

        return hook

    def _input_hook(self, _module: nn.Module, args: Any, kwargs: Any) -> Any:
        if not self._recording():
            return None
        if self._replacement is not None:
            self.state.seen = [0] * len(self.layer_names)
            return None
        self.state.calls = [0] * len(self.layer_names)
        try:
            call: ModelInput | None = ModelInput.from_call(tuple(args), kwargs, self.image_arg)
            self.input_error = None
        except (TypeError, ValueError) as error:
            call, self.input_error = None, str(error)
        first = (
            call.image
            if call is not None
            else next((v for v in (*args, *kwargs.values()) if isinstance(v, Tensor)), None)
        )
        self.input_size = None if first is None else tuple(first.shape[2:])
        self.autocast = None if first is None else autocast_state(first.device.type)
        if not self.capture_input or call is None:
            return None
        x = call.image
        if self.input_grad_wanted and x.requires_grad and torch.is_grad_enabled():
            self.input, self.call = x, call  # already in a graph (the user's, or another capture's leaf): keep it
            return None
        grad = (
            self.input_grad_wanted and torch.is_grad_enabled() and x.is_floating_point() and not torch.is_inference(x)
        )
        self.input = x.detach().clone().requires_grad_(grad)
        self.call = call.with_image(self.input)
        return (self.call.args, self.call.kwargs) if grad else None

    # reading -------------------------------------------------------------------------------
    def sources(self) -> list[Tensor]:
        """The captured layer outputs as they are in the autograd graph.

        Returns:
            One tensor per target layer.

        Raises:
            ValueError: if a layer did not run or returned a non-tensor.
        """
        out = []
        for name, source, error in zip(self.layer_names, self.state.sources, self.state.errors, strict=True):
            if error is not None:
                raise ValueError(error)
            if source is None:
                raise ValueError(
                    f"no activation was captured for layer {name!r}: run the forward (scores = model(x)) "
                    "after creating the extractor and before calling it, and check that this layer is "
                    "used by the forward"
                )
            # a structured output is handed on as one "tensor": it answers what the engine asks before the
            # user's reshape_transform turns it into a feature map (see StructuredOutput)
            out.append(cast(Tensor, source))
        return out

    def activations(self) -> list[Tensor]:
        """The captured layer outputs, detached.

        Returns:
            One tensor per target layer.
        """
        return [s.detach() for s in self.sources()]

    def attention(self) -> list[Tensor]:
        """The captured attention probabilities ``(N, heads, T, T)``, one per attention module, in the graph.

        Returns:
            One tensor per name in ``attention``.

        Raises:
            ValueError: if a module did not run or gave no probabilities.
        """
        for name, probs, error in zip(
            self.attention_names, self.state.attention, self.state.attention_errors, strict=True
        ):
            if error is not None:
                raise ValueError(error)
            if probs is None:
                raise ValueError(
                    f"no attention was captured for {name!r}: run the forward (scores = model(x)) after "
                    "creating the extractor and before calling it"
                )
        return [p for p in self.state.attention if p is not None]
