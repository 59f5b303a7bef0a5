"""pytorch-grad-cam's ablation layers (``pytorch_grad_cam.ablation_layer``).

In pytorch-grad-cam, ``AblationCAM(..., ablation_layer=AblationLayer())`` swaps the target layer
for one of these modules, which replays stored activations with channels ablated. camkit's
:class:`~camkit.compat.gradcam.AblationCAM` does not swap layers (it re-runs only the layers
after the target layer with ablated activations), so it does not use them; they are here, with
pytorch-grad-cam's methods and behaviour, for code that builds or subclasses them.

Example:
    >>> import torch
    >>> layer = AblationLayer()
    >>> layer.set_next_batch(0, torch.arange(8.0).view(1, 2, 2, 2), 2)
    >>> layer.indices = np.array([0, 1])
    >>> layer(None).sum(dim=(2, 3)).tolist()  # row i: channel i ablated (to 0: the minimum is 0)
    [[0.0, 22.0], [6.0, 0.0]]
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .utils.svd_on_activations import get_2d_projection

__all__ = ["ABLATION_VALUE", "AblationLayer", "AblationLayerFasterRCNN", "AblationLayerVit"]

#: How far below the minimum an ablated channel is set when the activations are not >= 0-based.
ABLATION_VALUE = 1e7


def _ablate(output: Tensor, indices: Any) -> None:
    """In place: in row ``i`` set channel ``indices[i]`` to 0 (when the minimum is 0) or far below the minimum."""
    for i in range(output.size(0)):
        low = torch.min(output)
        output[i, int(indices[i])] = 0 if low == 0 else low - ABLATION_VALUE


class AblationLayer(nn.Module):
    """Replays stored activations ``(k, C, H, W)`` with channel ``indices[i]`` of row ``i`` ablated.

    Attributes:
        activations: set by :meth:`set_next_batch`.
        indices: the channel of each row, set by :meth:`activations_to_be_ablated` (or directly).
    """

    activations: Any
    indices: Any

    def objectiveness_mask_from_svd(self, activations: np.ndarray, threshold: float = 0.01) -> np.ndarray:
        """Positions where the normalized absolute first-component projection exceeds ``threshold``.

        Args:
            activations: one sample's activations ``(C, H, W)``.
            threshold: in ``[0, 1]``.

        Returns:
            A boolean ``(H, W)`` mask.
        """
        projection = np.abs(get_2d_projection(np.asarray(activations)[None])[0])
        projection = projection - projection.min()
        projection = projection / projection.max()
        mask: np.ndarray = projection > threshold
        return mask

    def activations_to_be_ablated(self, activations: np.ndarray, ratio_channels_to_ablate: float = 1.0) -> np.ndarray:
        """The channels to ablate (also stored in :attr:`indices`).

        With ratio 1 every channel in order. Otherwise channels are scored by the share of their
        normalized magnitude inside :meth:`objectiveness_mask_from_svd`'s mask, and the
        ``ratio * C`` highest (best first) followed by the ``ratio * C`` lowest are kept, as in
        pytorch-grad-cam.

        Args:
            activations: one sample's activations ``(C, H, W)``.
            ratio_channels_to_ablate: share of the channels, in ``(0, 1]``.

        Returns:
            int32 channel indices.
        """
        array = np.asarray(activations)
        if ratio_channels_to_ablate == 1.0:
            self.indices = np.arange(array.shape[0], dtype=np.int32)
            return np.asarray(self.indices)
        mask = self.objectiveness_mask_from_svd(array)
        magnitude = np.abs(array).reshape(array.shape[0], -1)
        magnitude = magnitude - magnitude.min(axis=1, keepdims=True)
        magnitude = magnitude / magnitude.max(axis=1, keepdims=True)
        scores = np.float32((magnitude * mask.reshape(1, -1)).sum(axis=1) / magnitude.sum(axis=1))
        order = [int(i) for i in np.argsort(scores)]
        count = int(len(order) * ratio_channels_to_ablate)
        self.indices = np.array(order[::-1][:count] + order[:count], dtype=np.int32)
        return np.asarray(self.indices)

    def set_next_batch(self, input_batch_index: int, activations: Any, num_channels_to_ablate: int) -> None:
        """Store sample ``input_batch_index`` of ``activations`` ``(N, C, H, W)``, ``num_channels_to_ablate`` times."""
        row = activations[input_batch_index].clone().unsqueeze(0)
        self.activations = row.repeat(num_channels_to_ablate, *([1] * (row.ndim - 1)))

    def __call__(self, x: Any) -> Any:
        """Ablate the stored activations in place and return them (``x`` is ignored)."""
        output: Tensor = self.activations
        _ablate(output, self.indices)
        return output


class AblationLayerVit(AblationLayer):
    """:class:`AblationLayer` for token outputs ``(k, tokens, C)``: the channel is the last dim."""

    def set_next_batch(self, input_batch_index: int, activations: Any, num_channels_to_ablate: int) -> None:
        """Store sample ``input_batch_index`` of tokens ``(N, T, C)``, ``num_channels_to_ablate`` times."""
        row = activations[input_batch_index].clone().unsqueeze(0)
        self.activations = row.repeat(num_channels_to_ablate, *([1] * (row.ndim - 1)))

    def __call__(self, x: Any) -> Any:
        """Ablate channel ``indices[i]`` (last dim) of row ``i`` in place and return the activations."""
        output: Tensor = self.activations.transpose(1, self.activations.ndim - 1)
        _ablate(output, self.indices)
        return output.transpose(output.ndim - 1, 1)


class AblationLayerFasterRCNN(AblationLayer):
    """:class:`AblationLayer` for a torchvision FPN's dict of levels ``'0'``-``'3'``, ``'pool'`` (256 channels each).

    Index ``j`` is channel ``j % 256`` of level ``j // 256``; ablated channels are set to ``-1000``.
    """

    def set_next_batch(self, input_batch_index: int, activations: Any, num_channels_to_ablate: int) -> None:
        """Store sample ``input_batch_index`` of every level (a dict of tensors), ``num_channels_to_ablate`` times."""
        self.activations = OrderedDict(
            (key, value[input_batch_index].clone().unsqueeze(0).repeat(num_channels_to_ablate, 1, 1, 1))
            for key, value in activations.items()
        )

    def __call__(self, x: Any) -> Any:
        """Ablate the stored levels in place and return them."""
        result = self.activations
        levels = ("0", "1", "2", "3", "pool")
        for i in range(result["pool"].size(0)):
            index = int(self.indices[i])
            result[levels[index // 256]][i, index % 256] = -1000
        return result
