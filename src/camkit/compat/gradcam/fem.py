"""pytorch-grad-cam's ``fem`` module path: the same class as ``camkit.compat.gradcam.FEM``."""

from camkit.compat.gradcam import FEM as FEM

__all__ = ["FEM"]
