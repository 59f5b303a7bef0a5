"""pytorch-grad-cam's ``metrics.cam_mult_image`` module: the confidence-change classes."""

from torch import Tensor

from ._classes import CamMultImageConfidenceChange as CamMultImageConfidenceChange
from ._classes import DropInConfidence as DropInConfidence
from ._classes import IncreaseInConfidence as IncreaseInConfidence

__all__ = ["CamMultImageConfidenceChange", "DropInConfidence", "IncreaseInConfidence", "multiply_tensor_with_cam"]


def multiply_tensor_with_cam(input_tensor: Tensor, cam: Tensor) -> Tensor:
    """The input multiplied by its map (pytorch-grad-cam's perturbation of ``CamMultImageConfidenceChange``).

    Example:
        >>> import torch
        >>> multiply_tensor_with_cam(torch.ones(3, 2, 2), torch.tensor([[0.0, 1.0], [0.5, 1.0]]))[0].tolist()
        [[0.0, 1.0], [0.5, 1.0]]
    """
    return input_tensor * cam
