"""pytorch-grad-cam's ``refine_cam`` module path: the same class as ``camkit.compat.gradcam.RefineCAM``."""

from camkit.compat.gradcam import RefineCAM as RefineCAM

__all__ = ["RefineCAM"]
