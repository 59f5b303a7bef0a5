"""camkit: class activation maps for PyTorch on one fast, torch-native engine.

``import camkit`` is light: each name below is imported on first use (PEP 562), so
``import camkit.compat.torchcam`` or ``camkit --version`` does not load torch until it is needed.

Example:
    >>> import camkit
    >>> "gradcam" in camkit.list_methods()
    True
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> (module, attribute in it; None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "methods": ("camkit.methods", None),
    "metrics": ("camkit.metrics", None),
    "compare": ("camkit.compare", "compare"),
    "CAMExtractor": ("camkit.engine", "CAMExtractor"),
    "DetectionExplanation": ("camkit.detect", "DetectionExplanation"),
    "Explanation": ("camkit.explanation", "Explanation"),
    "explain": ("camkit.explanation", "explain"),
    "explain_detections": ("camkit.detect", "explain_detections"),
    "MethodContext": ("camkit.registry", "MethodContext"),
    "Option": ("camkit.registry", "Option"),
    "get_method": ("camkit.registry", "get_method"),
    "list_methods": ("camkit.registry", "list_methods"),
    "register": ("camkit.registry", "register"),
    "unregister": ("camkit.registry", "unregister"),
    "RunReport": ("camkit.runner", "RunReport"),
    "open_store": ("camkit.runner", "open_store"),
    "run": ("camkit.runner", "run"),
    "ClassProbabilityTarget": ("camkit.targets", "ClassProbabilityTarget"),
    "ClassTarget": ("camkit.targets", "ClassTarget"),
}

if TYPE_CHECKING:
    from camkit import methods as methods
    from camkit import metrics as metrics
    from camkit.compare import compare as compare
    from camkit.detect import DetectionExplanation as DetectionExplanation
    from camkit.detect import explain_detections as explain_detections
    from camkit.engine import CAMExtractor as CAMExtractor
    from camkit.explanation import Explanation as Explanation
    from camkit.explanation import explain as explain
    from camkit.registry import MethodContext as MethodContext
    from camkit.registry import Option as Option
    from camkit.registry import get_method as get_method
    from camkit.registry import list_methods as list_methods
    from camkit.registry import register as register
    from camkit.registry import unregister as unregister
    from camkit.runner import RunReport as RunReport
    from camkit.runner import open_store as open_store
    from camkit.runner import run as run
    from camkit.targets import ClassProbabilityTarget as ClassProbabilityTarget
    from camkit.targets import ClassTarget as ClassTarget

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'camkit' has no attribute {name!r}") from None
    value = import_module(module_name)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    """``camkit.compare`` is the function, also once the submodule of the same name is imported.

    Importing a submodule binds it on its package; for ``camkit.compare`` (the module that defines
    the function ``compare``) that would hide the function, so that one binding is skipped (the
    module stays reachable as ``sys.modules["camkit.compare"]``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "compare" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
