"""pytorch-grad-cam's utilities (``pytorch_grad_cam.utils``): image helpers, targets, reshapes.

Import them as users of pytorch-grad-cam do, with ``camkit.compat.gradcam`` in place of
``pytorch_grad_cam``::

    from camkit.compat.gradcam.utils.image import show_cam_on_image, preprocess_image, deprocess_image
    from camkit.compat.gradcam.utils.model_targets import ClassifierOutputTarget
"""

from . import find_layers as find_layers
from . import image as image
from . import model_targets as model_targets
from . import reshape_transforms as reshape_transforms
from . import svd_on_activations as svd_on_activations
from .image import create_labels_legend as create_labels_legend
from .image import deprocess_image as deprocess_image
from .image import preprocess_image as preprocess_image
from .image import scale_accross_batch_and_channels as scale_accross_batch_and_channels
from .image import scale_cam_image as scale_cam_image
from .image import show_cam_on_image as show_cam_on_image
from .image import show_factorization_on_image as show_factorization_on_image
from .svd_on_activations import get_2d_projection as get_2d_projection

__all__ = [
    "create_labels_legend",
    "deprocess_image",
    "find_layers",
    "get_2d_projection",
    "image",
    "model_targets",
    "preprocess_image",
    "reshape_transforms",
    "scale_accross_batch_and_channels",
    "scale_cam_image",
    "show_cam_on_image",
    "show_factorization_on_image",
    "svd_on_activations",
]
