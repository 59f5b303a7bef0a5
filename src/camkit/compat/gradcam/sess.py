"""pytorch-grad-cam's ``sess`` module path: the same class as ``camkit.compat.gradcam.SESS``."""

from camkit.compat.gradcam import SESS as SESS

__all__ = ["SESS"]
