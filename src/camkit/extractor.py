"""The TorchCAM-style extractor: the user runs the forward, the extractor turns it into maps.

:class:`CAMExtractor` ties one registry method to the engine. The named classes of
:mod:`camkit.methods` (``GradCAM``, ``ScoreCAM``, ...) are thin subclasses that fix the method and
its options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from camkit import ops
from camkit.capture import Capture
from camkit.layers import LayerSpec, resolve_layers
from camkit.probe import ModelProbe
from camkit.registry import MethodContext, MethodSpec, get_method
from camkit.targets import ClassTarget, Target, logits_of

__all__ = ["CAMExtractor"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class CAMExtractor:
    """Hooks ``target_layer`` and computes one registry method's maps from the user's forward.

    Args:
        model: the model.
        target_layer: a module, a dotted name (``"layer4"``, ``"features.7"``), or a list of them;
            ``None`` picks the last layer with a spatial output for a dummy ``(1, *input_shape)``.
        input_shape: input shape without the batch dim, for automatic layer choice.
        method: registry name (subclasses set it).
        batch_size: inputs per forward for methods that re-run the model.
        enable_hooks: start with the hooks recording.
        **options: method options (``num_samples``, ``std``, ``generator``, ``fc_weight``, ...), and:
            ``progress=True|False``: progress line for long perturbation runs (default: on a terminal);
            ``reforward="auto"|"fast"|"full"``: how AblationCAM-like methods re-run the network
            (see :mod:`camkit.probe`); ``reshape_transform=fn``: maps activations and gradients to
            ``(N, C, *S)`` (e.g. ViT tokens to a grid) before weighting; ``eigen_smooth=True``:
            the first principal component of the weighted activations instead of their sum.

    Raises:
        ValueError: for an unknown layer or method.
        TypeError: for arguments of the wrong type.

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
    #: also differentiate the score with respect to the model input (FullGrad's input term)
    input_gradient: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        input_shape: Sequence[int] = (3, 224, 224),
        *,
        method: str | None = None,
        batch_size: int = 32,
        enable_hooks: bool = True,
        **options: Any,
    ) -> None:
        name = method or self.method
        if not name:
            raise ValueError("pass method=<name>; see camkit.list_methods()")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.spec: MethodSpec = get_method(name)
        self.model = model
        self.input_shape = tuple(input_shape)
        if target_layer is None and self.spec.layers is not None:
            target_layer = self.spec.layers(model)
        self.target_names = resolve_layers(model, target_layer, self.input_shape)
        self.batch_size = batch_size
        self.options = options
        self._capture = Capture(
            model, self.target_names, capture_input=self.spec.needs_input, input_grad=self.input_gradient
        )
        self._capture.enabled = enable_hooks
        self._capture.attach()

    # lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> CAMExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_hooks()
        self.reset_hooks()

    def remove_hooks(self) -> None:
        """Remove every hook this extractor put on the model."""
        self._capture.remove()

    def reset_hooks(self) -> None:
        """Forget the captured activations and input (the hooks stay)."""
        self._capture.reset()

    def enable_hooks(self) -> None:
        """Record the following forwards (the default)."""
        self._capture.enabled = True

    def disable_hooks(self) -> None:
        """Ignore the following forwards until :meth:`enable_hooks`."""
        self._capture.enabled = False

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.options.items() if k != "fc_weight")
        return f"{type(self).__name__}(target_layer={self.target_names}{extra})"

    # computing -------------------------------------------------------------------------------
    def _target(self, class_idx: int | Sequence[int] | None, targets: Target | None) -> Target:
        if (class_idx is None) == (targets is None):
            raise ValueError("pass exactly one of class_idx (int or one per sample) and targets")
        if targets is not None:
            if not callable(targets):
                raise TypeError(f"targets must be a camkit target callable, got {type(targets).__name__}")
            return targets
        return ClassTarget(class_idx)  # type: ignore[arg-type]

    def _check_scores(self, scores: Any, target: Target, batch: int) -> None:
        if scores is None:
            if self.spec.needs_scores:
                raise ValueError(
                    f"{type(self).__name__} needs the model output: call extractor(class_idx, scores=model(x))"
                )
            return
        if isinstance(target, ClassTarget):
            logits = logits_of(scores)
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
            target.classes(batch, logits.shape[1])

    def __call__(
        self,
        class_idx: int | Sequence[int] | None = None,
        scores: Any = None,
        normalized: bool = True,
        retain_graph: bool = False,
        *,
        targets: Target | None = None,
    ) -> list[Tensor]:
        """Compute the maps of the last forward.

        Args:
            class_idx: class to explain: one int for the batch, or one per sample.
            scores: the model output of that forward (needed by gradient methods).
            normalized: min-max normalize each map to ``[0, 1]``.
            retain_graph: keep the autograd graph for another call on the same forward.
            targets: a :mod:`camkit.targets` object instead of ``class_idx``.

        Returns:
            One map ``(N, *S)`` per target layer, at the layer's resolution.

        Raises:
            ValueError: on a misuse; the message names the fix.
        """
        target = self._target(class_idx, targets)
        sources = self._capture.sources()
        batch = sources[0].shape[0]
        self._check_scores(scores, target, batch)
        x = self._capture.input
        if self.spec.needs_input and x is None:
            raise ValueError(
                f"{type(self).__name__} re-runs the model on the input, but none was captured: run the forward "
                "after creating the extractor"
            )
        if x is not None and x.shape[0] != batch:
            raise ValueError(f"captured input batch {x.shape[0]} differs from activation batch {batch}")
        # Nothing here changes the model's flags: gradients come from autograd.grad, and every
        # forward a method runs goes through ModelProbe, which restores the flags itself.
        grads: list[Tensor | None] = [None] * len(sources)
        hvps: list[Tensor | None] = [None] * len(sources)
        if self.spec.needs_scores and self.spec.needs_gradients:
            score = target(scores).sum()
            second = self.spec.needs_hvp
            found = self._capture.gradients(score, retain_graph=retain_graph or second, create_graph=second)
            if second:
                hvps = list(self._capture.hessian_vector(found, retain_graph=retain_graph))
            grads = list(found)
        return [self._map(i, src.detach(), grads[i], target, normalized, hvps[i]) for i, src in enumerate(sources)]

    def _map(
        self, layer: int, a: Tensor, g: Tensor | None, target: Target, normalized: bool, hvp: Tensor | None = None
    ) -> Tensor:
        reshape = self.options.get("reshape_transform")
        if reshape is not None:
            a = reshape(a)
            g = None if g is None else reshape(g)
        if a.ndim < 3:
            raise ValueError(
                f"layer {self.target_names[layer]!r} outputs shape {tuple(a.shape)}, which has no spatial dims; "
                "pick a convolutional layer before global pooling (e.g. 'layer4' in a ResNet)"
            )
        if a.dtype in _LOW_PRECISION:
            a = a.float()
        if g is not None:
            g = g.detach().to(a.dtype)
        ctx = MethodContext(
            model=self.model,
            layer=layer,
            layer_name=self.target_names[layer],
            target=target,
            options=self.options,
            input=self._capture.input,
            hvp=None if hvp is None else hvp.detach().to(a.dtype),
        )
        if self.spec.needs_input:
            reforward = self.options.get("reforward", "auto")
            progress = self.options.get("progress")
            ctx.probe = ModelProbe(self.model, self._capture, target, layer, self.batch_size, reforward, progress)
        with torch.no_grad():
            out = self.spec.weights(a, g, ctx)
            if self.spec.output == "map":
                cam = out
            elif self.options.get("eigen_smooth", False):
                cam = ops.first_component_projection(ops.expand_weights(out, a) * a)
            else:
                cam = ops.combine(out, a)
            if self.spec.relu:
                cam = torch.relu(cam)
            return ops.normalize(cam) if normalized else cam

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
        return ops.fuse(cls._scale_cams(cams), target_shape)

    @staticmethod
    def _scale_cams(cams: list[Tensor]) -> list[Tensor]:
        return cams
