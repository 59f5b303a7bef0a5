"""The generic pytorch-grad-cam-style method class; each named class fixes its registry method.

Pipeline of one call (pytorch-grad-cam's semantics, camkit's engine):

1. one forward of the batch in eval mode (the train/eval flags are restored afterwards), with
   hooks on the target layers for the length of the call only;
2. the registry method's raw map per layer (``torch.autograd.grad`` for gradient methods, never
   ``Tensor.backward``, so no parameter's ``.grad`` changes);
3. per layer: ReLU, per-image min-max, (bi/tri)linear resize to the input size;
4. ReLU of the stacked layers, mean over layers, per-image min-max again.

Everything stays a tensor on the model's device; ``__call__`` converts to numpy at the end
(:meth:`CAMMethod.compute` returns the tensor).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from camkit import ops
from camkit.engine import ImageArg, LayerSpec, Lifecycle, ModelInput, reference_tensor, resolve_layers
from camkit.passes import own_pass
from camkit.registry import MethodSpec, get_method
from camkit.targets import Target

from ._adapter import PerSampleTarget, batched_target, detach_output, select_rows

__all__ = ["AUG_FACTORS", "IGNORED_ARGUMENTS", "CAMMethod"]

logger = logging.getLogger("camkit")

#: Intensity multipliers of ``aug_smooth`` (each with and without a horizontal flip: 6 variants).
AUG_FACTORS = (0.9, 1.0, 1.1)

#: pytorch-grad-cam constructor arguments accepted for compatibility but unused by camkit, per registry
#: name: argument → (pytorch-grad-cam's default, why it is not needed); a non-default value warns.
IGNORED_ARGUMENTS: Mapping[str, Mapping[str, tuple[Any, str]]] = MappingProxyType(
    {
        "ablationcam": {
            "ablation_layer": (
                None,
                "camkit ablates channels in the activation it captured and re-runs the layers after the target "
                "layer itself (the AblationLayer classes exist in camkit.compat.gradcam.ablation_layer for code "
                "that builds them)",
            ),
            "ratio_channels_to_ablate": (
                1.0,
                "camkit ablates every channel (its re-forward runs only the layers after the target layer, "
                "so the peer's approximate speed-up is not needed)",
            ),
        },
    }
)


def _check_batch_size(value: Any) -> int | str:
    if value != "auto" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"batch_size must be a positive int or 'auto', got {value!r}")
    return value  # type: ignore[no-any-return]


class CAMMethod(Lifecycle):
    """A camkit registry method behind pytorch-grad-cam's constructor and call convention.

    The named classes (``GradCAM``, ``ScoreCAM``, ...) fix ``method``; this class also takes any
    registry name: ``CAMMethod(model, [layer], method="sscam", num_samples=8)``.

    Args:
        model: the model (never modified: train/eval flags restored, ``.grad`` untouched).
        target_layers: list of modules (or dotted names); several layers are averaged.
            ``None`` picks the last spatial layer by a dummy forward of the first input's shape.
        reshape_transform: maps a layer's activations (and gradients) to ``(N, C, *S)``; ``None``:
            transformer token and channels-last outputs (ViT, DeiT, Swin) are read as patch grids
            automatically (see :mod:`camkit.reshape`), other outputs are used as they are.
        batch_size: keyword-only: inputs per forward for methods that re-run the model (ScoreCAM,
            AblationCAM, ...) or ``"auto"`` (:func:`camkit.engine.auto_batch_size`); also an attribute
            (``cam.batch_size = 64``).
        method: registry name (the named classes set it).
        image_arg: keyword-only: for models called with several inputs (``input_tensor`` a tuple of
            positional arguments or a dict of keyword arguments), which one is the image that
            perturbation methods modify and whose size the maps take (see :class:`camkit.engine.ModelInput`).
        **kwargs: keyword-only method options (e.g. ``k`` of FEM, ``camkit.get_method(name).options``);
            an unknown one raises ``TypeError`` naming the closest.

    Raises:
        ValueError: for an unknown method or layer, a bad ``batch_size``.
        TypeError: for an option the method does not take.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> from camkit.compat.gradcam import GradCAM
        >>> model = resnet18().eval()
        >>> with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        ...     maps = cam(input_tensor=torch.rand(2, 3, 64, 64), targets=None)
        >>> maps.shape, maps.dtype
        ((2, 64, 64), dtype('float32'))
    """

    method: ClassVar[str] = ""
    #: pytorch-grad-cam's extra constructor arguments of this method, with their defaults.
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: Arguments accepted for compatibility but not used, with the reason (a warning if not default).
    ignored: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        model: nn.Module,
        target_layers: LayerSpec,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        *,
        batch_size: int | str = 32,
        method: str | None = None,
        image_arg: ImageArg = None,
        **kwargs: Any,
    ) -> None:
        name = method or self.method
        if not name:
            raise ValueError("pass method=<registry name>; see camkit.list_methods()")
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(f"reshape_transform must be callable or None, got {type(reshape_transform).__name__}")
        self.spec: MethodSpec = get_method(name)
        ignored = IGNORED_ARGUMENTS.get(self.spec.name, {})
        where = type(self).__name__ if method is None else f"{type(self).__name__}(method={self.spec.name!r})"
        for key, (default, reason) in ignored.items():
            value = kwargs.pop(key, default)
            if value != default:
                warnings.warn(f"{where}: {key}={value!r} is ignored: {reason}", stacklevel=2)
        own = ("model", "target_layers", "reshape_transform", "batch_size", "image_arg", *ignored)
        self.options: dict[str, Any] = self.spec.resolve_options(kwargs, where, own)
        self.model = model
        self.target_layers = target_layers
        self.reshape_transform = reshape_transform
        self.batch_size = batch_size
        self.image_arg = image_arg
        self.outputs: Any = None
        # Validate the layers now (errors list the candidates); None is resolved at the first call.
        # A method with its own layers (FullGrad) ignores target_layers, as in pytorch-grad-cam.
        self.layer_names: list[str] | None = None
        if target_layers is not None and self.spec.layers is None:
            self.layer_names = resolve_layers(model, target_layers, ())

    @property
    def batch_size(self) -> int | str:
        """Inputs per forward for methods that re-run the model."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int | str) -> None:
        self._batch_size = _check_batch_size(value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.spec.name!r}, target_layers={self.layer_names})"

    # computing -----------------------------------------------------------------------------
    def __call__(
        self,
        input_tensor: Tensor | tuple[Any, ...] | Mapping[str, Any],
        targets: Sequence[PerSampleTarget] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Maps of ``input_tensor`` as a numpy array ``(N, *input spatial size)``, float32 in ``[0, 1]``.

        Args:
            input_tensor: the batch ``(N, C, H, W)`` (or ``(N, C, D, H, W)``, ``(N, C, L)``), or for a
                model with several inputs a tuple of positional arguments or a dict of keyword
                arguments (a Hugging Face processor's output) with the image among them.
            targets: one per-image target per image (``ClassifierOutputTarget(281)``, ...), a single
                target for all images, or ``None`` for each image's top class.
            aug_smooth: average over horizontal flips × intensities (0.9, 1.0, 1.1).
            eigen_smooth: first principal component of the weighted activations instead of their sum.

        Returns:
            The maps.
        """
        return self.compute(input_tensor, targets, aug_smooth, eigen_smooth).float().cpu().numpy()

    def forward(
        self,
        input_tensor: Tensor | tuple[Any, ...] | Mapping[str, Any],
        targets: Sequence[PerSampleTarget] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """pytorch-grad-cam's ``forward``: :meth:`__call__` without ``aug_smooth``."""
        return self(input_tensor, targets, False, eigen_smooth)

    def compute(
        self,
        input_tensor: Tensor | tuple[Any, ...] | Mapping[str, Any],
        targets: Sequence[PerSampleTarget] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> Tensor:
        """Like :meth:`__call__` but returns the tensor, on the model's device.

        Args:
            input_tensor: the batch.
            targets: see :meth:`__call__`.
            aug_smooth: see :meth:`__call__`.
            eigen_smooth: see :meth:`__call__`.

        Returns:
            The maps ``(N, *input spatial size)`` in ``[0, 1]``.

        Raises:
            TypeError: when ``input_tensor`` is not a batched tensor.
        """
        call = self.prepare(input_tensor)
        if not aug_smooth:
            maps, outputs = self._maps(call, targets, eigen_smooth)
            self.outputs = outputs
            return maps
        return self._aug_smooth(call, targets, eigen_smooth)

    def prepare(self, input_tensor: Any) -> ModelInput:
        """Read the model's input (a tensor, tuple or dict) and move it to the model's device.

        Raises:
            TypeError: when ``input_tensor`` is not a batch, nor a tuple/dict holding one.
            ValueError: when ``image_arg`` names no argument, or no image is found.
        """
        if isinstance(input_tensor, Tensor) and input_tensor.ndim < 3:
            raise TypeError(
                f"input_tensor must be a batch (N, C, H, W), (N, C, D, H, W) or (N, C, L), got shape "
                f"{tuple(input_tensor.shape)}"
                + ("; add the batch dim: x.unsqueeze(0)" if input_tensor.ndim == 2 else "")
            )
        try:
            return ModelInput.of(input_tensor, self.image_arg).to(self._device())
        except TypeError as error:
            raise TypeError(f"input_tensor: {error}") from None

    def _device(self) -> torch.device | None:
        ref = reference_tensor(self.model)
        return None if ref is None else ref.device

    def _aug_smooth(self, call: ModelInput, targets: Sequence[PerSampleTarget] | None, eigen_smooth: bool) -> Tensor:
        n = call.batch
        many = None if targets is None else self._per_image(targets, n) * (2 * len(AUG_FACTORS))
        return self.augmented(call, lambda out: batched_target(many, out, 2 * len(AUG_FACTORS) * n), eigen_smooth)

    def augmented(self, call: ModelInput, make_target: Callable[[Any], Target], eigen_smooth: bool) -> Tensor:
        """``aug_smooth``: the mean of the maps of 6 variants (flips × intensities), as one batched forward.

        Args:
            call: the model's input.
            make_target: the model output of the 6N variants (variant-major) → what to explain.
            eigen_smooth: see :meth:`__call__`.

        Returns:
            The maps ``(N, *input spatial size)``; :attr:`outputs` holds the plain variant's output.
        """
        x, n = call.image, call.batch
        variants = [(flip, f) for flip in (False, True) for f in AUG_FACTORS]
        augmented = torch.cat([(x.flip(-1) if flip else x) * f for flip, f in variants])
        rows = torch.arange(n, device=x.device).repeat(len(variants))
        cams, outputs = self.raw_maps(call.replace(augmented, rows), make_target, eigen_smooth)
        maps = self.postprocess(cams, x.shape[2:])
        maps = maps.view(len(variants), n, *maps.shape[1:])
        maps = torch.stack([m.flip(-1) if flip else m for m, (flip, _) in zip(maps, variants, strict=True)])
        plain = variants.index((False, 1.0))
        self.outputs = select_rows(outputs, range(plain * n, (plain + 1) * n))
        return maps.mean(dim=0)

    @staticmethod
    def _per_image(targets: Sequence[PerSampleTarget], n: int) -> list[PerSampleTarget]:
        if callable(targets) or not isinstance(targets, Sequence):
            raise TypeError(f"targets must be a list with one target per image (or None), got {type(targets).__name__}")
        items = list(targets)
        if len(items) == 1:
            return items * n
        if len(items) != n:
            raise ValueError(f"got {len(items)} targets for {n} images: pass one target per image")
        return items

    def layers_for(self, x: Tensor) -> list[str]:
        """The target layer names; ``None`` at construction is resolved once from the first input ``x``."""
        if self.layer_names is None:
            self.layer_names = resolve_layers(self.model, None, tuple(x.shape[1:]))
        return self.layer_names

    def _maps(
        self, call: ModelInput, targets: Sequence[PerSampleTarget] | None, eigen_smooth: bool
    ) -> tuple[Tensor, Any]:
        """One forward, the raw maps of every layer, then pytorch-grad-cam's post-processing."""
        cams, outputs = self.raw_maps(call, lambda out: batched_target(targets, out, call.batch), eigen_smooth)
        return self.postprocess(cams, call.image.shape[2:]), outputs

    def raw_maps(
        self, call: ModelInput, make_target: Callable[[Any], Target], eigen_smooth: bool
    ) -> tuple[list[Tensor], Any]:
        """One forward; the registry method's raw map of every layer for ``make_target(model output)``.

        Returns:
            The maps (one ``(N, *S_l)`` per layer, before ReLU and normalization) and the detached output.
        """
        own_layers = self.spec.layers is not None
        if own_layers and self.target_layers:
            logger.warning("%s uses its own layers; target_layers is ignored", type(self).__name__)
        if eigen_smooth and self.spec.reduce is not None:
            logger.warning("%s has no eigen_smooth variant in camkit; it is ignored", type(self).__name__)
        outputs, per_target, _ = own_pass(
            self.spec,
            self.model,
            call,
            None if own_layers else self.layers_for(call.image),
            self.options,
            lambda out: [make_target(out)],
            normalized=False,
            argument="input_tensor",
            batch_size=self.batch_size,
            image_arg=call.image_key,
            eigen_smooth=eigen_smooth,
            reshape_transform=self.reshape_transform,
        )
        return per_target[0], detach_output(outputs)

    @staticmethod
    def postprocess(cams: list[Tensor], size: Sequence[int]) -> Tensor:
        """ReLU, min-max and resize per layer; then ReLU, mean over layers and min-max.

        For one layer the first min-max is skipped: resizing commutes with a positive affine map
        (its weights sum to 1) and the final min-max removes any, so the maps are the same; a flat
        map stays flat through :func:`camkit.ops.upsample` and ends as zeros either way.
        """
        if len(cams) == 1:
            return ops.normalize(ops.upsample(torch.relu(cams[0]), size))
        per_layer = [ops.upsample(ops.normalize(torch.relu(cam)), size) for cam in cams]
        fused = torch.relu(torch.stack(per_layer, dim=1)).mean(dim=1)
        return ops.normalize(fused)
