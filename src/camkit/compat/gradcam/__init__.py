"""pytorch-grad-cam-style front door: same class names and call convention, camkit's engine.

Switch by changing the import::

    from camkit.compat.gradcam import GradCAM                      # was: from pytorch_grad_cam import GradCAM
    from camkit.compat.gradcam.utils.model_targets import ClassifierOutputTarget
    from camkit.compat.gradcam.utils.image import show_cam_on_image

    with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(281)])  # (N, H, W) float32

Which classes exist: one per registry method, made from its spec (:mod:`camkit.registry`): under
pytorch-grad-cam's names (the spec's ``peer_names``, e.g. ``GradCAMPlusPlus``; :data:`PEER_METHODS`
and :func:`available` list them) and under camkit's ``class_name`` (``GradCAMpp``, ``SSCAM``, ...).
A method registered at run time gets its classes on first access.

pytorch-grad-cam's classes that are not registry methods always exist here (:data:`META_CLASSES`):
``FinerCAM``, ``RefineCAM`` and ``SESS`` take a ``base_method`` class of this front door and run
camkit's Finer-CAM target, RefineCAM product and SESS on it; ``DeepFeatureFactorization`` and
``GuidedBackpropReLUModel`` call :func:`camkit.methods.factorization.deep_feature_factorization` and
:func:`camkit.methods.guided.guided_backprop` (``show_factorization_on_image`` is in
``utils.image``). Same constructor and call signatures as pytorch-grad-cam 1.5.7.

How camkit differs from pytorch-grad-cam 1.5.7 (on purpose):

* the model is not modified: the forward runs in eval mode and the flags are restored; gradients
  come from ``torch.autograd.grad``, so no parameter's ``.grad`` is filled; hooks exist only
  during a call (nothing to release, nothing relies on ``__del__``);
* one target in ``targets=[...]`` is used for every image (pytorch-grad-cam's ``zip`` silently
  explained only the first image); ``cam.outputs`` is detached from the graph;
* maps are computed on the model's device with torch (no cv2, no CPU round trip) and resized with
  torch's bilinear/trilinear interpolation (pytorch-grad-cam: cv2 for 2-D, cubic ``scipy.zoom``
  for 3-D); ``aug_smooth`` runs its 6 variants as one batched forward;
* ``eigen_smooth``/Eigen methods fix the sign of the principal component (sum of its entries
  >= 0) where pytorch-grad-cam keeps SVD's arbitrary sign;
* ScoreCAM's masks are upsampled with ``align_corners=False`` (pytorch-grad-cam: ``True``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from camkit.methods import _classes
from camkit.registry import MethodSpec, get_method, list_methods

from ._adapter import PerSampleTargets as PerSampleTargets
from ._adapter import batched_target as batched_target
from ._base import IGNORED_ARGUMENTS as IGNORED_ARGUMENTS
from ._base import CAMMethod as CAMMethod
from .ablation_layer import AblationLayer as AblationLayer
from .ablation_layer import AblationLayerFasterRCNN as AblationLayerFasterRCNN
from .ablation_layer import AblationLayerVit as AblationLayerVit
from .activations_and_gradients import ActivationsAndGradients as ActivationsAndGradients

_CACHE: dict[str, tuple[MethodSpec, type[CAMMethod]]] = {}


def _docstring(spec: MethodSpec, class_name: str) -> str:
    ignored = IGNORED_ARGUMENTS.get(spec.name, {})
    args = [
        "    model: the model (never modified).",
        "    target_layers: list of modules (or dotted names); several layers are averaged"
        + ("; ignored: the method uses its own layers." if spec.layers is not None else "."),
        "    reshape_transform: maps a layer's activations and gradients to ``(N, C, *S)`` (default: automatic).",
        *_classes.option_lines(spec),
        *(
            f"    {key}: accepted for pytorch-grad-cam's signature, ignored: {why}."
            for key, (_, why) in ignored.items()
        ),
        "    batch_size: keyword-only: inputs per forward for methods that re-run the model (default ``32``).",
    ]
    example = [
        "    >>> import torch",
        "    >>> from torch import nn",
        f"    >>> from camkit.compat.gradcam import {class_name}",
        "    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),",
        "    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()",
        f"    >>> with {class_name}(model=model, target_layers=[model[2]]) as cam:",
        "    ...     grayscale = cam(input_tensor=torch.rand(2, 3, 16, 16), targets=None)",
        "    >>> grayscale.shape",
        "    (2, 16, 16)",
    ]
    doc = _classes.spec_docstring(spec, args, example)
    return doc.replace(f"{spec.summary}\n", f"{spec.summary} pytorch-grad-cam-style (``camkit.{spec.name}``).\n", 1)


def _make_class(spec: MethodSpec, class_name: str) -> type[CAMMethod]:
    key = f"{spec.name}:{class_name}"
    cached = _CACHE.get(key)
    if cached is None or cached[0] is not spec:
        ignored = IGNORED_ARGUMENTS.get(spec.name, {})
        attrs = {
            "method": spec.name,
            "defaults": MappingProxyType({**spec.defaults(), **{k: v for k, (v, _) in ignored.items()}}),
            "ignored": MappingProxyType({k: why for k, (_, why) in ignored.items()}),
            "__doc__": _docstring(spec, class_name),
            "__module__": __name__,
            "__qualname__": class_name,
        }
        cached = _CACHE[key] = (spec, type(class_name, (CAMMethod,), attrs))
    return cached[1]


def _class_names(spec: MethodSpec) -> list[str]:
    return list(dict.fromkeys([*spec.peer_names, spec.class_name]))


def _peer_methods() -> dict[str, tuple[str, Mapping[str, Any]]]:
    found = {}
    for name in list_methods():
        spec = get_method(name)
        for peer in spec.peer_names:
            found[peer] = (spec.name, _make_class(spec, peer).defaults)
    return found


def available() -> list[str]:
    """The pytorch-grad-cam class names this front door provides (the registry's ``peer_names``).

    Returns:
        Class names.

    Example:
        >>> "GradCAMPlusPlus" in available()
        True
    """
    return list(_peer_methods())


#: pytorch-grad-cam class name → (camkit registry name, its constructor options + defaults), from the specs.
PEER_METHODS: Mapping[str, tuple[str, Mapping[str, Any]]] = MappingProxyType(_peer_methods())

#: the method classes made at import (a method registered later gets its classes on first access)
_MADE = {
    class_name: _make_class(get_method(name), class_name)
    for name in list_methods()
    for class_name in _class_names(get_method(name))
}
globals().update(_MADE)

# The meta classes default to the GradCAM / GradCAMPlusPlus classes made above, so they come after.
from ._extras import DeepFeatureFactorization as DeepFeatureFactorization  # noqa: E402
from ._extras import GuidedBackpropReLUModel as GuidedBackpropReLUModel  # noqa: E402
from ._meta import SESS as SESS  # noqa: E402
from ._meta import FinerCAM as FinerCAM  # noqa: E402
from ._meta import RefineCAM as RefineCAM  # noqa: E402
from .feature_factorization.deep_feature_factorization import run_dff_on_image as run_dff_on_image  # noqa: E402

#: pytorch-grad-cam's classes that are not one registry method (meta methods, factorization, guided backprop).
META_CLASSES = ("FinerCAM", "RefineCAM", "SESS", "DeepFeatureFactorization", "GuidedBackpropReLUModel")


def __getattr__(name: str) -> Any:
    for key in list_methods():
        spec = get_method(key)
        if name in _class_names(spec):
            return _make_class(spec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *(n for key in list_methods() for n in _class_names(get_method(key)))})


__all__ = [  # the method classes follow: pytorch-grad-cam's names, then camkit's
    "IGNORED_ARGUMENTS",
    "META_CLASSES",
    "AblationLayer",
    "AblationLayerFasterRCNN",
    "AblationLayerVit",
    "ActivationsAndGradients",
    "PEER_METHODS",
    "SESS",
    "CAMMethod",
    "DeepFeatureFactorization",
    "FinerCAM",
    "GuidedBackpropReLUModel",
    "PerSampleTargets",
    "RefineCAM",
    "available",
    "batched_target",
    "run_dff_on_image",
    *available(),
    *sorted(set(_MADE) - set(available())),
]
