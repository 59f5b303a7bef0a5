"""pytorch-grad-cam's ``shapley_cam`` module path: the same class as ``camkit.compat.gradcam.ShapleyCAM``."""

from camkit.compat.gradcam import ShapleyCAM as ShapleyCAM

__all__ = ["ShapleyCAM"]
