"""pytorch-grad-cam's ``base_cam`` module path: ``BaseCAM`` is camkit's generic door class.

pytorch-grad-cam's methods subclass ``BaseCAM`` and override ``get_cam_weights``; camkit's method
classes are made from registry specs instead: add a method with :func:`camkit.register` (it then
gets a class here too). ``BaseCAM`` is :class:`camkit.compat.gradcam.CAMMethod`, so
``isinstance(cam, BaseCAM)`` holds for every class of this front door.
"""

from camkit.compat.gradcam._base import CAMMethod as BaseCAM

__all__ = ["BaseCAM"]
