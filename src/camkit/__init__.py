"""camkit: class activation maps for PyTorch on one fast, torch-native engine.

Example:
    >>> import camkit
    >>> "gradcam" in camkit.list_methods()
    True
"""

from camkit import methods as methods
from camkit import metrics as metrics
from camkit.compare import compare as compare
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

__version__ = "0.1.0"

__all__ = [
    "CAMExtractor",
    "ClassProbabilityTarget",
    "ClassTarget",
    "Explanation",
    "MethodContext",
    "Option",
    "RunReport",
    "__version__",
    "compare",
    "explain",
    "get_method",
    "list_methods",
    "methods",
    "metrics",
    "open_store",
    "register",
    "run",
    "unregister",
]
