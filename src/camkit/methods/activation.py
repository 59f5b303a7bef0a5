"""Activation methods: weights read from the model's parameters, no gradient, no extra forward."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from camkit.engine import CAMExtractor, LayerSpec
from camkit.registry import MethodContext, Option, register

__all__ = ["CAM", "cam", "resolve_fc_weight"]

logger = logging.getLogger("camkit")
#: models whose automatic head choice was already logged (once per model, not once per batch of a run)
_ANNOUNCED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def resolve_fc_weight(model: nn.Module, fc_layer: nn.Module | str | None) -> Tensor:
    """The ``(num_classes, C)`` weight of the classification head used by CAM.

    With ``fc_layer=None`` the model's only ``nn.Linear`` is used (the choice is logged once per
    model, not on every call); a 1x1 convolution head is accepted when named explicitly.

    Args:
        model: the model.
        fc_layer: the head module, its dotted name, or ``None``.

    Returns:
        The weight matrix, a view of the parameter (not detached: maps computed with
        ``create_graph=True`` reach the head; by default the weighting runs without autograd).

    Raises:
        ValueError: when no single head can be found, naming what to pass.
        TypeError: for an argument of the wrong type.
    """
    modules = dict(model.named_modules())
    if fc_layer is None:
        linear = [name for name, m in modules.items() if isinstance(m, nn.Linear)]
        if len(linear) != 1:
            found = f"{len(linear)} nn.Linear layers ({', '.join(linear[:5])})" if linear else "no nn.Linear"
            raise ValueError(
                f"CAM needs one classification head after global pooling, but the model has {found}; "
                "pass fc_layer=<name of the head> or use a gradient method such as GradCAM"
            )
        if model not in _ANNOUNCED:
            _ANNOUNCED.add(model)
            logger.warning("no fc_layer given: using %r (said once per model)", linear[0])
        module = modules[linear[0]]
    elif isinstance(fc_layer, str):
        if fc_layer not in modules:
            raise ValueError(f"fc_layer {fc_layer!r} is not a submodule name of the model")
        module = modules[fc_layer]
    elif isinstance(fc_layer, nn.Module):
        if not any(m is fc_layer for m in modules.values()):
            raise ValueError("the module passed as fc_layer is not a submodule of the model")
        module = fc_layer
    else:
        raise TypeError(f"fc_layer must be a module, a name or None, got {type(fc_layer).__name__}")
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.ndim < 2:
        raise ValueError(f"fc_layer {type(module).__name__} has no (num_classes, C) weight")
    # a Conv1x1 head has weight (K, C, 1, 1)
    return weight.reshape(weight.shape[0], weight.shape[1])


Shape = Sequence[int]


class CAM(CAMExtractor):
    r"""Class activation map, from "Learning Deep Features for Discriminative Localization" (Zhou et al., CVPR 2016).

    .. math:: L^{(c)}_{CAM}(x, y) = \mathrm{ReLU}\Big(\sum_k w_k^{(c)} A_k(x, y)\Big)

    where :math:`w_k^{(c)}` is the weight of the fully connected head for class ``c`` and unit ``k``.
    The head is found automatically when the model has exactly one ``nn.Linear``; a Conv1x1 head
    can be named. Unlike TorchCAM 0.5 the documented ReLU is applied. ``scores`` are not needed.

    Args:
        model: input model.
        target_layer: the layer (or its name) feeding global pooling.
        fc_layer: the classification head (or its name); ``None`` resolves it automatically.
        input_shape: input shape without batch dim, for automatic layer choice.
        **kwargs: passed to :class:`~camkit.CAMExtractor`.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with CAM(model, "layer4", "fc") as extractor:
        ...     with torch.inference_mode():
        ...         out = model(torch.rand(1, 3, 224, 224))
        ...     cams = extractor(class_idx=100)
        >>> cams[0].shape
        torch.Size([1, 7, 7])
    """

    method = "cam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        fc_layer: nn.Module | str | None = None,
        input_shape: Shape = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        if isinstance(target_layer, (list, tuple)) and len(target_layer) > 1:
            raise ValueError("CAM supports one target layer (the one before global pooling); pass a single layer")
        kwargs.setdefault("fc_weight", resolve_fc_weight(model, fc_layer))
        super().__init__(model, target_layer, input_shape, **kwargs)


@register(
    "cam",
    class_name="CAM",
    extractor=CAM,
    options={
        "fc_layer": Option(None, (nn.Module, str), "the classification head or its name (None: the only nn.Linear)"),
        "fc_weight": Option(None, (Tensor,), "the head's (num_classes, C) weight (CAM's constructor sets it)"),
    },
    needs_gradients=False,
    family="activation",
    summary="CAM: channel weights = the classification head's weights of the class.",
    paper="Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016",
)
def cam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""CAM weights :math:`w_k = W^{(c)}_k`, the head's weight of class c for channel k."""
    weight = ctx.options["fc_weight"]
    if weight is None:
        weight = resolve_fc_weight(ctx.model, ctx.options["fc_layer"])
    classes_of = getattr(ctx.target, "classes", None)
    if not isinstance(weight, Tensor) or classes_of is None:
        raise ValueError("CAM explains a class index of the classification head: pass class_idx and fc_layer")
    if weight.shape[1] != a.shape[1]:
        raise ValueError(
            f"the head has {weight.shape[1]} input features but the target layer has {a.shape[1]} channels: "
            "CAM needs the layer right before global pooling"
        )
    classes = classes_of(a.shape[0], weight.shape[0]).to(a.device)
    return weight.to(a.dtype)[classes]
