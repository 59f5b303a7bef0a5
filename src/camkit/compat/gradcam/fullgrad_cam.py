"""pytorch-grad-cam's ``fullgrad_cam`` module path: the same class as ``camkit.compat.gradcam.FullGrad``."""

from camkit.compat.gradcam import FullGrad as FullGrad

__all__ = ["FullGrad"]
