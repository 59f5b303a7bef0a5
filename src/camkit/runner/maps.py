"""The maps of one batch: the single place where a run turns inputs into maps.

Example:
    >>> import torch
    >>> choose = chooser(("topk", 2), [None, None])
    >>> choose(torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])).tolist()
    [[1, 2], [0, 2]]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camkit.explanation import extractor_class
from camkit.extractor import CAMExtractor
from camkit.registry import get_method
from camkit.targets import logits_of

__all__ = ["batch_maps", "chooser"]


def batch_maps(
    model: nn.Module,
    x: Tensor,
    methods: Sequence[str],
    layers: Mapping[str, list[str]],
    choose: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The maps of every method for one batch, at the target layer's resolution.

    The first method's forward also gives the predictions, from which ``choose`` picks the
    classes to explain; every further method runs its own forward. Forwards run on the lean path
    (:meth:`~camkit.extractor.HookedExtractor.lean`: no autograd graph before the target layers),
    gradient-free methods without autograd at all, as :func:`camkit.explain` runs them.

    Args:
        model: the model, in eval mode, on ``x``'s device.
        x: the inputs ``(N, C, H, W)``.
        methods: registry names.
        layers: method → resolved target layer names.
        choose: probabilities ``(N, classes)`` → the classes to explain ``(N, K)``.

    Returns:
        The softmax probabilities ``(N, classes)``, the explained classes ``(N, K)`` and method →
        maps ``(N, K, h, w)`` in ``[0, 1]`` (the layers of a multi-layer method fused).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
        >>> probs, classes, maps = batch_maps(net, torch.rand(2, 3, 8, 8), ["gradcam"], {"gradcam": ["0"]},
        ...                                   chooser(("topk", 2), [None, None]))
        >>> probs.shape, classes.shape, maps["gradcam"].shape
        (torch.Size([2, 3]), torch.Size([2, 2]), torch.Size([2, 2, 6, 6]))
    """
    probabilities: Tensor | None = None
    classes: Tensor | None = None
    maps: dict[str, Tensor] = {}
    shape = tuple(x.shape[1:])
    for name in methods:
        build = extractor_class(name)
        extra: dict[str, Any] = {"method": name} if build is CAMExtractor else {}
        options: dict[str, Any] = {"batch_size": x.shape[0], "progress": False, **extra}
        with build(model, target_layer=list(layers[name]), input_shape=shape, **options) as extractor:
            # no autograd graph before the target layers; none at all for gradient-free methods
            with extractor.lean() if get_method(name).needs_gradients else torch.no_grad():
                scores = model(x)
            if classes is None:
                probabilities = logits_of(scores).detach().float().softmax(dim=1)
                classes = choose(probabilities)
            last = classes.shape[1] - 1
            per_class = [
                extractor.fuse_cams(extractor(classes[:, k].tolist(), scores, retain_graph=k < last))
                for k in range(classes.shape[1])
            ]
        maps[name] = torch.stack(per_class, dim=1).detach()
    assert probabilities is not None
    assert classes is not None
    return probabilities, classes, maps


def chooser(rule: tuple[str, int], labels: list[int | None]) -> Callable[[Tensor], Tensor]:
    """The classes to explain, from the probabilities ``(N, classes)``: ``(N, K)`` indices.

    Args:
        rule: a parsed target (:func:`camkit.runner.data.parse_target`).
        labels: the batch's labels (for ``("label", 1)``).

    Returns:
        A function of the probabilities; it raises ``ValueError`` for a class out of range.
    """
    kind, value = rule

    def choose(probabilities: Tensor) -> Tensor:
        count, classes = probabilities.shape
        if kind == "topk":
            return probabilities.topk(min(value, classes), dim=1).indices
        picked = [value] * count if kind == "class" else [int(label or 0) for label in labels]
        wrong = [c for c in picked if not 0 <= c < classes]
        if wrong:
            what = f"target class:{value}" if kind == "class" else f"label {wrong[0]} (--target label)"
            raise ValueError(
                f"{what} is out of range: the model has {classes} classes (0..{classes - 1}); "
                + (
                    "pick a class in range"
                    if kind == "class"
                    else "the class sub-folders must follow the model's classes"
                )
            )
        return torch.tensor(picked, device=probabilities.device).view(-1, 1)

    return choose
