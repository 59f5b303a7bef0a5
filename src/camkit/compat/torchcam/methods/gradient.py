"""``torchcam.methods.gradient``: the gradient-based CAM classes, camkit's own classes (:mod:`camkit.methods`).

Same constructor arguments and call as TorchCAM's (``extractor(class_idx, scores)``); the maps
follow each method's paper where TorchCAM's code departs from it (see
``docs/coming-from-peers.md``). ``targets=`` takes TorchCAM's per-sample ``OutputTarget``s (one
callable of one sample's output, or a list with one per sample) as well as camkit targets
(:mod:`camkit.targets`).
"""

from camkit.methods import FinerCAM, GradCAM, GradCAMpp, LayerCAM, LeGrad, RefineCAM, SmoothGradCAMpp, XGradCAM

__all__ = ["FinerCAM", "GradCAM", "GradCAMpp", "LayerCAM", "LeGrad", "RefineCAM", "SmoothGradCAMpp", "XGradCAM"]
