"""pytorch-grad-cam's ``grad_cam`` module path: the same class as ``camkit.compat.gradcam.GradCAM``."""

from camkit.compat.gradcam import GradCAM as GradCAM

__all__ = ["GradCAM"]
