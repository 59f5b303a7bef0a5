"""pytorch-grad-cam's utilities (``pytorch_grad_cam.utils``): image helpers, targets, reshapes.

Import them as users of pytorch-grad-cam do, with ``camkit.compat.gradcam`` in place of
``pytorch_grad_cam``::

    from camkit.compat.gradcam.utils.image import show_cam_on_image, preprocess_image, deprocess_image
    from camkit.compat.gradcam.utils.model_targets import ClassifierOutputTarget
"""

from . import image as image
from . import model_targets as model_targets
from . import reshape_transforms as reshape_transforms
from .image import create_labels_legend as create_labels_legend
from .image import deprocess_image as deprocess_image
from .image import preprocess_image as preprocess_image
from .image import scale_cam_image as scale_cam_image
from .image import show_cam_on_image as show_cam_on_image
from .image import show_factorization_on_image as show_factorization_on_image

__all__ = [
    "create_labels_legend",
    "deprocess_image",
    "image",
    "model_targets",
    "preprocess_image",
    "reshape_transforms",
    "scale_cam_image",
    "show_cam_on_image",
    "show_factorization_on_image",
]
