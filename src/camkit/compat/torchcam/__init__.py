"""TorchCAM 0.5's import paths over camkit: replace ``torchcam`` with ``camkit.compat.torchcam``.

A thin layer: the extractor classes are :mod:`camkit.methods`' own, the metrics wrap
:mod:`camkit.metrics`, ``overlay_mask`` is :func:`camkit.viz.overlay_mask` behind TorchCAM's
argument checks. The submodules mirror TorchCAM's layout (``methods``, ``methods.core``,
``methods.activation``, ``methods.gradient``, ``methods._utils``, ``metrics``, ``utils``,
``explain``) and, as in TorchCAM, are imported on first access.

Where camkit follows a method's paper rather than TorchCAM's code (Grad-CAM++'s alpha, CAM's
ReLU, IS-CAM's mask strengths, ...), the maps differ: see ``docs/coming-from-peers.md``.

Example:
    >>> from camkit.compat.torchcam.methods import GradCAM
    >>> GradCAM.method
    'gradcam'
"""

from importlib import import_module as _import_module
from importlib.metadata import version as version
from types import ModuleType as _ModuleType

__all__ = ("explain", "methods", "metrics", "utils", "version")

#: The TorchCAM release whose API this mirror reproduces (code written against TorchCAM that checks
#: ``torchcam.__version__`` gets the API level it was written for); camkit's own version is
#: ``camkit.__version__``.
__version__ = "0.5.0"

_SUBMODULES = frozenset({"explain", "methods", "metrics", "utils"})


def __getattr__(name: str) -> _ModuleType:
    if name in _SUBMODULES:
        module = _import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES})
