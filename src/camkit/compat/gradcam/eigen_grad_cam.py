"""pytorch-grad-cam's ``eigen_grad_cam`` module path: the same class as ``camkit.compat.gradcam.EigenGradCAM``."""

from camkit.compat.gradcam import EigenGradCAM as EigenGradCAM

__all__ = ["EigenGradCAM"]
