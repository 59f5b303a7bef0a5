"""pytorch-grad-cam's ``kpca_cam`` module path: the same class as ``camkit.compat.gradcam.KPCA_CAM``."""

from camkit.compat.gradcam import KPCA_CAM as KPCA_CAM

__all__ = ["KPCA_CAM"]
