"""pytorch-grad-cam's ``ablation_cam`` module path: the same class as ``camkit.compat.gradcam.AblationCAM``."""

from camkit.compat.gradcam import AblationCAM as AblationCAM

__all__ = ["AblationCAM"]
