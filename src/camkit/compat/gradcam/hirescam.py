"""pytorch-grad-cam's ``hirescam`` module path: the same class as ``camkit.compat.gradcam.HiResCAM``."""

from camkit.compat.gradcam import HiResCAM as HiResCAM

__all__ = ["HiResCAM"]
