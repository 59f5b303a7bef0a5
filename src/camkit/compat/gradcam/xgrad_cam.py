"""pytorch-grad-cam's ``xgrad_cam`` module path: the same class as ``camkit.compat.gradcam.XGradCAM``."""

from camkit.compat.gradcam import XGradCAM as XGradCAM

__all__ = ["XGradCAM"]
