"""Targets for image–text models (CLIP and the like): similarity of an image to a text prompt."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from camkit.targets._output import OutputKey, find_output, key_repr

__all__ = ["ImageTextSimilarityTarget"]

#: Where image embeddings are in a model output: ``CLIPModel`` / ``CLIPVisionModelWithProjection``
#: outputs (``image_embeds``), and ``CLIPModel.get_image_features`` in transformers >= 5 (a
#: ``BaseModelOutputWithPooling`` whose ``pooler_output`` is the projected embedding).
IMAGE_EMBEDDING_KEYS = ("image_embeds", "pooler_output")


class ImageTextSimilarityTarget:
    r"""Cosine similarity of the image embedding to a text prompt's embedding: :math:`\cos(f(x), t)`.

    .. math:: \cos(f(x), t) = \frac{f(x) \cdot t}{\lVert f(x) \rVert\,\lVert t \rVert}

    This is what a CLIP-style model's ``logits_per_image`` holds, divided by its logit scale; a map
    of it shows which regions make the image match the prompt. Different prompts give different
    maps because each prompt is its own target (explain them one at a time, with
    ``retain_graph=True`` for all but the last when they share one forward).

    The image embedding is found in the model output: an ``(N, D)`` tensor (a model that returns
    image embeddings, e.g. one calling ``clip.get_image_features``), a dict/``ModelOutput`` with
    ``image_embeds`` (Hugging Face ``CLIPModel``, ``CLIPVisionModelWithProjection``) or
    ``pooler_output`` (``get_image_features`` in transformers >= 5), a tuple's first tensor, or
    the entry named by ``output_key``.

    Args:
        text_embedding: one prompt's embedding ``(D,)`` used for every sample, or one per sample
            ``(N, D)`` (row ``n`` for image ``n``); a tensor or numpy array, normalized or not
            (the cosine does not depend on its norm). It is detached.
        output_key: where the image embeddings are (a key, a tuple index, or a path of them);
            ``None``: the defaults above. A ``CLIPModel`` called with ``return_dict=False``
            returns a tuple: pass ``output_key=3``.

    Raises:
        TypeError: if ``text_embedding`` is not a tensor or an array.
        ValueError: if it is not ``(D,)`` or ``(N, D)``.

    Example:
        >>> target = ImageTextSimilarityTarget(torch.tensor([1.0, 0.0]))
        >>> target({"image_embeds": torch.tensor([[2.0, 0.0], [1.0, 1.0]])})
        tensor([1.0000, 0.7071])
    """

    def __init__(self, text_embedding: Any, output_key: OutputKey | None = None) -> None:
        if isinstance(text_embedding, Tensor):
            text = text_embedding.detach()
        elif isinstance(text_embedding, np.ndarray):
            text = torch.from_numpy(text_embedding)
        else:
            raise TypeError(
                "text_embedding must be a tensor or a numpy array (D,) or (N, D), got "
                f"{type(text_embedding).__name__}; "
                "e.g. outputs.text_embeds[0] of a CLIPModel, or clip.get_text_features(**tokens).pooler_output[0]"
            )
        if text.ndim not in (1, 2) or text.shape[-1] == 0:
            raise ValueError(
                f"text_embedding must be one prompt's embedding (D,) or one per sample (N, D), got shape "
                f"{tuple(text.shape)}; to explain several prompts, make one target per prompt"
            )
        self.text_embedding = text if text.is_floating_point() else text.float()
        self.output_key = output_key

    @property
    def per_sample(self) -> bool:
        """Whether each sample has its own text embedding (``(N, D)`` with ``N > 1``)."""
        return self.text_embedding.ndim == 2 and self.text_embedding.shape[0] > 1

    def image_embeddings(self, output: Any) -> Tensor:
        """The image embeddings this target reads in a model output.

        Args:
            output: what the model returned.

        Returns:
            ``(N, D)`` embeddings (or one sample's ``(D,)``).
        """
        return find_output(output, self.output_key, IMAGE_EMBEDDING_KEYS, "image embeddings")

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Cosine similarity per row, ``(B,)`` (a 0-d scalar for one sample's ``(D,)`` embedding).

        Args:
            output: the model output.
            rows: sample index of each output row (``None``: row b is sample b); used to pick
                each row's text embedding when there is one per sample.

        Returns:
            The cosine similarities.

        Raises:
            ValueError: on an embedding size that differs from the text's, or per-sample text
                embeddings that do not match the rows.
        """
        image = self.image_embeddings(output)
        text = self.text_embedding.to(device=image.device, dtype=image.dtype)
        if image.shape[-1] != text.shape[-1] or image.ndim not in (1, 2):
            raise ValueError(
                f"the image embeddings have shape {tuple(image.shape)} but the text embedding has "
                f"{text.shape[-1]} features: pass the text embedding of the same model (its projection), and "
                "point output_key at the projected image embeddings (e.g. 'image_embeds')"
            )
        if not self.per_sample:
            return F.cosine_similarity(image, text.reshape(-1).expand_as(image), dim=-1)
        if image.ndim == 1:
            raise ValueError(
                "one sample's image embedding (D,) cannot be matched to one of several text embeddings (N, D): "
                "give each image its own ImageTextSimilarityTarget with a (D,) text embedding"
            )
        if rows is None:
            rows = torch.arange(image.shape[0])
        if rows.numel() != image.shape[0] or int(rows.max()) >= text.shape[0]:
            raise ValueError(
                f"{text.shape[0]} text embeddings (one per sample) do not fit an output of {image.shape[0]} rows "
                f"for samples {sorted(set(rows.tolist()))[:8]}: pass one text embedding per image, or one (D,) for all"
            )
        return F.cosine_similarity(image, text[rows.to(text.device)], dim=-1)

    def __repr__(self) -> str:
        shape = tuple(self.text_embedding.shape)
        return f"{type(self).__name__}(text_embedding={shape}{key_repr(self.output_key)})"
