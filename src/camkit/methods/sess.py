r"""SESS: Saliency Enhancing with Scaling and Sliding, a meta method that runs its own forwards.

Re-exported by :mod:`camkit.methods.wrappers`; kept in its own file for size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camkit import ops
from camkit.engine import CAMExtractor, LayerSpec, Lifecycle, eval_mode, paused, resolve_layers
from camkit.registry import get_method
from camkit.targets import ClassTarget, Target, logits_of

__all__ = ["SESS"]


class _RowsTarget:
    """A user target seen from a batch of patches: patch ``b`` belongs to image ``rows[b]``."""

    def __init__(self, target: Target, rows: Tensor) -> None:
        self.target, self.rows = target, rows

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        return self.target(output, self.rows if rows is None else self.rows[rows.to(self.rows.device)])


def _resize_short_side(x: Tensor, scale: int) -> Tensor:
    """Resize ``(N, C, H, W)`` so that the shorter side is ``scale`` (torchvision's ``resize(x, scale)``)."""
    h, w = x.shape[-2:]
    size = (scale, int(scale * w / h)) if h <= w else (int(scale * h / w), scale)
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _window_starts(length: int, step: int, window: int) -> list[int]:
    """Window starts covering ``length``; the last window is shifted back inside the border."""
    starts = list(range(0, max(length - window, 0), step))
    return [*starts, max(length - window, 0)]


def _gaussian_blur(maps: Tensor, ksize: int = 11, sigma: float = 5.0) -> Tensor:
    """Separable Gaussian blur of ``(N, H, W)`` with mirrored borders (OpenCV's default border)."""
    r = ksize // 2
    t = torch.arange(ksize, dtype=maps.dtype, device=maps.device) - r
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    mode = "reflect" if min(maps.shape[-2:]) > r else "replicate"
    y = F.pad(maps[:, None], (r, r, r, r), mode=mode)
    y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return y[:, 0]


class SESS(Lifecycle):
    r"""SESS: Saliency Enhancing with Scaling and Sliding (Tyagi et al., ECCV 2022, arXiv:2207.01769).

    The input is resized to several scales (shorter side ``s``), a ``window_size`` window slides over
    each with stride ``step``, and the base method's map :math:`L_p` of every patch :math:`p` (all
    patches ``batch_size`` per forward) is weighted by the patch's class score :math:`s_p` (softmax
    probability, clipped at 0, divided by the image's best patch score), pasted back where the patch
    came from and resized to the input. With ``pre_filter_ratio`` :math:`r` only the
    :math:`\lceil (1 - r) P \rceil` best-scoring patches of an image are explained. Fusion:

    .. math:: L(x) = \frac{\sum_p \hat L_p(x)\, [\hat L_p(x) > \theta]}{\sum_p [\hat L_p(x) > \theta]},
              \qquad \hat L_p = \mathrm{paste}_p\Big(\tfrac{s_p}{\max_q s_q}\, U(L_p)\Big)

    (``fusion="mean"``, 0 where no patch counts) or :math:`\max_p \hat L_p` (``"max"``); then an
    11×11 Gaussian blur (:math:`\sigma = 5`, ``smooth=True``) and min-max normalization per image.
    Several target layers: per patch the mean of their normalized maps, normalized (as
    pytorch-grad-cam). Parameters as pytorch-grad-cam 1.5.7's ``SESS`` (its ``step_size`` is
    ``step``, ``pool`` is ``fusion``); camkit batches patches of all scales and images together,
    runs one scoring pass only when pre-filtering, and registers hooks only during a call.

    Args:
        model: the model (its train/eval flags and ``requires_grad`` are restored after a call).
        target_layer: layer(s) of the base method; ``None`` picks one from ``input_shape``.
        method: registry name of the base method.
        input_shape: input shape without batch dim, for automatic layer choice.
        scales: shorter-side sizes; default ``num_scales`` sizes from ``window_size`` in steps of
            ``round(scale_step_ratio * window_size)``.
        num_scales: number of default scales.
        scale_step_ratio: default scale step, as a fraction of the window.
        window_size: window side; default the input's shorter side.
        step: window stride; default ``window_size``.
        pre_filter_ratio: fraction of the lowest-scoring patches dropped, in ``[0, 1)``.
        theta: threshold of the mean fusion.
        fusion: ``"mean"`` or ``"max"``.
        smooth: Gaussian blur of the fused map.
        use_softmax_scores: score patches with softmax probabilities (else raw scores).
        batch_size: patches per forward.
        **method_options: options of the base method.

    Raises:
        ValueError: for invalid options or an unknown method or layer.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with SESS(model, "layer4", scales=[64, 80], window_size=64, step=16) as sess:
        ...     maps = sess(torch.rand(1, 3, 64, 64), class_idx=3)
        >>> maps.shape
        torch.Size([1, 64, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        method: str = "gradcam",
        *,
        input_shape: Sequence[int] = (3, 224, 224),
        scales: Sequence[int] | None = None,
        num_scales: int = 12,
        scale_step_ratio: float = 2.0 / 7.0,
        window_size: int | None = None,
        step: int | None = None,
        pre_filter_ratio: float = 0.0,
        theta: float = 0.0,
        fusion: str = "mean",
        smooth: bool = True,
        use_softmax_scores: bool = True,
        batch_size: int = 32,
        **method_options: Any,
    ) -> None:
        if fusion not in ("mean", "max"):
            raise ValueError(f"fusion must be 'mean' or 'max', got {fusion!r}")
        if not 0.0 <= pre_filter_ratio < 1.0:
            raise ValueError(f"pre_filter_ratio must be in [0, 1), got {pre_filter_ratio!r}")
        for name, value in (("num_scales", num_scales), ("window_size", window_size), ("step", step)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if scales is not None and (not scales or any(not isinstance(s, int) or s < 1 for s in scales)):
            raise ValueError(f"scales must be a non-empty list of positive ints, got {scales!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.spec = get_method(method)
        self.model = model
        self.target_names = resolve_layers(model, target_layer, input_shape)
        self.scales, self.num_scales, self.scale_step_ratio = scales, num_scales, scale_step_ratio
        self.window_size, self.step, self.pre_filter_ratio = window_size, step, pre_filter_ratio
        self.theta, self.fusion, self.smooth = theta, fusion, smooth
        self.use_softmax_scores, self.batch_size = use_softmax_scores, batch_size
        self.method_options = method_options

    def scales_for(self, window: int) -> list[int]:
        """The shorter-side sizes used for a window of side ``window``."""
        if self.scales is not None:
            return list(self.scales)
        step = round(window * self.scale_step_ratio)
        return [window + step * i for i in range(self.num_scales)]

    def __call__(self, x: Tensor, class_idx: int | Sequence[int] | None = None, *, targets: Any = None) -> Tensor:
        """SESS maps of ``x``.

        Args:
            x: images ``(N, C, H, W)``.
            class_idx: class to explain, one int or one per image; ``None``: each image's top class.
            targets: a camkit target (``target(output, rows) -> (B,)``) instead of ``class_idx``.

        Returns:
            Maps ``(N, H, W)`` in ``[0, 1]``, on ``x``'s device.

        Raises:
            ValueError: for a bad input, both ``class_idx`` and ``targets``, or a scale below the window.
        """
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise ValueError(f"SESS needs images (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
        if class_idx is not None and targets is not None:
            raise ValueError("pass class_idx or targets, not both")
        x = x.detach()
        n, (h, w) = x.shape[0], x.shape[-2:]
        window = self.window_size or min(h, w)
        step = self.step or window
        with eval_mode(self.model):
            classes = None
            if targets is None:
                if class_idx is None:
                    with paused(), torch.inference_mode():
                        class_idx = logits_of(self.model(x)).argmax(1).tolist()
                classes = ClassTarget(class_idx).classes(n)
            scaled: list[Tensor] = []
            table: list[tuple[int, int, int]] = []  # table: (scale index, x1, y1) per patch
            for s in self.scales_for(window):
                image = _resize_short_side(x, s)
                if min(image.shape[-2:]) < window:
                    raise ValueError(f"every scale must be at least window_size={window}, got {s}")
                table += [
                    (len(scaled), x1, y1)
                    for y1 in _window_starts(image.shape[-2], step, window)
                    for x1 in _window_starts(image.shape[-1], step, window)
                ]
                scaled.append(image)
            fused = self._run(x, scaled, table, window, classes, targets)
        if self.smooth:
            fused = _gaussian_blur(fused)
        return ops.normalize(fused)

    def _target(self, rows: Tensor, classes: Tensor | None, targets: Any) -> Target:
        return ClassTarget(classes[rows].tolist()) if classes is not None else _RowsTarget(targets, rows)

    def _score(self, out: Any, rows: Tensor, classes: Tensor | None, targets: Any) -> Tensor:
        y = logits_of(out).detach()
        y = torch.softmax(y, dim=-1) if self.use_softmax_scores else y
        return self._target(rows, classes, targets)(y).detach().clamp(min=0)

    def _run(
        self,
        x: Tensor,
        scaled: list[Tensor],
        table: list[tuple[int, int, int]],
        window: int,
        classes: Any,
        targets: Any,
    ) -> Tensor:
        n, p = x.shape[0], len(table)
        ids = torch.arange(n * p)

        def chunks(t: Tensor) -> tuple[Tensor, ...]:
            return torch.split(t, self.batch_size)

        def patches(chunk: Tensor) -> Tensor:
            return torch.stack(
                [
                    scaled[table[k][0]][i, :, table[k][2] : table[k][2] + window, table[k][1] : table[k][1] + window]
                    for i, k in zip((chunk // p).tolist(), (chunk % p).tolist(), strict=True)
                ]
            )

        scores = torch.zeros(n * p, dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
        if self.pre_filter_ratio > 0:
            with paused(), torch.inference_mode():
                for chunk in chunks(ids):
                    scores[chunk] = self._score(self.model(patches(chunk)), chunk // p, classes, targets).to(scores)
            drop = int(p * self.pre_filter_ratio)
            order = scores.view(n, p).argsort(dim=1, stable=True)[:, drop:]
            ids = (order + torch.arange(n, device=order.device)[:, None] * p).flatten().sort().values.cpu()
        maps: list[list[Tensor]] = []
        with CAMExtractor(
            self.model, self.target_names, method=self.spec.name, batch_size=self.batch_size, **self.method_options
        ) as extractor:
            for chunk in chunks(ids):
                rows = chunk // p
                grad = torch.enable_grad() if self.spec.needs_gradients else torch.no_grad()
                with extractor.capture.recording(), grad:
                    out = self.model(patches(chunk))
                    maps.append(extractor(scores=out, targets=self._target(rows, classes, targets)))
                if self.pre_filter_ratio == 0:
                    scores[chunk] = self._score(out, rows, classes, targets).to(scores)
        best = scores.view(n, p).amax(dim=1)
        weights = torch.where(best[:, None] > 0, scores.view(n, p) / best.clamp(min=1e-30)[:, None], 1.0).flatten()
        return self._fuse(x, scaled, table, window, ids, maps, weights)

    def _fuse(
        self,
        x: Tensor,
        scaled: list[Tensor],
        table: list[tuple[int, int, int]],
        window: int,
        ids: Tensor,
        maps: list[list[Tensor]],
        weights: Tensor,
    ) -> Tensor:
        n, p, (h, w) = x.shape[0], len(table), x.shape[-2:]
        dtype = maps[0][0].dtype if maps[0][0].is_floating_point() else torch.float32
        total = torch.zeros(n, h, w, dtype=dtype, device=x.device)
        count = torch.zeros_like(total)
        for chunk, layer_maps in zip(torch.split(ids, self.batch_size), maps, strict=True):
            per_layer = [ops.upsample(m, (window, window)) for m in layer_maps]
            cams = per_layer[0] if len(per_layer) == 1 else ops.normalize(torch.stack(per_layer).mean(dim=0))
            cams = cams * weights[chunk.to(weights.device)].to(cams)[:, None, None]
            kinds = [table[k][0] for k in (chunk % p).tolist()]
            for s in sorted(set(kinds)):
                pick = [j for j, kind in enumerate(kinds) if kind == s]
                canvas = cams.new_zeros(len(pick), *scaled[s].shape[-2:])
                for j, c in enumerate(pick):
                    _, x1, y1 = table[int(chunk[c]) % p]
                    canvas[j, y1 : y1 + window, x1 : x1 + window] = cams[c]
                pasted = ops.upsample(canvas, (h, w))
                rows = (chunk[pick] // p).to(x.device)
                if self.fusion == "max":
                    for r in torch.unique(rows).tolist():
                        total[r] = torch.maximum(total[r], pasted[rows == r].amax(dim=0))
                else:
                    mask = (pasted > self.theta).to(pasted.dtype)
                    total.index_add_(0, rows, pasted * mask)
                    count.index_add_(0, rows, mask)
        if self.fusion == "max":
            return total
        return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))

    def __repr__(self) -> str:
        return f"SESS(method={self.spec.name!r}, target_layer={self.target_names}, fusion={self.fusion!r})"
