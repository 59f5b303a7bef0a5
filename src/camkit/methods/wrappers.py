r"""Meta methods on any camkit extractor: RefineCAM, Finer-CAM (TorchCAM 0.5's wrapper API) and SESS.

Pass the wrappers a model (they build ``base_method``) or an extractor that is already built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camkit import ops
from camkit.engine import CAMExtractor, HookedExtractor, LayerSpec
from camkit.methods import gradient  # noqa: F401  (registers gradcam and gradcampp before their classes are made)
from camkit.methods._classes import extractor_class
from camkit.methods.sess import SESS
from camkit.targets import ClassTarget, Target, logits_of

GradCAM = extractor_class("gradcam")
GradCAMpp = extractor_class("gradcampp")

__all__ = ["SESS", "FinerCAM", "FinerWeightedTarget", "RefineCAM", "most_similar_classes"]

Shape = Sequence[int]
Classes = int | Sequence[int] | None


class _Wrapper(HookedExtractor):
    """Lifecycle of a wrapper: the base extractor's capture is its own (one set of hooks)."""

    def __init__(
        self, model: nn.Module | CAMExtractor, target_layer: LayerSpec, input_shape: Shape, base_method: Any, kw: Any
    ) -> None:
        if isinstance(model, CAMExtractor):
            if target_layer is not None or kw:
                raise ValueError("pass either a built extractor alone, or a model with target_layer and options")
            self.base_cam = model
        elif not (isinstance(base_method, type) and issubclass(base_method, CAMExtractor)):
            raise TypeError(
                f"base_method must be a CAM extractor class (e.g. GradCAM, GradCAMpp, or LayerCAM from "
                f"camkit.methods), got {base_method!r}"
            )
        else:
            self.base_cam = base_method(model, target_layer, input_shape=input_shape, **kw)
        self._capture = self.base_cam.capture

    model = property(lambda self: self.base_cam.model, doc="The model of the base extractor.")
    target_names = property(lambda self: self.base_cam.target_names, doc="The base extractor's layer names.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_method={type(self.base_cam).__name__}, target_layer={self.target_names})"


class RefineCAM(_Wrapper):
    r"""RefineCAM: the product of the normalized maps of several layers ("How to Evaluate and Refine your CAM").

    .. math:: L = \mathcal{N}\Big(\prod_{l} U\big(\mathcal{N}(\mathrm{ReLU}(L_l))\big)\Big),
              \qquad \mathcal{N}(M) = \frac{M - \min M}{\max M - \min M}

    where :math:`L_l` is the base method's map at layer :math:`l` and :math:`U` resizes (bilinear)
    to ``target_shape`` (default: the largest layer's size). Deep layers localize, early layers add
    detail; the product keeps only what all layers agree on. arXiv:2605.14641. Same API as TorchCAM
    0.5's ``RefineCAM`` (default base Grad-CAM++). pytorch-grad-cam 1.5.7 means to do the same but
    its normalization loop rebinds the loop variable (``for cam in ...: cam = cam / max``) and so
    changes nothing; its per-layer maps are already min-max scaled, so the effect is small. It also
    resizes each map to the input size before the product (pass ``target_shape=x.shape[2:]``).

    Args:
        model: the model, or an extractor already built on two or more layers (then nothing else).
        target_layer: two or more layers (modules or names).
        input_shape: input shape without batch dim, for automatic layer choice.
        base_method: the camkit extractor class that computes the per-layer maps.
        **base_kwargs: options of ``base_method``.

    Raises:
        ValueError: with fewer than two layers.
        TypeError: for a ``base_method`` that is not a camkit extractor class.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with RefineCAM(model, ["layer3", "layer4"]) as extractor:
        ...     cams = extractor(class_idx=1, scores=model(torch.rand(1, 3, 64, 64)))
        >>> cams[0].shape
        torch.Size([1, 4, 4])
    """

    def __init__(
        self,
        model: nn.Module | CAMExtractor,
        target_layer: LayerSpec = None,
        input_shape: Shape = (3, 224, 224),
        *,
        base_method: type[CAMExtractor] = GradCAMpp,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, input_shape, base_method, base_kwargs)
        if len(self.target_names) < 2:
            self.base_cam.remove_hooks()
            raise ValueError(f"RefineCAM needs at least two target layers, got {self.target_names}")

    def __call__(
        self,
        class_idx: Classes = None,
        scores: Any = None,
        normalized: bool = True,
        target_shape: Shape | None = None,
        retain_graph: bool = False,
        *,
        targets: Target | None = None,
    ) -> list[Tensor]:
        """Refined map of the last forward: ``[map (N, *target_shape)]`` (arguments as the base extractor's).

        ``target_shape`` is the output size (default: the largest layer's size).
        """
        cams = self.base_cam(class_idx, scores, normalized=True, retain_graph=retain_graph, targets=targets)
        return [self.fuse_cams(cams, target_shape, normalized)]

    compute_cams = __call__

    @staticmethod
    @torch.no_grad()
    def fuse_cams(cams: list[Tensor], target_shape: Shape | None = None, normalized: bool = True) -> Tensor:
        """Normalize each map, resize them to one shape and multiply them.

        Args:
            cams: one map ``(N, *S_l)`` per layer.
            target_shape: output size; default the largest size along each dim.
            normalized: min-max normalize the product.

        Returns:
            The refined map ``(N, *target_shape)``.

        Raises:
            TypeError: if ``cams`` is not a list of tensors.
            ValueError: on an empty list.
        """
        if not isinstance(cams, list) or not all(isinstance(c, Tensor) for c in cams):
            raise TypeError("cams must be the list of tensors returned by the extractor")
        if not cams:
            raise ValueError("cams is empty: pass the list of maps returned by the extractor")
        size = target_shape or tuple(max(s) for s in zip(*(c.shape[1:] for c in cams), strict=True))
        refined = torch.stack([ops.upsample(ops.normalize(torch.relu(c)), size) for c in cams]).prod(dim=0)
        return ops.normalize(refined) if normalized else refined


def most_similar_classes(scores: Tensor, class_idx: Classes = None, ranks: Sequence[int] = (1, 2, 3)) -> Tensor:
    r"""The classes whose scores are closest to the target's: ranks of :math:`|Y^{(d)} - Y^{(c)}|`, target excluded.

    Args:
        scores: model output ``(N, K)``.
        class_idx: target class, one int or one per sample; ``None`` takes each sample's top class.
        ranks: which neighbours, 1 = the closest other class (pytorch-grad-cam's ``comparison_categories``).

    Returns:
        Long tensor ``(N, len(ranks))``.

    Raises:
        ValueError: for a rank outside ``1..K-1`` or bad scores.

    Example:
        >>> most_similar_classes(torch.tensor([[5.0, 1.0, 4.5, 0.0]]), 0, ranks=[1, 2])
        tensor([[2, 1]])
    """
    y = logits_of(scores).detach()
    if y.ndim != 2:
        raise ValueError(f"scores must have shape (N, num_classes), got {tuple(y.shape)}")
    if not ranks or any(isinstance(r, bool) or not 1 <= r < y.shape[1] for r in ranks):
        raise ValueError(f"ranks must be non-empty ints in 1..{y.shape[1] - 1}, got {list(ranks)!r}")
    main = y.argmax(1) if class_idx is None else ClassTarget(class_idx).classes(*y.shape).to(y.device)
    distance = (y - y.gather(1, main[:, None])).abs().scatter(1, main[:, None], float("inf"))
    order = distance.argsort(dim=1, stable=True)
    return order[:, [r - 1 for r in ranks]]


class FinerWeightedTarget:
    r"""Finer-CAM's objective: the target score against its most similar classes.

    .. math:: s = \sum_{d \in D} w_d \big(Y^{(c)} - \alpha\, Y^{(d)}\big)
              = Y^{(c)} - \alpha \sum_{d \in D} w_d\, Y^{(d)},
              \qquad w_d = \frac{p_d}{\sum_{d' \in D} p_{d'}},\ p = \mathrm{softmax}(Y)

    (``weighting="softmax"``, the authors' released code and pytorch-grad-cam's
    ``FinerWeightedTarget``; gradients flow through :math:`w` as there) or :math:`w_d = 1/|D|`
    (``"uniform"``, TorchCAM 0.5's ``FinerCAM``). :math:`w` is computed as a softmax over the
    comparison scores, which equals :math:`p_d / \sum p` exactly (pytorch-grad-cam adds ``1e-9`` to
    the denominator). Zhang et al., "Finer-CAM: Spotting the Difference Reveals Finer Details for
    Visual Explanation", CVPR 2025, arXiv:2501.11309.

    Args:
        main_category: target class :math:`c`: one int, or one per sample.
        comparison_categories: classes :math:`D`: a list shared by all samples, or one list per sample.
        alpha: comparison strength :math:`\alpha` (0 gives the plain class score).
        weighting: ``"softmax"`` or ``"uniform"``.

    Raises:
        ValueError: on negative or empty categories, a target among its comparisons, a bad ``alpha``.

    Example:
        >>> t = FinerWeightedTarget(0, [1, 2], alpha=1.0, weighting="uniform")
        >>> t(torch.tensor([[3.0, 1.0, 2.0]]))
        tensor([1.5000])
    """

    def __init__(
        self, main_category: Any, comparison_categories: Any, alpha: float = 1.0, weighting: str = "softmax"
    ) -> None:
        self.main = torch.as_tensor(main_category, dtype=torch.long)
        self.comparisons = torch.as_tensor(comparison_categories, dtype=torch.long)
        if self.main.ndim > 1 or self.comparisons.ndim not in (1, 2) or self.comparisons.shape[-1] == 0:
            raise ValueError("main_category must be an int or one per sample; comparison_categories a non-empty list")
        if (self.main < 0).any() or (self.comparisons < 0).any():
            raise ValueError("categories must be >= 0")
        per_sample = self.comparisons.ndim == 2
        if per_sample and self.main.ndim == 1 and len(self.main) != len(self.comparisons):
            raise ValueError("main_category and comparison_categories give different numbers of samples")
        cmp = self.comparisons if per_sample else self.comparisons[None]
        if (cmp == self.main.reshape(-1, 1)).any():
            raise ValueError("comparison_categories contain the target class")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number, got {alpha!r}")
        if weighting not in ("softmax", "uniform"):
            raise ValueError(f"weighting must be 'softmax' or 'uniform', got {weighting!r}")
        self.alpha = float(alpha)
        self.weighting = weighting

    def _rows(self, value: Tensor, batch: int, rows: Tensor | None, shared: bool) -> Tensor:
        if shared:
            return value.expand(batch, *value.shape)
        if rows is not None:
            return value[rows.to(value.device)]
        if len(value) != batch:
            raise ValueError(f"FinerWeightedTarget has categories for {len(value)} samples, the output {batch} rows")
        return value

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """The objective per output row ``(B,)`` (a scalar for one sample's 1-D scores)."""
        y = logits_of(output)
        single = y.ndim == 1
        y = y[None] if single else y
        if y.ndim != 2:
            raise ValueError(f"class scores must have shape (N, num_classes), got {tuple(y.shape)}")
        main = self._rows(self.main, len(y), rows, self.main.ndim == 0).to(y.device)
        comparisons = self._rows(self.comparisons, len(y), rows, self.comparisons.ndim == 1).to(y.device)
        if max(int(main.max()), int(comparisons.max())) >= y.shape[1]:
            raise ValueError(f"a category is out of range for {y.shape[1]} classes")
        yc, yd = y.gather(1, main[:, None])[:, 0], y.gather(1, comparisons)
        w = torch.softmax(yd, dim=1) if self.weighting == "softmax" else torch.full_like(yd, 1 / yd.shape[1])
        value = yc - self.alpha * (w * yd).sum(dim=1)
        return value[0] if single else value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.main.tolist()}, {self.comparisons.tolist()}, alpha={self.alpha})"


def _index(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must contain integers (class indices), got {value!r}")
    return value


def _class_list(class_idx: Any, batch: int, classes: int) -> list[int]:
    """``class_idx`` (an int or one per sample) as one checked class per sample."""
    if isinstance(class_idx, bool) or not isinstance(class_idx, (int, list, tuple)):
        raise TypeError(f"class_idx must be an integer or a list of integers (one per sample), got {class_idx!r}")
    if isinstance(class_idx, int):
        main = [class_idx] * batch
    else:
        main = [_index(c, "class_idx") for c in class_idx]
        if len(main) != batch:
            raise ValueError(
                f"expected batch size and length of class_idx to be the same: {len(main)} classes, batch {batch}"
            )
    if any(not 0 <= c < classes for c in main):
        raise ValueError(f"class_idx contains an out-of-range index for {classes} classes: {class_idx!r}")
    return main


def _comparison_lists(comparison_idx: Any, main: list[int], classes: int) -> list[list[int]]:
    """``comparison_idx`` (an int, one shared list, or one list per sample) as checked per-sample lists."""
    batch = len(main)
    if isinstance(comparison_idx, bool) or not isinstance(comparison_idx, (int, list, Tensor)):
        raise TypeError(
            f"comparison_idx must be an integer, a list, or a nested list (one list per sample), got {comparison_idx!r}"
        )
    if isinstance(comparison_idx, Tensor):
        comparison_idx = comparison_idx.tolist()
    if isinstance(comparison_idx, int):
        comparison_idx = [comparison_idx]
    if not comparison_idx:
        raise ValueError("comparison_idx cannot be empty: pass at least one comparison class, or None")
    if all(isinstance(c, list) for c in comparison_idx):
        if len(comparison_idx) != batch:
            raise ValueError(
                f"per-sample comparison_idx must match the batch size: {len(comparison_idx)} lists, batch {batch}"
            )
        if any(not row for row in comparison_idx):
            raise ValueError("comparison_idx rows cannot be empty: give each sample at least one comparison class")
        if len({len(row) for row in comparison_idx}) != 1:
            raise ValueError("per-sample comparison_idx rows must have equal lengths")
        rows = [list(row) for row in comparison_idx]
    elif any(isinstance(c, list) for c in comparison_idx):
        raise TypeError(
            "comparison_idx must contain integers or lists of integers, not both: e.g. [2, 3] or [[2, 3], [0, 3]]"
        )
    else:
        rows = [list(comparison_idx)] * batch
    for sample, (row, target) in enumerate(zip(rows, main, strict=True)):
        row = [_index(c, "comparison_idx") for c in row]
        if any(not 0 <= c < classes for c in row):
            raise ValueError(f"comparison_idx contains an out-of-range index for sample {sample} ({classes} classes)")
        if len(set(row)) != len(row):
            raise ValueError(f"comparison_idx contains duplicates for sample {sample}: {row}")
        if target in row:
            raise ValueError(f"comparison_idx contains the target class {target} for sample {sample}")
    return rows


class FinerCAM(_Wrapper):
    r"""Finer-CAM: the base method explains :class:`FinerWeightedTarget` instead of the class score.

    .. math:: s = Y^{(c)} - \gamma \sum_{d \in D} w_d\, Y^{(d)}

    with :math:`D` the ``num_references`` classes whose scores are closest to :math:`Y^{(c)}`
    (or ``comparison_idx``) and :math:`w` as in :class:`FinerWeightedTarget`. Any method that
    explains a target score works (gradient and perturbation families). Zhang et al., CVPR 2025,
    arXiv:2501.11309. TorchCAM 0.5's API; differences: ``weighting="softmax"`` by default (the
    authors' code and pytorch-grad-cam; ``"uniform"`` reproduces TorchCAM 0.5), any base method,
    and ``class_idx=None`` explains each sample's top class (as pytorch-grad-cam).

    Args:
        model: the model, or an extractor already built (then nothing else).
        target_layer: layer(s) to explain.
        input_shape: input shape without batch dim, for automatic layer choice.
        base_method: the camkit extractor class.
        gamma: comparison strength (TorchCAM's name; pytorch-grad-cam's ``alpha``).
        num_references: number of automatic comparison classes.
        weighting: ``"softmax"`` or ``"uniform"``.
        **base_kwargs: options of ``base_method``.

    Raises:
        ValueError: for a negative ``gamma``, ``num_references < 1`` or an activation-only method.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with FinerCAM(model, "layer4", gamma=1.0) as extractor:
        ...     scores = model(torch.rand(2, 3, 64, 64))
        ...     cams = extractor([1, 2], scores)
        >>> cams[0].shape
        torch.Size([2, 2, 2])
    """

    def __init__(
        self,
        model: nn.Module | CAMExtractor,
        target_layer: LayerSpec = None,
        input_shape: Shape = (3, 224, 224),
        *,
        base_method: type[CAMExtractor] = GradCAM,
        gamma: float = 0.6,
        num_references: int = 3,
        weighting: str = "softmax",
        **base_kwargs: Any,
    ) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
            raise TypeError(f"gamma must be a real number (e.g. 0.6), got {gamma!r} ({type(gamma).__name__})")
        if not 0 <= gamma < math.inf:
            raise ValueError(f"gamma must be finite and non-negative (e.g. 0.6), got {gamma!r}")
        if isinstance(num_references, bool) or not isinstance(num_references, int):
            raise TypeError(
                f"num_references must be an integer (e.g. 3), got {num_references!r} ({type(num_references).__name__})"
            )
        if num_references < 1:
            raise ValueError(f"num_references must be positive (e.g. 3), got {num_references!r}")
        FinerWeightedTarget(0, [1], weighting=weighting)  # validates weighting
        super().__init__(model, target_layer, input_shape, base_method, base_kwargs)
        if self.base_cam.spec.family == "activation":
            self.base_cam.remove_hooks()
            raise ValueError(f"FinerCAM needs a method that explains a target score, not {self.base_cam.spec.name!r}")
        self.gamma, self.num_references, self.weighting = float(gamma), num_references, weighting

    def target(self, scores: Any, class_idx: Classes = None, comparison_idx: Any = None) -> FinerWeightedTarget:
        """The Finer-CAM target for a forward's ``scores`` (what the base method explains).

        Args:
            scores: model output ``(N, K)``.
            class_idx: target class(es); ``None``: each sample's top class.
            comparison_idx: comparison classes (an int, a shared list, or one list per sample);
                ``None``: the ``num_references`` closest scores.

        Returns:
            A :class:`FinerWeightedTarget`.

        Raises:
            ValueError: for scores that are not ``(N, K)`` with ``K >= 2``.
        """
        if scores is None:
            raise ValueError("model output scores is required by FinerCAM: call extractor(class_idx, scores=model(x))")
        try:
            y = logits_of(scores).detach()
        except TypeError as exc:
            raise TypeError(f"scores must be a tensor of class scores (N, num_classes): {exc}") from exc
        if y.ndim != 2:
            raise ValueError(f"scores must have shape (batch_size, num_classes), got {tuple(y.shape)}")
        if y.shape[1] < 2:
            raise ValueError(
                f"FinerCAM needs at least one comparison class besides the target, but scores have shape "
                f"{tuple(y.shape)}: use a plain method (e.g. GradCAM) for a single-output model"
            )
        batch, classes = y.shape
        main = y.argmax(1) if class_idx is None else torch.tensor(_class_list(class_idx, batch, classes))
        if comparison_idx is None:
            ranks = range(1, min(self.num_references, classes - 1) + 1)
            comparison_idx = most_similar_classes(y, main.tolist(), ranks)
        else:
            comparison_idx = _comparison_lists(comparison_idx, main.tolist(), classes)
        return FinerWeightedTarget(main, comparison_idx, self.gamma, self.weighting)

    def __call__(
        self,
        class_idx: Classes = None,
        scores: Any = None,
        comparison_idx: Any = None,
        normalized: bool = True,
        retain_graph: bool = False,
        *,
        targets: Any = None,
    ) -> list[Tensor]:
        """Finer-CAM maps of the last forward, one ``(N, *S)`` per layer.

        Args:
            class_idx: target class(es); ``None``: each sample's top class.
            scores: the model output of that forward (required).
            comparison_idx: comparison classes, see :meth:`target`.
            normalized: min-max normalize each map.
            retain_graph: keep the autograd graph.
            targets: not supported (FinerCAM builds its own contrastive target): an error.

        Returns:
            One map per target layer.

        Raises:
            ValueError: without ``scores``, with ``targets``, or for classes that do not fit the scores.
            TypeError: for classes that are not ints (or lists of ints).
        """
        if targets is not None:
            raise ValueError(
                "FinerCAM does not support arbitrary output targets: it explains its own contrastive score; "
                "pass class_idx (and comparison_idx), or call extractor.base_cam(scores=..., targets=...)"
            )
        target = self.target(scores, class_idx, comparison_idx)
        return self.base_cam(scores=scores, normalized=normalized, retain_graph=retain_graph, targets=target)

    compute_cams = __call__

    def fuse_cams(self, cams: list[Tensor], target_shape: Shape | None = None) -> Tensor:
        """Fuse per-layer maps as the base extractor does."""
        return self.base_cam.fuse_cams(cams, target_shape)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, gamma={self.gamma}, num_references={self.num_references})"
