"""Front doors with other libraries' calling conventions (leaves: nothing in camkit imports them).

* :mod:`camkit.compat.gradcam`: pytorch-grad-cam's classes, targets and image utilities.
"""
