"""pytorch-grad-cam's ``grad_cam_elementwise`` module path: ``camkit.compat.gradcam.GradCAMElementWise``."""

from camkit.compat.gradcam import GradCAMElementWise as GradCAMElementWise

__all__ = ["GradCAMElementWise"]
