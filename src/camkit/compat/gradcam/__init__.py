"""pytorch-grad-cam-style front door: same class names and call convention, camkit's engine.

Switch by changing the import::

    from camkit.compat.gradcam import GradCAM                      # was: from pytorch_grad_cam import GradCAM
    from camkit.compat.gradcam.utils.model_targets import ClassifierOutputTarget
    from camkit.compat.gradcam.utils.image import show_cam_on_image

    with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(281)])  # (N, H, W) float32

Which classes exist: :data:`PEER_METHODS` maps every pytorch-grad-cam class name to a camkit
registry name. At import, a class is created for each name whose registry entry exists (they are
in ``__all__``); :func:`available` lists them. Importing a pytorch-grad-cam name whose method camkit
does not have yet raises :class:`NotImplementedError` naming the method, at the import line
(``from camkit.compat.gradcam import AblationCAM``), instead of a generic ``ImportError`` or a class
that fails later. A method registered after this module was imported is picked up on first access.

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

from camkit.registry import get_method

from ._adapter import PerSampleTargets as PerSampleTargets
from ._adapter import batched_target as batched_target
from ._base import CAMMethod as CAMMethod
from ._fullgrad import FullGradMethod

#: pytorch-grad-cam class name → (camkit registry name, its extra constructor arguments + defaults).
PEER_METHODS: Mapping[str, tuple[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "GradCAM": ("gradcam", {}),
        "HiResCAM": ("hirescam", {}),
        "GradCAMElementWise": ("gradcamelementwise", {}),
        "GradCAMPlusPlus": ("gradcampp", {}),
        "XGradCAM": ("xgradcam", {}),
        "AblationCAM": ("ablationcam", {"ratio_channels_to_ablate": 1.0}),
        "ScoreCAM": ("scorecam", {"max_channels": None}),
        "EigenCAM": ("eigencam", {}),
        "EigenGradCAM": ("eigengradcam", {}),
        "LayerCAM": ("layercam", {}),
        "FullGrad": ("fullgrad", {}),
        "KPCA_CAM": ("kpcacam", {"kernel": "sigmoid", "gamma": None}),
        "FEM": ("fem", {"k": 2}),
        "ShapleyCAM": ("shapleycam", {}),
        "RandomCAM": ("randomcam", {}),
        "SegEigenCAM": ("segeigencam", {}),
    }
)

#: Constructor arguments accepted for compatibility but unused by camkit (a non-default value warns).
IGNORED_ARGUMENTS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "AblationCAM": {
            "ratio_channels_to_ablate": "camkit ablates every channel (its re-forward runs only the layers "
            "after the target layer, so the peer's approximate speed-up is not needed)"
        },
    }
)


def _registered(registry_name: str) -> bool:
    try:
        get_method(registry_name)
    except ValueError:
        return False
    return True


def _make_class(class_name: str) -> type[CAMMethod]:
    registry_name, defaults = PEER_METHODS[class_name]
    spec = get_method(registry_name)
    doc = (
        f"pytorch-grad-cam's ``{class_name}`` on camkit's ``{spec.name}`` method: {spec.summary}\n\n"
        f"Paper: {spec.paper}. Constructor and call as :class:`CAMMethod`"
        + (f"; extra arguments: {', '.join(f'{k}={v!r}' for k, v in defaults.items())}." if defaults else ".")
    )
    attrs = {
        "method": spec.name,
        "defaults": MappingProxyType(dict(defaults)),
        "ignored": MappingProxyType(dict(IGNORED_ARGUMENTS.get(class_name, {}))),
        "__doc__": doc,
        "__module__": __name__,
    }
    base = FullGradMethod if class_name == "FullGrad" else CAMMethod
    cls = type(class_name, (base,), attrs)
    globals()[class_name] = cls
    return cls


def available() -> list[str]:
    """The pytorch-grad-cam class names this front door provides (their camkit method exists).

    Returns:
        Class names, in pytorch-grad-cam's order.

    Example:
        >>> "GradCAM" in available()
        True
    """
    return [name for name, (registry_name, _) in PEER_METHODS.items() if _registered(registry_name)]


for _name in available():
    _make_class(_name)

# The meta classes default to the GradCAM / GradCAMPlusPlus classes made above, so they come after.
from ._extras import DeepFeatureFactorization as DeepFeatureFactorization  # noqa: E402
from ._extras import GuidedBackpropReLUModel as GuidedBackpropReLUModel  # noqa: E402
from ._meta import SESS as SESS  # noqa: E402
from ._meta import FinerCAM as FinerCAM  # noqa: E402
from ._meta import RefineCAM as RefineCAM  # noqa: E402

#: pytorch-grad-cam's classes that are not one registry method (meta methods, factorization, guided backprop).
META_CLASSES = ("FinerCAM", "RefineCAM", "SESS", "DeepFeatureFactorization", "GuidedBackpropReLUModel")


def __getattr__(name: str) -> Any:
    if name in PEER_METHODS:
        if _registered(PEER_METHODS[name][0]):
            return _make_class(name)
        raise NotImplementedError(
            f"{name} (pytorch-grad-cam) is not implemented in camkit yet: no registry method "
            f"{PEER_METHODS[name][0]!r}. Available here: {', '.join(available())}"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [  # the method classes follow, in pytorch-grad-cam's order
    "IGNORED_ARGUMENTS",
    "META_CLASSES",
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
    *available(),
]
