"""pytorch-grad-cam's meta methods (``FinerCAM``, ``RefineCAM``, ``SESS``) on camkit's native ones.

Each holds a ``base_cam``, an instance of the ``base_method`` class of this front door (e.g.
:class:`~camkit.compat.gradcam.GradCAM`), and only changes what that instance explains or how its
per-layer maps are combined; the maths is camkit's (:mod:`camkit.methods.wrappers`). As every
class here, they leave the model as it was (flags restored, no ``.grad``, no hooks after a call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from camkit.engine import LayerSpec, Lifecycle
from camkit.methods.sess import SESS as NativeSESS
from camkit.methods.wrappers import FinerWeightedTarget, most_similar_classes
from camkit.methods.wrappers import RefineCAM as NativeRefineCAM
from camkit.targets import ClassTarget, Target, logits_of

from . import GradCAM, GradCAMPlusPlus
from ._adapter import PerSampleTarget, batched_target
from ._base import CAMMethod

__all__ = ["SESS", "FinerCAM", "RefineCAM"]

#: Finer-CAM's default comparison positions: the 1st, 2nd and 3rd most similar classes.
DEFAULT_COMPARISON_CATEGORIES = (1, 2, 3)

Transform = Callable[[Tensor], Tensor] | None


def _base_class(base_method: Any, owner: str) -> type[CAMMethod]:
    if isinstance(base_method, type) and issubclass(base_method, CAMMethod) and base_method.method:
        return base_method
    raise TypeError(
        f"{owner}: base_method must be a method class of camkit.compat.gradcam (e.g. GradCAM), got {base_method!r}; "
        "import the base method from camkit.compat.gradcam too"
    )


class _OnBase(Lifecycle):
    """Lifecycle shared by the meta methods: everything lives in ``base_cam`` (hooks only during a call)."""

    base_cam: CAMMethod
    outputs: Any = None

    @property
    def model(self) -> nn.Module:
        """The model (the base method's)."""
        return self.base_cam.model

    def compute(
        self, input_tensor: Tensor, targets: Sequence[PerSampleTarget] | None = None, eigen_smooth: bool = False
    ) -> Tensor:
        """The maps as a tensor on the model's device (each meta method defines it)."""
        raise NotImplementedError

    def __call__(
        self, input_tensor: Tensor, targets: Sequence[PerSampleTarget] | None = None, eigen_smooth: bool = False
    ) -> np.ndarray:
        """The maps ``(N, *input spatial size)``, float32 in ``[0, 1]`` (arguments as :meth:`compute`)."""
        return self.compute(input_tensor, targets, eigen_smooth).float().cpu().numpy()

    def forward(
        self, input_tensor: Tensor, targets: Sequence[PerSampleTarget] | None = None, eigen_smooth: bool = False
    ) -> np.ndarray:
        """pytorch-grad-cam's name for the call."""
        return self(input_tensor, targets, eigen_smooth)

    def __repr__(self) -> str:
        base = type(self.base_cam).__name__
        return f"{type(self).__name__}(base_method={base}, target_layers={self.base_cam.layer_names})"


class FinerCAM(_OnBase):
    r"""pytorch-grad-cam's ``FinerCAM``: the base method explains :class:`~camkit.methods.wrappers.FinerWeightedTarget`.

    .. math:: s = \sum_{d \in D} w_d \big(Y^{(c)} - \alpha\, Y^{(d)}\big), \qquad
              w_d = \frac{p_d}{\sum_{d' \in D} p_{d'}},\ p = \mathrm{softmax}(Y)

    With ``targets=None``, :math:`c` is each image's top class (or ``target_idx``) and :math:`D` the
    classes at positions ``comparison_categories`` (default 1, 2, 3; those ``>= num_classes`` are
    dropped) of the classes sorted by :math:`|Y^{(d)} - Y^{(c)}|`; otherwise the base method explains
    ``targets``. Post-processing as the base method's (ReLU, min-max, resize, mean over layers,
    min-max). Zhang et al., CVPR 2025, arXiv:2501.11309. Differences: an activation-only base
    method (Eigen-CAM, ...) is refused, as it would ignore the target; a comparison position of 0
    (the class itself) or below, or none left below ``num_classes``, raises ``ValueError``.

    Args:
        model: the model.
        target_layers: list of modules (or dotted names).
        reshape_transform: maps a layer's activations to ``(N, C, *S)``.
        base_method: a method class of this front door (default :class:`GradCAM`).

    Raises:
        TypeError: for a ``base_method`` that is not such a class.
        ValueError: for an activation-only base method.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with FinerCAM(model, [model.layer4[-1]]) as cam:
        ...     maps = cam(torch.rand(2, 3, 64, 64), alpha=0.6)
        >>> maps.shape
        (2, 64, 64)
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: LayerSpec,
        reshape_transform: Transform = None,
        base_method: type[CAMMethod] = GradCAM,
    ) -> None:
        self.base_cam = _base_class(base_method, "FinerCAM")(model, target_layers, reshape_transform)
        if self.base_cam.spec.family == "activation":
            raise ValueError(f"FinerCAM needs a method that explains a target score, not {self.base_cam.spec.name!r}")

    def __call__(
        self,
        input_tensor: Tensor,
        targets: Sequence[PerSampleTarget] | None = None,
        eigen_smooth: bool = False,
        alpha: float = 1,
        comparison_categories: Sequence[int] | None = None,
        target_idx: int | None = None,
        *,
        aug_smooth: bool = False,
    ) -> np.ndarray:
        """Finer-CAM maps ``(N, *input spatial size)``, float32 in ``[0, 1]`` (arguments as :meth:`compute`).

        ``aug_smooth`` (keyword only) is the base classes' test-time augmentation: the peer's
        ``FinerCAM`` does not take it, so its ``cam.py --method finercam`` fails with a ``TypeError``;
        here every variant is explained with its own Finer-CAM target.
        """
        maps = self.compute(
            input_tensor, targets, eigen_smooth, alpha, comparison_categories, target_idx, aug_smooth=aug_smooth
        )
        return maps.float().cpu().numpy()

    forward = __call__

    def compute(
        self,
        input_tensor: Tensor,
        targets: Sequence[PerSampleTarget] | None = None,
        eigen_smooth: bool = False,
        alpha: float = 1,
        comparison_categories: Sequence[int] | None = None,
        target_idx: int | None = None,
        *,
        aug_smooth: bool = False,
    ) -> Tensor:
        r"""Like :meth:`__call__` but returns the tensor, on the model's device.

        Args:
            input_tensor: the batch ``(N, C, H, W)``.
            targets: per-image targets (then plain ``base_method`` maps of them), or ``None``.
            eigen_smooth: first principal component instead of the weighted sum.
            alpha: comparison strength :math:`\alpha`.
            comparison_categories: positions among the classes sorted by similarity to the target.
            target_idx: the class to explain for every image; ``None``: each image's top class.
            aug_smooth: average over horizontal flips × intensities (0.9, 1.0, 1.1).

        Returns:
            The maps.
        """
        call = self.base_cam.prepare(input_tensor)
        rows = call.batch * (6 if aug_smooth else 1)  # aug_smooth: 6 variants, variant-major

        def make_target(outputs: Any) -> Target:
            if targets is not None:
                return batched_target(list(targets) * (rows // len(targets)) if aug_smooth else targets, outputs, rows)
            return self.target(outputs, alpha, comparison_categories, target_idx)

        if aug_smooth:
            maps = self.base_cam.augmented(call, make_target, eigen_smooth)
            self.outputs = self.base_cam.outputs
            return maps
        cams, self.outputs = self.base_cam.raw_maps(call, make_target, eigen_smooth)
        return self.base_cam.postprocess(cams, call.image.shape[2:])

    @staticmethod
    def target(
        outputs: Any,
        alpha: float = 1,
        comparison_categories: Sequence[int] | None = None,
        target_idx: int | None = None,
    ) -> FinerWeightedTarget:
        """The batched Finer-CAM target of a forward's ``outputs`` ``(N, num_classes)``.

        Args:
            outputs: the model output.
            alpha: comparison strength.
            comparison_categories: similarity positions (default 1, 2, 3).
            target_idx: the class for every image; ``None``: each image's top class.

        Returns:
            The target.

        Raises:
            ValueError: when the output is not ``(N, num_classes)`` scores or no comparison is left.
        """
        scores = logits_of(outputs).detach()
        if scores.ndim != 2:
            raise ValueError(
                f"FinerCAM with targets=None compares class scores (N, num_classes), got shape {tuple(scores.shape)}; "
                "pass targets=[...]"
            )
        n, k = scores.shape
        main = scores.argmax(1) if target_idx is None else ClassTarget(int(target_idx)).classes(n, k)
        positions = DEFAULT_COMPARISON_CATEGORIES if comparison_categories is None else comparison_categories
        ranks = [int(c) for c in positions if c < k]
        if not ranks:
            raise ValueError(
                f"FinerCAM: no comparison category is left for a model of {k} classes (comparison_categories="
                f"{list(positions)!r}; positions 1..{k - 1} exist)"
            )
        return FinerWeightedTarget(main, most_similar_classes(scores, main.tolist(), ranks), alpha)


class RefineCAM(_OnBase):
    r"""pytorch-grad-cam's ``RefineCAM``: the product of the per-layer maps (arXiv:2605.14641).

    .. math:: L = \mathcal{N}\Big(\prod_l \mathcal{N}\big(U(\mathcal{N}(\mathrm{ReLU}(L_l)))\big)\Big)

    with :math:`L_l` the base method's map at layer :math:`l`, :math:`U` the bilinear resize to the
    input and :math:`\mathcal{N}` per-image min-max. All layers come from one forward (the peer runs
    one per layer). The peer's own normalization loop (``for cam in cams: cam = ...``) rebinds the
    loop variable and changes nothing; the formula above is what it actually computes.

    Args:
        model: the model.
        target_layers: the layers (modules or dotted names); one layer gives its own map.
        reshape_transform: maps a layer's activations to ``(N, C, *S)``.
        base_method: a method class of this front door (default :class:`GradCAMPlusPlus`).
        **kwargs: constructor arguments of ``base_method`` (e.g. ``batch_size``).

    Raises:
        TypeError: for a ``base_method`` that is not such a class, or an argument it does not take.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with RefineCAM(model, [model.layer3[-1], model.layer4[-1]]) as cam:
        ...     maps = cam(torch.rand(1, 3, 64, 64))
        >>> maps.shape
        (1, 64, 64)
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: LayerSpec,
        reshape_transform: Transform = None,
        base_method: type[CAMMethod] = GradCAMPlusPlus,
        **kwargs: Any,
    ) -> None:
        self.base_cam = _base_class(base_method, "RefineCAM")(model, target_layers, reshape_transform, **kwargs)

    def compute(
        self, input_tensor: Tensor, targets: Sequence[PerSampleTarget] | None = None, eigen_smooth: bool = False
    ) -> Tensor:
        """Like :meth:`__call__` but returns the tensor, on the model's device.

        Args:
            input_tensor: the batch.
            targets: one per-image target per image (or one for all), or ``None`` for the top class.
            eigen_smooth: first principal component instead of the weighted sum.

        Returns:
            The maps.
        """
        call = self.base_cam.prepare(input_tensor)
        cams, self.outputs = self.base_cam.raw_maps(
            call, lambda out: batched_target(targets, out, call.batch), eigen_smooth
        )
        size = tuple(call.image.shape[2:])
        per_layer = [self.base_cam.postprocess([cam], size) for cam in cams]
        return NativeRefineCAM.fuse_cams(per_layer, size)


class SESS(_OnBase):
    r"""pytorch-grad-cam's ``SESS`` (Saliency Enhancing with Scaling and Sliding) on :class:`camkit.methods.SESS`.

    The input is resized to several scales, a window slides over each, the base method's map of
    every patch is weighted by the patch's class score, pasted back and fused (mean above ``theta``
    or max), blurred and min-max normalized; see :class:`camkit.methods.SESS` for the formula.
    Tyagi et al., ECCV 2022, arXiv:2207.01769. camkit batches the patches of all scales and images
    together (``batch_size`` per forward) where the peer loops over images.

    Args:
        model: the model.
        target_layers: list of modules (or dotted names) of the base method.
        reshape_transform: maps a layer's activations to ``(N, C, *S)``.
        base_method: a method class of this front door (default :class:`GradCAM`).
        scales: shorter-side sizes; default ``num_scales`` from the window in steps of
            ``round(scale_step_ratio * window_size)``.
        num_scales: number of default scales.
        scale_step_ratio: default scale step as a fraction of the window.
        window_size: window side; default the input's shorter side.
        step_size: window stride; default ``window_size``.
        pre_filter_ratio: fraction of the lowest-scoring patches dropped, in ``[0, 1)``.
        theta: threshold of the mean fusion.
        pool: ``"mean"`` or ``"max"``.
        smooth: 11×11 Gaussian blur (σ = 5) of the fused map.
        use_softmax_scores: score patches by softmax probabilities (else raw scores, clipped at 0).
        batch_size: patches per forward.
        **kwargs: constructor arguments of ``base_method``.

    Raises:
        TypeError: for a bad ``base_method`` or an argument it does not take.
        ValueError: for invalid options.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with SESS(model, [model.layer4[-1]], scales=[64, 80], step_size=16) as cam:
        ...     maps = cam(torch.rand(1, 3, 64, 64))
        >>> maps.shape
        (1, 64, 64)
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: LayerSpec,
        reshape_transform: Transform = None,
        base_method: type[CAMMethod] = GradCAM,
        scales: Sequence[int] | None = None,
        num_scales: int = 12,
        scale_step_ratio: float = 2.0 / 7.0,
        window_size: int | None = None,
        step_size: int | None = None,
        pre_filter_ratio: float = 0.0,
        theta: float = 0.0,
        pool: str = "mean",
        smooth: bool = True,
        use_softmax_scores: bool = True,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        self.base_cam = _base_class(base_method, "SESS")(model, target_layers, reshape_transform, **kwargs)
        self.settings: dict[str, Any] = {
            "scales": scales,
            "num_scales": num_scales,
            "scale_step_ratio": scale_step_ratio,
            "window_size": window_size,
            "step": step_size,
            "pre_filter_ratio": pre_filter_ratio,
            "theta": theta,
            "fusion": pool,
            "smooth": smooth,
            "use_softmax_scores": use_softmax_scores,
            "batch_size": batch_size,
        }
        if self.base_cam.layer_names is not None:
            self._native(self.base_cam.layer_names, (3, 224, 224), False)  # validates the options now

    def _native(self, names: list[str], input_shape: Sequence[int], eigen_smooth: bool) -> NativeSESS:
        options = dict(self.base_cam.options)
        options["eigen_smooth"] = eigen_smooth
        if self.base_cam.reshape_transform is not None:
            options["reshape_transform"] = self.base_cam.reshape_transform
        return NativeSESS(
            self.model, names, self.base_cam.spec.name, input_shape=input_shape, **self.settings, **options
        )

    def compute(
        self, input_tensor: Tensor, targets: Sequence[PerSampleTarget] | None = None, eigen_smooth: bool = False
    ) -> Tensor:
        """Like :meth:`__call__` but returns the tensor, on the model's device.

        Args:
            input_tensor: images ``(N, C, H, W)``.
            targets: one per-image target per image (or one for all), or ``None`` for the top class.
            eigen_smooth: first principal component instead of the weighted sum.

        Returns:
            The maps.
        """
        call = self.base_cam.prepare(input_tensor)
        if not call.single:
            raise TypeError("SESS re-scales and tiles its input: pass one input tensor (N, C, H, W)")
        x = call.image
        sess = self._native(self.base_cam.layers_for(x), tuple(x.shape[1:]), eigen_smooth)
        if targets is None:
            return sess(x)
        return sess(x, targets=batched_target(targets, None, x.shape[0]))
