"""pytorch-grad-cam's ``feature_factorization.deep_feature_factorization`` module path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from camkit.compat.gradcam import DeepFeatureFactorization as DeepFeatureFactorization
from camkit.compat.gradcam.utils.image import create_labels_legend, show_factorization_on_image
from camkit.methods.factorization import nmf

__all__ = ["DeepFeatureFactorization", "dff", "run_dff_on_image"]


def dff(activations: np.ndarray, n_components: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-grad-cam's NMF helper: concepts and per-image maps of ``(N, C, h, w)`` activations.

    The channels, shifted by their minimum over the batch, are factorized by camkit's NMF
    (:func:`camkit.methods.factorization.nmf`; the peer: scikit-learn's, so the factors differ).
    NaNs count as 0; unlike the peer, ``activations`` is not modified.

    Args:
        activations: ``(N, C, h, w)``.
        n_components: number of concepts ``K``.

    Returns:
        ``(concepts, explanations)``: ``(C, K)`` (the shift added back) and ``(N, K, h, w)``, not normalized.

    Example:
        >>> concepts, explanations = dff(np.random.default_rng(0).random((2, 6, 3, 3)), 2)
        >>> concepts.shape, explanations.shape
        ((6, 2), (2, 2, 3, 3))
    """
    a = torch.from_numpy(np.nan_to_num(np.asarray(activations, dtype=np.float64)))
    n, c, h, w = a.shape
    v = a.transpose(0, 1).reshape(c, -1)
    offset = v.amin(dim=1, keepdim=True)
    concepts, maps = nmf(v - offset, n_components, dtype=torch.float64)
    explanations = maps.reshape(n_components, n, h, w).transpose(0, 1)
    return (concepts + offset).numpy(), explanations.numpy()


def _labels(model: nn.Module, classes: int) -> Any:
    """The model's class names: a Hugging Face ``config.id2label``, else the class indices as text."""
    config = getattr(model, "config", None)
    labels = getattr(config, "id2label", None)
    return labels if labels is not None else {c: str(c) for c in range(classes)}


def run_dff_on_image(
    model: nn.Module,
    target_layer: nn.Module,
    classifier: nn.Module | Callable[[Tensor], Tensor],
    img_pil: Image.Image,
    img_tensor: Tensor,
    reshape_transform: Callable[[Any], Tensor] | None = None,
    n_components: int = 5,
    top_k: int = 2,
) -> np.ndarray:
    """pytorch-grad-cam's one-image Deep Feature Factorization picture: the image and its concepts, side by side.

    The concepts of ``target_layer`` (:class:`DeepFeatureFactorization` of the one image
    ``img_tensor``) are scored by ``classifier``; each concept's legend names its ``top_k`` classes
    by softmax probability (``model.config.id2label``, a Hugging Face model's names; class indices
    for a model without them); the concept maps are drawn over the image
    (:func:`~camkit.compat.gradcam.utils.image.show_factorization_on_image`, image weight 0.3).
    Differences from pytorch-grad-cam 1.5.7: ``reshape_transform`` defaults to ``None`` (the peer's
    default is the typing object ``Optional[Callable]``, which fails when called); the NMF is
    camkit's (see :class:`DeepFeatureFactorization`), so the concepts and the colors of the picture
    differ from the peer's while its layout, size and dtype are the same.

    Args:
        model: the model (a Hugging Face classifier in the peer's tutorial).
        target_layer: the layer to factorize (e.g. ``model.vit.layernorm``).
        classifier: maps concept embeddings ``(K, C)`` to class scores (e.g. ``model.classifier``).
        img_pil: the image, RGB.
        img_tensor: the model's input for it, ``(C, H, W)`` (no batch dim).
        reshape_transform: maps the layer output to ``(1, C, h, w)`` (e.g. ViT tokens to a grid).
        n_components: number of concepts.
        top_k: classes named per concept.

    Returns:
        uint8 ``(H, 3W, 3)``: the image, the concepts over it, and their legend.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> image = Image.new("RGB", (64, 64), "gray")
        >>> run_dff_on_image(model, model.layer4, model.fc, image, torch.rand(3, 64, 64), n_components=2).shape
        (64, 192, 3)
    """
    rgb = np.array(img_pil)
    factorization = DeepFeatureFactorization(
        model=model,
        target_layer=target_layer,
        reshape_transform=reshape_transform,
        computation_on_concepts=classifier,
    )
    _, explanations, concept_scores = factorization(img_tensor[None, :], n_components)  # type: ignore[misc]
    probabilities = torch.softmax(torch.from_numpy(concept_scores), dim=-1).numpy()
    legend = create_labels_legend(probabilities, _labels(model, probabilities.shape[-1]), top_k=top_k)
    picture = show_factorization_on_image(rgb / 255, explanations[0], image_weight=0.3, concept_labels=legend)
    return np.hstack((rgb, picture))
