"""pytorch-grad-cam's ``guided_backprop`` module path: ``camkit.compat.gradcam.GuidedBackpropReLUModel``."""

from camkit.compat.gradcam import GuidedBackpropReLUModel as GuidedBackpropReLUModel

__all__ = ["GuidedBackpropReLUModel"]
