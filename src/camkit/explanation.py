"""One call from images to maps: :func:`explain`, for notebooks and the ``camkit`` command.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> from camkit import explain
    >>> result = explain(resnet18().eval(), torch.rand(2, 3, 64, 64), method=["gradcam", "layercam"], topk=2)
    >>> result.maps["gradcam"].shape, result.classes.shape
    (torch.Size([2, 2, 64, 64]), torch.Size([2, 2]))
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from camkit.engine import ImageArg, LayerSpec, ModelInput, first_convolution
from camkit.models import LoadedModel, Preprocess, load_model
from camkit.passes import extractor_class, run_methods
from camkit.registry import get_method, list_methods
from camkit.targets import ClassTarget

__all__ = ["Explanation", "explain", "extractor_class", "open_image"]

ImageLike = str | os.PathLike[str] | Image.Image


@dataclass
class Explanation:
    """What :func:`explain` found.

    Attributes:
        maps: method name → maps ``(N, K, H, W)`` in ``[0, 1]`` at the input size, one per sample and
            explained class (``K`` = ``topk``, or 1 when ``class_idx`` was given).
        classes: the explained class indices ``(N, K)``.
        probabilities: softmax of the model output ``(N, num_classes)``.
        categories: class names by index, when known.
        layers: method name → the target layer(s) used.
        images: the images as the model saw them (resized and cropped), when PIL images or files were given.
    """

    maps: dict[str, Tensor]
    classes: Tensor
    probabilities: Tensor
    categories: list[str] | None = None
    layers: dict[str, list[str]] = field(default_factory=dict)
    images: list[Image.Image] | None = None

    def label(self, index: int) -> str:
        """The name of class ``index`` (or ``"class <index>"`` when names are unknown)."""
        if self.categories is not None and 0 <= index < len(self.categories):
            return self.categories[index]
        return f"class {index}"

    def top(self, k: int = 5) -> list[list[tuple[int, str, float]]]:
        """Per sample, the ``k`` most probable classes as ``(index, name, probability)``."""
        k = min(k, self.probabilities.shape[1])
        values, indices = self.probabilities.topk(k, dim=1)
        return [
            [(int(i), self.label(int(i)), float(v)) for v, i in zip(row_v, row_i, strict=True)]
            for row_v, row_i in zip(values.tolist(), indices.tolist(), strict=True)
        ]

    def overlay(
        self, method: str | None = None, sample: int = 0, rank: int = 0, colormap: str = "jet", alpha: float = 0.5
    ) -> Image.Image:
        """The map of ``method`` for ``sample`` and its ``rank``-th explained class over the image.

        Raises:
            ValueError: when no images were given (tensors in), or for an unknown method/sample.
        """
        from camkit.viz import overlay_mask

        if self.images is None:
            raise ValueError("overlay() needs images: pass PIL images or files to explain(), not tensors")
        name = method or next(iter(self.maps))
        if name not in self.maps:
            raise ValueError(f"method {name!r} was not computed; computed: {sorted(self.maps)}")
        cam = self.maps[name][sample, rank]
        return overlay_mask(self.images[sample], cam.detach().float().cpu(), colormap=colormap, alpha=alpha)


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as RGB, with an error that names the file when it is missing or unreadable.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is not an image Pillow can read.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"image {str(file)!r} does not exist")
    try:
        with Image.open(file) as image:
            rgb: Image.Image = image.convert("RGB")
            return rgb
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read {str(file)!r} as an image ({error}); use a PNG, JPEG, ... file") from error


def _reads_signals(model: nn.Module) -> bool:
    """Whether the model's first convolution is 1-D (then a 3-D tensor is a batch of signals)."""
    return isinstance(first_convolution(model), nn.Conv1d)


def _inputs(
    images: Any, preprocess: Preprocess, image_arg: ImageArg, signals: bool
) -> tuple[ModelInput, list[Image.Image] | None]:
    if isinstance(images, Mapping) or (isinstance(images, tuple | list) and any(isinstance(i, Tensor) for i in images)):
        return ModelInput.of(images, image_arg), None  # the model's own arguments
    if isinstance(images, Tensor):
        return ModelInput.of(images.unsqueeze(0) if images.ndim == 3 and not signals else images), None
    items = [images] if isinstance(images, str | os.PathLike | Image.Image) else list(images)
    if not items:
        raise ValueError("images is empty: pass at least one image, file or tensor")
    views = [preprocess.view(item if isinstance(item, Image.Image) else open_image(item)) for item in items]
    return ModelInput.of(torch.stack([preprocess.to_tensor(v) for v in views])), views


def _device_of(model: nn.Module) -> torch.device:
    ref = next(iter(model.parameters()), None)
    return ref.device if ref is not None else torch.device("cpu")


#: explain's own keyword arguments (named when an unknown option is close to one of them)
_KEYWORDS = (
    "target_layer",
    "class_idx",
    "topk",
    "preprocess",
    "categories",
    "batch_size",
    "image_arg",
    "create_graph",
    "progress",
    "reforward",
    "reshape_transform",
    "eigen_smooth",
)


def explain(
    model: nn.Module | LoadedModel | str,
    images: ImageLike | Sequence[ImageLike] | Tensor | tuple[Any, ...] | Mapping[str, Any],
    method: str | Sequence[str] = "gradcam",
    *,
    target_layer: LayerSpec = None,
    class_idx: int | Sequence[int] | None = None,
    topk: int = 1,
    preprocess: Preprocess | None = None,
    categories: Sequence[str] | None = None,
    batch_size: int | str = 32,
    image_arg: ImageArg = None,
    create_graph: bool = False,
    progress: bool | None = None,
    reforward: str = "auto",
    reshape_transform: Any = None,
    eigen_smooth: bool = False,
    **options: Any,
) -> Explanation:
    """Explain a model's top classes (or given classes) on images with one or more methods.

    Each method runs through its TorchCAM-style extractor (hooks on the model, then the method's
    weights); maps are upsampled to the input size and min-max normalized per sample. The
    first forward also gives the probabilities and the classes to explain (no extra forward), and
    methods that read only the target layers share one forward (see :mod:`camkit.passes`).

    Args:
        model: a module, a :class:`~camkit.models.LoadedModel`, or a model name for
            :func:`camkit.models.load_model` (``"efficientnet_lite0"`` is the offline default).
        images: a PIL image, an image file, a list of them, or a preprocessed tensor ``(N, C, H, W)``
            (``(C, H, W)`` is one image, except for a model whose first convolution is 1-D: then
            ``(N, C, L)`` is a batch of signals; ``(N, C, D, H, W)`` volumes or videos);
            for a model with several inputs, a tuple of positional arguments or a dict of keyword
            arguments (e.g. a Hugging Face processor's output) with the image among them.
        method: a registry name or a list of them (``"all"`` for every registered method).
        target_layer: layer(s) to explain; default: the loaded model's default layer, else camkit's
            automatic choice (methods with their own layers, e.g. FullGrad, use those).
        class_idx: the class to explain (one int, or one per sample); default: the top ``topk`` classes.
        topk: how many top classes to explain per sample when ``class_idx`` is ``None``.
        preprocess: how to turn PIL images into the input; default: the loaded model's, or ImageNet's.
        categories: class names by index (default: the loaded model's).
        batch_size: inputs per forward for methods that re-run the model (``"auto"``: see
            :func:`camkit.engine.auto_batch_size`).
        image_arg: which argument of a tuple/dict input is the image (see :class:`camkit.engine.ModelInput`).
        create_graph: return maps that stay in the autograd graph, to use in a training loss (see
            :meth:`camkit.CAMExtractor.__call__`); gradient and activation methods only. The
            default returns detached maps from the lean path (no graph before the target layers).
        progress: a progress line for long perturbation runs (default: on a terminal).
        reforward: how AblationCAM-like methods re-run the network (see :class:`camkit.CAMExtractor`).
        reshape_transform: maps activations and gradients to ``(N, C, *S)`` (default: automatic).
        eigen_smooth: the first principal component of the weighted activations instead of their sum.
        **options: method options (``num_samples``, ``generator``, ...); each method gets those it
            declares, and one that no method declares raises ``TypeError`` naming the closest.

    Returns:
        An :class:`Explanation` with the maps, classes and probabilities.

    Raises:
        ValueError: for an unknown method, a bad ``topk``/``class_idx``, or unreadable images.
        TypeError: for an unknown option.
    """
    loaded = load_model(model) if isinstance(model, str) else model
    if isinstance(loaded, LoadedModel):
        net, preprocess = loaded.model, preprocess or loaded.preprocess
        categories = categories if categories is not None else loaded.categories
        default_layer: LayerSpec = target_layer if target_layer is not None else loaded.target_layer
    else:
        net, preprocess, default_layer = loaded, preprocess or Preprocess(), target_layer
    asked = list_methods() if method == "all" else [method] if isinstance(method, str) else list(method)
    names = [get_method(name).name for name in asked]
    if not names:
        raise ValueError("method is empty: pass a registry name, a list of them, or 'all'")
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise ValueError(f"topk must be a positive int, got {topk!r}")
    call, views = _inputs(images, preprocess, image_arg, _reads_signals(net))
    call = call.to(_device_of(net))
    x = call.image

    def choose(probabilities: Tensor) -> Tensor:
        if class_idx is None:
            return probabilities.topk(min(topk, probabilities.shape[1]), dim=1).indices
        given = class_idx.tolist() if isinstance(class_idx, Tensor | np.ndarray) else class_idx
        if isinstance(given, list | tuple) and len(given) == 1:
            given = given[0]  # one class for every sample
        n, count = probabilities.shape
        return ClassTarget(given).classes(n, count).to(probabilities.device).view(-1, 1)

    def layer_of(name: str) -> LayerSpec:
        return target_layer if get_method(name).layers is not None else default_layer

    switches = {"progress": progress, "reforward": reforward, "reshape_transform": reshape_transform}
    probabilities, classes, maps, layers = run_methods(
        net,
        call,
        names,
        layer_of,
        choose,
        batch_size=batch_size,
        size=x.shape[2:],
        create_graph=create_graph,
        switches={**switches, "eigen_smooth": eigen_smooth},
        keywords=_KEYWORDS,
        **options,
    )
    return Explanation(maps, classes, probabilities, list(categories) if categories else None, layers, views)
