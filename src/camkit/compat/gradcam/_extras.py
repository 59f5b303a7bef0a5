"""pytorch-grad-cam's ``DeepFeatureFactorization`` and ``GuidedBackpropReLUModel`` on camkit's functions.

Neither is a class activation map method: Deep Feature Factorization splits a layer's features
into concepts (:func:`camkit.methods.factorization.deep_feature_factorization`), guided
backpropagation returns an input-space gradient (:func:`camkit.methods.guided.guided_backprop`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camkit.engine import Lifecycle, resolve_layers
from camkit.methods.factorization import deep_feature_factorization
from camkit.methods.guided import guided_backprop

__all__ = ["DeepFeatureFactorization", "GuidedBackpropReLUModel"]


def _model_device(model: nn.Module) -> torch.device | None:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None


class DeepFeatureFactorization(Lifecycle):
    r"""pytorch-grad-cam's ``DeepFeatureFactorization``: NMF of a layer's activations into concepts.

    The activations :math:`A` ``(N, C, h, w)`` of the batch, each channel shifted by its minimum
    :math:`o_c`, are factorized as :math:`V \approx W H` with ``n_components`` concepts; the concepts
    are :math:`W + o` ``(C, K)`` and each image's ``(K, H, W)`` maps are :math:`H`, min-max
    normalized per concept and resized (bilinear) to the input. Collins et al., ECCV 2018,
    arXiv:1806.10206. camkit's NMF is torch multiplicative updates on the model's device (the
    peer: scikit-learn on the CPU); NMF is not unique, so the factors differ while the fit is as
    good. Unlike the peer, the forward runs in eval mode (flags restored) without autograd, and
    the hooks exist only during a call.

    Args:
        model: the model.
        target_layer: one layer (module or dotted name); ``None``: the last spatial layer.
        reshape_transform: maps the layer output to ``(N, C, h, w)`` (e.g. ViT tokens to a grid).
        computation_on_concepts: optional callable on the concept embeddings ``(K, C)``, e.g. the
            classifier head ``model.fc``; its output is returned as the concept scores.

    Raises:
        ValueError: for an unknown layer or several layers.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> dff = DeepFeatureFactorization(model, model.layer4, computation_on_concepts=model.fc)
        >>> concepts, maps, scores = dff(torch.rand(2, 3, 64, 64), n_components=3)
        >>> concepts.shape, len(maps), maps[0].shape, scores.shape
        ((512, 3), 2, (3, 64, 64), (3, 1000))
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        computation_on_concepts: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(f"reshape_transform must be callable or None, got {type(reshape_transform).__name__}")
        if target_layer is not None:  # checked now; None picks a layer from the first input's shape
            names = resolve_layers(model, target_layer, ())
            if len(names) != 1:
                raise ValueError(f"DeepFeatureFactorization takes one target_layer, got {names}")
            target_layer = names[0]
        self.target_layer = target_layer
        self.model = model
        self.reshape_transform = reshape_transform
        self.computation_on_concepts = computation_on_concepts

    def __call__(
        self, input_tensor: Tensor, n_components: int = 16
    ) -> tuple[np.ndarray, list[np.ndarray]] | tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Factorize the layer's activations of ``input_tensor``.

        Args:
            input_tensor: the batch ``(N, C, H, W)``.
            n_components: number of concepts ``K``.

        Returns:
            ``(concepts, maps)``: concepts ``(C, K)`` and one ``(K, H, W)`` float32 array per image
            in ``[0, 1]``; plus the concept scores when ``computation_on_concepts`` is set.
        """
        device = _model_device(self.model)
        x = input_tensor.to(device) if device is not None else input_tensor
        options: dict[str, Any] = {"nonnegative": "shift", "reshape_transform": self.reshape_transform}
        if self.computation_on_concepts is None:
            concepts, maps = deep_feature_factorization(self.model, x, self.target_layer, n_components, **options)
            return concepts.cpu().numpy(), [m.float().cpu().numpy() for m in maps]
        concepts, maps, scores = deep_feature_factorization(
            self.model, x, self.target_layer, n_components, head=self.computation_on_concepts, **options
        )
        return concepts.cpu().numpy(), [m.float().cpu().numpy() for m in maps], scores.cpu().numpy()

    def __repr__(self) -> str:
        return f"DeepFeatureFactorization(target_layer={self.target_layer!r})"


class GuidedBackpropReLUModel:
    r"""pytorch-grad-cam's ``GuidedBackpropReLUModel``: the guided gradient of the first image, ``(H, W, C)``.

    :math:`\partial Y^{(c)} / \partial x` where every ``nn.ReLU`` passes back only positive
    gradients where its input was positive (Springenberg et al., ICLR workshop 2015). camkit does
    not replace the model's ReLU modules (the peer swaps them and back, turning ``inplace=True``
    ReLUs into new non-inplace ones, and calls ``model.eval()`` for good); the model's flags,
    ``.grad`` and the input tensor are left as they were. As the peer, only the first image of a
    batch is explained (camkit runs only that image; with ``target_category=None`` it takes that
    image's top class, the peer the arg-max of the whole flattened batch output).

    Args:
        model: the model.
        device: the device to run on; ``None``: the model's. A device other than the model's moves
            the model there, as the peer does.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> guided = GuidedBackpropReLUModel(resnet18(), device="cpu")
        >>> guided(torch.rand(1, 3, 32, 32), target_category=3).shape
        (32, 32, 3)
    """

    def __init__(self, model: nn.Module, device: torch.device | str | None = None) -> None:
        current = _model_device(model)
        if device is not None and torch.device(device) != current:
            model = model.to(torch.device(device))
        self.model = model
        self.device = torch.device(device) if device is not None else current

    def __call__(self, input_img: Tensor, target_category: int | None = None) -> np.ndarray:
        """The guided gradient of ``input_img[0]`` for ``target_category``, channels last.

        Args:
            input_img: the batch ``(N, C, H, W)`` (only the first image is explained).
            target_category: the class; ``None``: the image's top class.

        Returns:
            float array ``(H, W, C)``.

        Raises:
            TypeError: for a non-integer ``target_category`` or an input that is not a batch.
        """
        if not isinstance(input_img, Tensor) or input_img.ndim < 3:
            raise TypeError(f"input_img must be a batch (N, C, H, W), got {getattr(input_img, 'shape', input_img)!r}")
        x = input_img[:1].to(self.device) if self.device is not None else input_img[:1]
        category = None if target_category is None else operator.index(target_category)
        grad = guided_backprop(self.model, x, category)
        out: np.ndarray = grad[0].movedim(0, -1).cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"GuidedBackpropReLUModel(model={type(self.model).__name__}, device={self.device})"
