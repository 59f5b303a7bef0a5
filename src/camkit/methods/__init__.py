"""CAM methods: the registered weight functions and their TorchCAM-style classes.

Every registry method has a class here named by its spec's ``class_name`` (``GradCAM``,
``GradCAMpp``, ``ScoreCAM``, ...), made from the spec (:mod:`camkit.methods._classes`); a method
registered at run time with :func:`camkit.register` gets one too, on first access
(``from camkit.methods import MyCAM``). ``CAM`` is hand-written (its constructor takes
``fc_layer``). ``LeGrad``, ``AttentionRollout`` and ``TransformerAttribution`` (vision transformers) read
attention instead of one layer's activation, so they are extractor classes without a registry
entry (see :mod:`camkit.methods.attention` and :mod:`camkit.methods.attribution`); ``RefineCAM``,
``FinerCAM`` and ``SESS`` wrap another method.

Example:
    >>> from camkit.methods import GradCAM, LayerCAM, ScoreCAM, CAM
    >>> GradCAM.method, CAM.method
    ('gradcam', 'cam')
"""

from typing import Any

from camkit.methods import ablation as ablation
from camkit.methods import activation as activation
from camkit.methods import elementwise as elementwise
from camkit.methods import fullgrad as fullgrad
from camkit.methods import gradient as gradient
from camkit.methods import integrated as integrated
from camkit.methods import masking as masking
from camkit.methods import perturbation as perturbation
from camkit.methods import polycam as polycam
from camkit.methods import projection as projection
from camkit.methods import score as score

from camkit.methods import attention as attention  # isort: skip  (after the registered methods)
from camkit.methods._classes import class_for, extractor_class
from camkit.methods.attention import AttentionRollout as AttentionRollout
from camkit.methods.attention import LeGrad as LeGrad
from camkit.methods.attribution import TransformerAttribution as TransformerAttribution
from camkit.methods.factorization import deep_feature_factorization as deep_feature_factorization
from camkit.methods.wrappers import SESS as SESS
from camkit.methods.wrappers import FinerCAM as FinerCAM
from camkit.methods.wrappers import FinerWeightedTarget as FinerWeightedTarget
from camkit.methods.wrappers import RefineCAM as RefineCAM
from camkit.registry import get_method, list_methods

#: the classes of the methods registered when camkit was imported (later ones: see ``__getattr__``)
_REGISTERED = {get_method(name).class_name: extractor_class(name) for name in list_methods()}
globals().update(_REGISTERED)


def __getattr__(name: str) -> Any:
    found = class_for(name)
    if found is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return found


def __dir__() -> list[str]:
    return sorted({*globals(), *(get_method(name).class_name for name in list_methods())})


__all__ = [
    "SESS",
    "AttentionRollout",
    "FinerCAM",
    "FinerWeightedTarget",
    "LeGrad",
    "RefineCAM",
    "TransformerAttribution",
    "deep_feature_factorization",
    "extractor_class",
    *sorted(_REGISTERED),
]
