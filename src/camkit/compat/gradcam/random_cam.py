"""pytorch-grad-cam's ``random_cam`` module path: the same class as ``camkit.compat.gradcam.RandomCAM``."""

from camkit.compat.gradcam import RandomCAM as RandomCAM

__all__ = ["RandomCAM"]
