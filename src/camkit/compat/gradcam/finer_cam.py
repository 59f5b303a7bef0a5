"""pytorch-grad-cam's ``finer_cam`` module path: the same class as ``camkit.compat.gradcam.FinerCAM``."""

from camkit.compat.gradcam import FinerCAM as FinerCAM

__all__ = ["FinerCAM"]
