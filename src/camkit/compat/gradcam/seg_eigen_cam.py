"""pytorch-grad-cam's ``seg_eigen_cam`` module path: the same class as ``camkit.compat.gradcam.SegEigenCAM``."""

from camkit.compat.gradcam import SegEigenCAM as SegEigenCAM

__all__ = ["SegEigenCAM"]
