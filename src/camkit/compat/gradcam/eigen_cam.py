"""pytorch-grad-cam's ``eigen_cam`` module path: the same class as ``camkit.compat.gradcam.EigenCAM``."""

from camkit.compat.gradcam import EigenCAM as EigenCAM

__all__ = ["EigenCAM"]
