"""pytorch-grad-cam's ``grad_cam_plusplus`` module path: the same class as ``camkit.compat.gradcam.GradCAMPlusPlus``."""

from camkit.compat.gradcam import GradCAMPlusPlus as GradCAMPlusPlus

__all__ = ["GradCAMPlusPlus"]
