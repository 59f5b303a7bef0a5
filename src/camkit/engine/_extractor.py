"""The TorchCAM-style extractor: the user runs the forward, the extractor turns it into maps.

:class:`CAMExtractor` ties one registry method to the engine. The named classes of
:mod:`camkit.methods` (``GradCAM``, ``ScoreCAM``, ...) are subclasses made from the registry specs
that fix the method (and take TorchCAM's positional options).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from camkit import ops
from camkit.engine._batching import auto_batch_size, default_batch_size
from camkit.engine._capture import Capture
from camkit.engine._gate import reference_tensor
from camkit.engine._inputs import ImageArg
from camkit.engine._layers import LayerSpec, resolve_layers
from camkit.engine._lifecycle import HookedExtractor
from camkit.engine._probe import REFORWARD_MODES, GridProbe, ModelProbe
from camkit.registry import (
    ENGINE_SWITCHES,
    ActivationWeights,
    GradientWeights,
    MethodContext,
    MethodSpec,
    get_method,
)
from camkit.reshape import TokenLayout, attention_kind, infer_layout, transformer_info
from camkit.targets import ClassTarget, Target, as_target
from camkit.targets._unresolved import UnresolvedTarget

__all__ = ["CAMExtractor", "DisconnectedTargetError"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class DisconnectedTargetError(ValueError, RuntimeError):
    """The target score does not depend on the captured activations (``ValueError``; TorchCAM: ``RuntimeError``)."""


class CAMExtractor(HookedExtractor):
    """Hooks ``target_layer`` and computes one registry method's maps from the user's forward.

    Args:
        model: the model.
        target_layer: a module, a dotted name (``"layer4"``, ``"features.7"``), or a list of them;
            ``None`` picks the last layer with a spatial output for a dummy ``(1, *input_shape)``.
        input_shape: input shape without the batch dim, for automatic layer choice.
        method: registry name (subclasses set it).
        batch_size: inputs per forward for methods that re-run the model; ``None``: 8 if the model is
            on a CPU, else 32 (:func:`camkit.engine.default_batch_size`); ``"auto"``: the fastest
            on a CPU (measured once per model, input shape and layer), the largest that fits half
            the free memory on a GPU (:func:`camkit.engine.auto_batch_size`).
        enable_hooks: start with the hooks recording.
        capture: an attached :class:`~camkit.engine.Capture` on the same layers to share with other
            extractors (:func:`camkit.compare` does this); its owner attaches and removes it.
        image_arg: for models called with several inputs (``model(x, v)``, ``model(**inputs)``):
            which one is the image that perturbation methods modify (see :class:`camkit.engine.ModelInput`).
        reshape_transform: maps activations and gradients to ``(N, C, *S)`` before weighting
            (default: transformer token and channels-last outputs are read as grids automatically,
            see :mod:`camkit.reshape`).
        eigen_smooth: the first principal component of the weighted activations instead of their sum.
        progress: a progress line for long perturbation runs (default: on a terminal).
        reforward: how AblationCAM-like methods re-run the network, ``"auto"``, ``"fast"`` or
            ``"full"`` (see :class:`camkit.engine.ModelProbe`).
        **options: the method's declared options (``camkit.get_method(name).options``: ``num_samples``,
            ``std``, ``generator``, ...); an unknown one raises ``TypeError`` naming the closest.

    Raises:
        ValueError: for an unknown layer or method.
        TypeError: for an unknown option or an argument of the wrong type.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with CAMExtractor(model, "layer4", method="gradcam") as extractor:
        ...     scores = model(torch.rand(1, 3, 224, 224))
        ...     cams = extractor(class_idx=1, scores=scores)
        >>> cams[0].shape
        torch.Size([1, 7, 7])
    """

    method: ClassVar[str] = ""

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        input_shape: Sequence[int] = (3, 224, 224),
        *,
        method: str | None = None,
        batch_size: int | str | None = None,
        enable_hooks: bool = True,
        capture: Capture | None = None,
        image_arg: ImageArg = None,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        eigen_smooth: bool = False,
        progress: bool | None = None,
        reforward: str = "auto",
        **options: Any,
    ) -> None:
        name = method or self.method
        if not name:
            raise ValueError("pass method=<name>; see camkit.list_methods()")
        if batch_size is None:
            ref = reference_tensor(model)
            batch_size = default_batch_size(None if ref is None else ref.device)
        if batch_size != "auto" and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(
                f"batch_size must be a positive int, 'auto' or None (8 on a CPU, 32 on a GPU), got {batch_size!r}"
            )
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(f"reshape_transform must be callable or None, got {type(reshape_transform).__name__}")
        if reforward not in REFORWARD_MODES:
            raise ValueError(f"reforward must be one of {', '.join(REFORWARD_MODES)}, got {reforward!r}")
        self.spec: MethodSpec = get_method(name)
        where = type(self).__name__ if method is None else f"{type(self).__name__}(method={self.spec.name!r})"
        #: the method's options: every declared one, given or default (see ``camkit.get_method(name).options``)
        self.options = self.spec.resolve_options(options, where, ENGINE_SWITCHES)
        self.model = model
        self.input_shape = tuple(input_shape)
        if target_layer is None and self.spec.layers is not None:
            target_layer = self.spec.layers(model)
        # a black-box method reads no layer (a given target_layer is ignored): the model input is its source
        self.target_names = [] if self.spec.black_box else resolve_layers(model, target_layer, self.input_shape)
        self._info = transformer_info(model)
        self._layouts: dict[tuple[Any, ...], TokenLayout | None] = {}  # see _layout
        self._warned_flat = False  # the 1x1-map warning is given once per extractor (see _warn_flat)
        self.batch_size = batch_size
        self.reshape_transform = reshape_transform
        self.eigen_smooth = bool(eigen_smooth)
        self.progress = progress
        self.reforward = reforward
        # Second derivatives (needs_hvp) do not pass fused attention kernels: capturing the attention
        # switches timm/Hugging Face attention to their plain paths and routes torch's through a
        # recomputation, for the life of the hooks.
        attention = [n for n, m in model.named_modules() if n and attention_kind(m)] if self.spec.needs_hvp else []
        if capture is not None:  # shared with other extractors (camkit.compare), owned by the caller
            if capture.layer_names != self.target_names or (self.spec.needs_input and not capture.capture_input):
                raise ValueError("a shared capture must hook the same layers and keep the input if needed")
            if attention or self.spec.input_gradient:
                raise ValueError(f"{self.spec.name} needs a capture of its own (attention or input gradients)")
            self._capture = capture
            return
        self._capture = Capture(
            model,
            self.target_names,
            capture_input=self.spec.needs_input,
            input_grad=self.spec.input_gradient,
            attention=attention,
            image_arg=image_arg,
        )
        if self.spec.black_box and isinstance(model, torch.jit.ScriptModule):
            self._capture.enabled = enable_hooks  # TorchScript takes no hooks: camkit's own forwards record the input
            return
        self._own(self._capture, enable_hooks)

    @property
    def hook_a(self) -> list[Any]:
        """TorchCAM's attribute: the last forward's activation of each target layer, ``None`` where none was captured.

        Read-only (the capture owns them); ``reshape_transform`` applied when given, as in TorchCAM.
        """
        sources = self._capture.state.sources
        return [
            a if not isinstance(a, Tensor) or self.reshape_transform is None else self.reshape_transform(a)
            for a in sources
        ]

    @property
    def hook_g(self) -> list[Any]:
        """TorchCAM's attribute: the gradient of each target layer's output from the last call, ``None`` before one.

        Read-only; ``reshape_transform`` applied when given, as in TorchCAM. camkit computes the
        gradients with ``torch.autograd.grad`` when the extractor is called (no backward hooks), so
        this is filled by the call, not by ``scores.backward()``.
        """
        found = self._capture.last_gradients or [None] * len(self.target_names)
        return [
            g if not isinstance(g, Tensor) or self.reshape_transform is None else self.reshape_transform(g)
            for g in found
        ]

    def __repr__(self) -> str:
        # TorchCAM's positional options always (its SmoothGradCAMpp repr), the others when given
        given = {
            k: v
            for k, v in self.options.items()
            if k != "fc_weight" and (k in self.spec.positional or v is not self.spec.options[k].default)
        }
        extra = "".join(f", {k}={v!r}" for k, v in given.items())
        return f"{type(self).__name__}(target_layer={self.target_names}{extra})"

    @property
    def _source_names(self) -> list[str]:
        """What each source is called in messages: the target layers, or ``["input"]`` for a black-box method."""
        return ["input"] if self.spec.black_box else self.target_names

    def _sources(self) -> list[Tensor]:
        """The captured target-layer outputs, or for a black-box method the captured model input.

        Raises:
            ValueError: when nothing was captured, naming the fix.
        """
        if not self.spec.black_box:
            return self._capture.sources()
        x = self._capture.input
        if x is None:
            why = self._capture.input_error or (
                "run the forward after creating the extractor"
                if self._capture.attached
                else "a TorchScript module takes no hooks; use camkit.explain, camkit.compare or the "
                "camkit.compat.gradcam classes, which are given the input"
            )
            raise ValueError(f"{type(self).__name__} re-runs the model on its input, but no input was captured: {why}")
        return [x]

    # computing -------------------------------------------------------------------------------
    def _target(self, class_idx: int | Sequence[int] | None, targets: Any, batch: int | None = None) -> Target:
        """``class_idx`` or ``targets`` as one batched target.

        ``targets`` is a camkit target (``target(output, rows=None) -> (B,)``), or TorchCAM's
        per-sample ``OutputTarget``: one callable of one sample's output, or a list with one per
        sample (see :func:`camkit.targets.samples.as_target`). Class-agnostic methods
        (``needs_target=False``: Eigen-CAM, FEM, ...) may be given neither.
        """
        if class_idx is None and targets is None and not self.spec.needs_target:
            return UnresolvedTarget(f"{type(self).__name__} got neither class_idx nor targets")  # never read
        if (class_idx is None) == (targets is None):
            raise ValueError("pass exactly one of class_idx (int or one per sample) and targets")
        if targets is not None:
            return cast(Target, as_target(targets, batch))
        return ClassTarget(class_idx)  # type: ignore[arg-type]

    def check_scores(self, scores: Any, target: Target, batch: int) -> None:
        """Check that ``scores`` fit ``target`` and the captured batch (or are given when needed).

        Raises:
            ValueError: naming the fix.
        """
        if scores is None:
            if self.spec.needs_scores:
                raise ValueError(
                    f"{type(self).__name__} needs the model output: call extractor(class_idx, scores=model(x))"
                )
            return
        if isinstance(target, ClassTarget):
            logits = target.scores_of(scores)
            if logits.ndim != 2:
                raise ValueError(
                    f"scores must have shape (N, num_classes), got {tuple(logits.shape)}"
                    + ("; add a batch dimension to the input (x.unsqueeze(0))" if logits.ndim == 1 else "")
                )
            if logits.shape[0] != batch:
                raise ValueError(
                    f"scores have batch {logits.shape[0]} but the captured activations have batch {batch}: "
                    "pass the output of the forward that produced the activations"
                )
            target.validate(batch, logits.shape[1])

    def __call__(
        self,
        class_idx: int | Sequence[int] | None = None,
        scores: Any = None,
        normalized: bool = True,
        retain_graph: bool = False,
        *,
        targets: Target | Sequence[Callable[[Any], Tensor]] | None = None,
        create_graph: bool = False,
    ) -> list[Tensor]:
        """Compute the maps of the last forward.

        Args:
            class_idx: class to explain: one int for the batch, or one per sample (class-agnostic
                methods such as Eigen-CAM take neither ``class_idx`` nor ``targets``).
            scores: the model output of that forward (needed by gradient methods).
            normalized: min-max normalize each map to ``[0, 1]``.
            retain_graph: keep the autograd graph for another call on the same forward.
            targets: a :mod:`camkit.targets` object instead of ``class_idx``; or TorchCAM's
                per-sample ``OutputTarget`` (a callable of ONE sample's output returning a scalar
                tensor), or a list of them with one per sample.
            create_graph: return maps that stay in the autograd graph (through the activations and
                the gradients), so a loss on them can be back-propagated into the model's
                parameters (attention-guided training, "right for the right reasons" penalties).
                Gradient and activation methods only; run the forward in plain grad mode (not in
                :meth:`lean`, which records nothing before the target layers). Parameters' ``.grad``
                are filled only by your own ``backward()``.

        Returns:
            One map ``(N, *S)`` per target layer, at the layer's resolution.

        Raises:
            ValueError: on a misuse; the message names the fix.
        """
        if (class_idx is None) == (targets is None):
            self._target(class_idx, targets)  # the error, before anything else
        sources = self._sources()
        batch = sources[0].shape[0]
        target = self._target(class_idx, targets, batch)
        self.check_scores(scores, target, batch)
        x = self._capture.input
        if self.spec.needs_input and x is None:
            why = self._capture.input_error or "run the forward after creating the extractor"
            raise ValueError(f"{type(self).__name__} re-runs the model on its input, but none was captured: {why}")
        if x is not None and x.shape[0] != batch:
            raise ValueError(f"captured input batch {x.shape[0]} differs from activation batch {batch}")
        # Nothing here changes the model's flags: gradients come from autograd.grad, and every
        # forward a method runs goes through ModelProbe, which restores the flags itself.
        if create_graph and not self.spec.differentiable:
            raise ValueError(
                f"create_graph=True needs a method whose map is a differentiable function of the activations "
                f"and gradients (Grad-CAM, Grad-CAM++, LayerCAM, ...); {self.spec.name} re-runs the model, "
                "uses second derivatives or the input gradient"
            )
        grads: list[Tensor | None] = [None] * len(sources)
        hvps: list[Tensor | None] = [None] * len(sources)
        if self.spec.needs_scores and self.spec.needs_gradients:
            score = target(scores).sum()
            tracked = [src for src in sources if isinstance(src, Tensor) and src.requires_grad]
            if tracked and not score.requires_grad:
                raise DisconnectedTargetError(
                    "the target score is not connected to every target layer: it carries no autograd graph "
                    "although the activations do; compute the target from the model output without .detach(), "
                    "torch.no_grad() or .item() (pass scores=model(x) as returned)"
                )
            second = self.spec.needs_hvp
            found = self._capture.gradients(
                score, retain_graph=retain_graph or second or create_graph, create_graph=second or create_graph
            )
            if second:
                hvps = list(self._capture.hessian_vector(found, retain_graph=retain_graph))
            grads = list(found)
        return self.maps_from(target, grads, normalized, hvps, create_graph=create_graph)

    def maps_from(
        self,
        target: Target,
        grads: Sequence[Tensor | None],
        normalized: bool = True,
        hvps: Sequence[Tensor | None] | None = None,
        *,
        create_graph: bool = False,
    ) -> list[Tensor]:
        """The maps of the captured activations, given the gradients already computed for ``target``.

        Several extractors that share one capture use this to share one backward
        (:func:`camkit.compare`); a plain call computes the gradients itself (:meth:`__call__`).

        Args:
            target: the target the gradients were computed for.
            grads: ``d target / d A`` per target layer (``None`` entries for gradient-free methods).
            normalized: min-max normalize each map.
            hvps: Hessian-vector products per layer (methods registered with ``needs_hvp``).
            create_graph: keep the maps in the autograd graph (see :meth:`__call__`).

        Returns:
            One map ``(N, *S)`` per target layer.
        """
        sources = self._sources()
        for name, src in zip(self._source_names, sources, strict=True):
            if math.isfinite(src.detach().sum().item()):  # one fast reduction; a NaN/Inf makes it non-finite
                continue
            finite = torch.isfinite(src.detach().flatten(1)).all(dim=1)  # or the sum overflowed
            if not bool(finite.all()):
                bad = (~finite).nonzero().flatten().tolist()
                raise ValueError(
                    f"the activations of layer {name!r} hold NaN/Inf for sample(s) {bad}: check the input "
                    "(torch.isfinite(x).all()) and the model's weights"
                )
        hvps = hvps if hvps is not None else [None] * len(sources)
        reduce = self.spec.reduce
        maps = [
            self._map(
                i,
                src if create_graph else src.detach(),
                grads[i],
                target,
                normalized and reduce is None,
                hvps[i],
                create_graph,
            )
            for i, src in enumerate(sources)
        ]
        if reduce is None:
            return maps
        with torch.no_grad():
            total = reduce(maps, self._capture.input, self._capture.input_grad)
        return [ops.normalize(total) if normalized else total]

    def _layout(self, layer: int, a: Tensor) -> Callable[[Tensor], Tensor] | None:
        """The user's ``reshape_transform``, else the inferred grid layout of a transformer output."""
        if self.spec.black_box:
            return None  # the model input is read as it is
        if self.reshape_transform is not None:
            return self.reshape_transform
        size = self._capture.input_size
        if size is None and self._info is not None:
            size = self._info.image_size
        if size is None or len(size) != 2 or a.ndim not in (3, 4):
            return None
        key = (layer, a.shape[1:], size)  # the same answer on every call with the same shapes
        if key in self._layouts:
            return self._layouts[key]
        name = self.target_names[layer]
        layout = infer_layout(tuple(a.shape), size, self._info, self.model.get_submodule(name))
        if layout is None and a.ndim == 3:
            raise ValueError(
                f"layer {name!r} outputs tokens of shape {tuple(a.shape)}, but no prefix of at most 16 tokens leaves "
                f"a patch grid with the aspect ratio of the {size[0]}x{size[1]} input; pass reshape_transform="
                "camkit.reshape.TokenLayout('tokens', height, width, prefix=P) (or a function returning (N, C, H, W))"
            )
        if len(self._layouts) >= 64:  # inputs of many sizes: keep the cache small
            self._layouts.clear()
        self._layouts[key] = layout
        return layout

    def _map(
        self,
        layer: int,
        a: Tensor,
        g: Tensor | None,
        target: Target,
        normalized: bool,
        hvp: Tensor | None = None,
        differentiable: bool = False,
    ) -> Tensor:
        source = a
        reshape = self._layout(layer, a)
        if reshape is not None:
            a = reshape(a).contiguous()
            g = None if g is None else reshape(g).contiguous()
            hvp = None if hvp is None else reshape(hvp).contiguous()
        if a.ndim < 3:
            raise ValueError(
                f"layer {self._source_names[layer]!r} outputs shape {tuple(a.shape)}, which has no spatial dims; "
                "pick a convolutional layer before global pooling (e.g. 'layer4' in a ResNet)"
            )
        if math.prod(a.shape[2:]) == 1 and self.spec.reduce is None:  # a reducing method (FullGrad) sums
            self._warn_flat(layer, tuple(a.shape))  # its layers' terms at the input size: 1x1 ones are fine
        if a.dtype in _LOW_PRECISION:
            a = a.float()
        if g is not None and g.requires_grad and not differentiable:  # second-order methods' gradients
            g = g.detach()
        if g is not None and g.dtype != a.dtype:
            g = g.to(a.dtype)
        ctx = MethodContext(
            model=self.model,
            layer=layer,
            layer_name=self._source_names[layer],
            target=target,
            options=self.options,
            input=self._capture.input,
            hvp=None if hvp is None else hvp.detach().to(a.dtype),
        )
        if self.spec.needs_input:
            batch = self._auto_batch_size(layer, target) if self.batch_size == "auto" else int(self.batch_size)
            probe = ModelProbe(self.model, self._capture, target, layer, batch, self.reforward, self.progress)
            ctx.probe = probe if reshape is None else GridProbe(probe, reshape, source.detach())
        with torch.set_grad_enabled(differentiable):
            if self.spec.needs_gradients:
                if g is None:
                    raise ValueError(f"{self.spec.name} needs the gradient of the target: pass scores=model(x)")
                out = cast(GradientWeights, self.spec.weights)(a, g, ctx)
            else:
                out = cast(ActivationWeights, self.spec.weights)(a, None, ctx)
            if self.spec.output == "map":
                cam = out
            elif self.eigen_smooth:
                cam = ops.first_component_projection(ops.expand_weights(out, a) * a)
            else:
                cam = ops.combine(out, a)
            if self.spec.relu:
                cam = torch.relu(cam)
            return ops.normalize(cam) if normalized else cam

    def _warn_flat(self, layer: int, shape: tuple[int, ...]) -> None:
        """Warn (once per extractor) that a layer's 1x1 output carries no location, naming a better layer."""
        if self._warned_flat:
            return
        self._warned_flat = True
        name = self.target_names[layer]
        before = _previous_layer(self.model, name)
        better = f"the layer before it ({before!r})" if before else "a layer before global pooling"
        warnings.warn(
            f"layer {name!r} outputs a 1x1 map {shape}: it carries no location, so every map is flat; "
            f"pick {better}, or give a larger input",
            UserWarning,
            stacklevel=2,
        )

    def _auto_batch_size(self, layer: int, target: Target) -> int:
        """Perturbed inputs per forward for ``batch_size="auto"`` (see :func:`camkit.engine.auto_batch_size`)."""
        x = self._capture.input
        if x is None:
            return 32
        probe = ModelProbe(self.model, self._capture, target, layer, 1, "full", False)

        def run(rows: int) -> None:
            probe.scores(x[:1].expand(rows, *x.shape[1:]), torch.zeros(rows, dtype=torch.long, device=x.device))

        # one row: the input copy plus the activations a forward keeps alive, bounded by 8 inputs' worth
        row_bytes = 8 * x[:1].numel() * x.element_size()
        key = (id(self.model), tuple(x.shape[1:]), self._source_names[layer])
        return auto_batch_size(run, row_bytes, x.device, key=key)

    @classmethod
    def fuse_cams(cls, cams: list[Tensor], target_shape: Sequence[int] | None = None) -> Tensor:
        """Fuse the maps of several layers into one (element-wise max after resizing).

        Args:
            cams: the list returned by a call.
            target_shape: output size; default the largest map's size.

        Returns:
            The fused map ``(N, *target_shape)``.

        Raises:
            TypeError: if ``cams`` is not a list of tensors.
        """
        if not isinstance(cams, list) or not all(isinstance(c, Tensor) for c in cams):
            raise TypeError("cams must be the list of tensors returned by the extractor")
        if len(cams) == 1:
            return cams[0]
        scale = get_method(cls.method).fuse_scale if cls.method else None
        return ops.fuse(cams if scale is None else [scale(cam) for cam in cams], target_shape)


def _previous_layer(model: nn.Module, name: str) -> str | None:
    """The module registered just before ``name`` among its (or its parents') siblings: ``layer4`` for ``avgpool``."""
    while name:
        parent, _, leaf = name.rpartition(".")
        siblings = [child for child, _ in (model.get_submodule(parent) if parent else model).named_children()]
        if leaf in siblings and siblings.index(leaf) > 0:
            before = siblings[siblings.index(leaf) - 1]
            return f"{parent}.{before}" if parent else before
        name = parent
    return None
