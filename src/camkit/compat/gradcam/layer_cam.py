"""pytorch-grad-cam's ``layer_cam`` module path: the same class as ``camkit.compat.gradcam.LayerCAM``."""

from camkit.compat.gradcam import LayerCAM as LayerCAM

__all__ = ["LayerCAM"]
