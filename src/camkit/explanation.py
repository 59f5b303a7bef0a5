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

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

from camkit.engine import ImageArg, LayerSpec, ModelInput, first_convolution, reference_tensor
from camkit.models import LoadedModel, Preprocess, check_categories, load_model, to_rgb
from camkit.passes import extractor_class, run_methods
from camkit.registry import get_method, list_methods
from camkit.targets import ClassTarget

__all__ = ["MIN_IMAGE_SIDE", "Explanation", "explain", "extractor_class", "open_image"]

ImageLike = str | os.PathLike[str] | Image.Image | np.ndarray[Any, Any]

#: the shortest image side (pixels) :func:`explain` accepts: a CNN's last stage has one position per 32 pixels
MIN_IMAGE_SIDE = 32
#: samples shown by an :class:`Explanation`'s repr and notebook view
_SHOWN = 8


@dataclass
class Explanation:
    """What :func:`explain` found.

    Its ``repr`` is a short summary (methods, map shape, layers, per sample the explained classes
    with their probabilities); in a notebook it shows the overlay grid of the first images (one
    column per method) and a table of the predictions.

    Attributes:
        maps: method name → maps ``(N, K, H, W)`` in ``[0, 1]`` at the input size, one per sample and
            explained class (``K`` = ``topk``, or 1 when ``class_idx`` was given).
        classes: the explained class indices ``(N, K)``; ``(N, 0)`` when class-agnostic methods
            (Eigen-CAM, KPCA-CAM, FEM, Random-CAM) explained a model whose output holds no class
            scores (a detector, a segmenter): then ``K = 1`` in the maps.
        probabilities: softmax of the model output ``(N, num_classes)`` (``(N, 0)`` as above).
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

    def _picks(self, sample: int) -> list[tuple[int, str, float]]:
        """The explained classes of ``sample`` as ``(index, name, probability)``."""
        row = self.probabilities[sample]
        return [(c, self.label(c), float(row[c])) for c in self.classes[sample].tolist()]

    def _named(self, index: int, probability: float) -> str:
        name = self.label(index)
        return f"{name} ({index}) p={probability:.3f}" if name != f"class {index}" else f"{name} p={probability:.3f}"

    def __repr__(self) -> str:
        """A short summary: methods, map shape, layers, and per sample its explained classes."""
        count = int(self.classes.shape[0])
        shape = tuple(next(iter(self.maps.values())).shape) if self.maps else ()
        layers = sorted({name for names in self.layers.values() for name in names})
        head = (
            f"Explanation({count} sample{'s' if count != 1 else ''}, methods {list(self.maps)}, maps {shape}, "
            f"layers {layers}{', with images' if self.images is not None else ''}"
        )
        lines = [head]
        for i in range(min(count, _SHOWN)):
            picks = ", ".join(self._named(c, p) for c, _, p in self._picks(i))
            if not self.classes.shape[1]:  # a class-agnostic method on a model without class scores
                lines.append(f"  sample {i}: no class (the model output holds no class scores)")
                continue
            top = int(self.probabilities[i].argmax())
            if top != int(self.classes[i, 0]):
                picks += f"; top-1 {self._named(top, float(self.probabilities[i, top]))}"
            lines.append(f"  sample {i}: {picks}")
        if count > _SHOWN:
            lines.append(f"  ... and {count - _SHOWN} more")
        return "\n".join(lines) + ")"

    def _predictions_html(self) -> str:
        """An HTML table of the explained classes of the first samples."""
        cells = "".join(
            f"<tr><td>{i}</td><td>{rank}</td><td>{c}</td><td>{html.escape(name)}</td><td>{p:.3f}</td></tr>"
            for i in range(min(int(self.classes.shape[0]), _SHOWN))
            for rank, (c, name, p) in enumerate(self._picks(i))
        )
        more = self.classes.shape[0] - _SHOWN
        caption = f"<caption>first {_SHOWN} of {self.classes.shape[0]} samples</caption>" if more > 0 else ""
        return (
            f"<table>{caption}<tr><th>sample</th><th>rank</th><th>class</th><th>name</th><th>probability</th></tr>"
            f"{cells}</table>"
        )

    def _repr_html_(self) -> str:
        """The notebook view: the overlay grid (one row per image, one column per method) and the predictions."""
        from camkit.viz import grid

        table = self._predictions_html()
        shown = min(int(self.classes.shape[0]), _SHOWN)
        if self.images is None or not self.maps or shown == 0:
            return table
        figure = grid(
            self.images[:shown],
            {name: [maps[i, 0].detach().float().cpu() for i in range(shown)] for name, maps in self.maps.items()},
            cell_size=160 if len(self.maps) <= 6 else 112,
            row_labels=[self.label(int(self.classes[i, 0])) if self.classes.shape[1] else "" for i in range(shown)],
        )
        buffer = io.BytesIO()
        figure.save(buffer, format="PNG")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        alt = html.escape(f"{', '.join(self.maps)} maps of {shown} image(s)", quote=True)
        return f'<div><img src="data:image/png;base64,{data}" alt="{alt}"/>{table}</div>'


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; an unreadable EXIF block leaves it as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF data raises many kinds of errors; the pixels are still good
        return image


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as 8-bit RGB, upright, with an error that names the file when it is missing or unreadable.

    The EXIF orientation is applied (a photo taken sideways comes out upright), 16-bit images
    (PNG, TIFF) are scaled to 8 bits, and transparency is composited on white (see
    :func:`camkit.models.to_rgb`).

    Args:
        path: the image file.

    Returns:
        The ``RGB`` image.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the path is a folder or the file is not an image Pillow can read.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "gray16.png"
        >>> Image.new("I;16", (40, 30), 257 * 200).save(path)  # a 16-bit grayscale PNG
        >>> open_image(path).getpixel((0, 0))
        (200, 200, 200)
    """
    file = Path(path)
    if file.is_dir():
        raise ValueError(f"image {str(file)!r} is a folder: pass an image file (or the files inside the folder)")
    if not file.is_file():
        raise FileNotFoundError(f"image {str(file)!r} does not exist: check the path")
    try:
        with Image.open(file) as image:
            return to_rgb(_upright(image))
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read {str(file)!r} as an image ({error}); use a PNG, JPEG, ... file") from None


def _reads_signals(model: nn.Module) -> bool:
    """Whether the model's first convolution is 1-D (then a 3-D tensor is a batch of signals)."""
    return isinstance(first_convolution(model), nn.Conv1d)


_ACCEPTED = "a PIL image, an image file, an (H, W, 3) uint8 numpy array, a list of them, or a tensor (N, C, H, W)"


def _is_image_array(array: np.ndarray[Any, Any]) -> bool:
    """Whether a numpy array holds 8-bit pixels ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``."""
    return array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)))


def _array_tensor(array: np.ndarray[Any, Any], dtype: torch.dtype | None) -> Tensor:
    """A float numpy array as a tensor of the model's dtype (``(C, H, W)`` or ``(N, C, H, W)``, as a tensor)."""
    shape = tuple(array.shape)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"images as a numpy array must be 8-bit pixels (H, W, 3) of dtype uint8, or a float array "
            f"(C, H, W) / (N, C, H, W) like a tensor; got dtype {array.dtype} and shape {shape}: "
            "convert it (array.astype(np.uint8) for pixels in 0-255)"
        )
    if array.ndim in (3, 4) and shape[-1] in (3, 4) and shape[-3] not in (1, 3, 4):
        raise ValueError(
            f"images as a float numpy array of shape {shape} has its channels last; camkit reads float arrays "
            "as tensors (N, C, H, W): pass array.transpose(2, 0, 1) (or (0, 3, 1, 2) for a batch), or the "
            "pixels as uint8 (H, W, 3)"
        )
    tensor = torch.as_tensor(np.ascontiguousarray(array))
    return tensor if dtype is None or not dtype.is_floating_point else tensor.to(dtype)


def _image_of(item: Any, index: int) -> tuple[Image.Image, str]:
    """One image of a list given to :func:`explain`, with how to name it in a message."""
    if isinstance(item, Image.Image):
        return item, f"images[{index}]"
    if isinstance(item, np.ndarray) and _is_image_array(item):
        return Image.fromarray(np.ascontiguousarray(item)), f"images[{index}]"
    if isinstance(item, str | os.PathLike):
        return open_image(item), f"image {os.fspath(item)!r}"
    what = f"a numpy array of dtype {item.dtype} and shape {tuple(item.shape)}" if isinstance(item, np.ndarray) else ""
    raise TypeError(
        f"images[{index}] is {what or type(item).__name__}: a list of images may hold PIL images, image files and "
        "(H, W, 3) uint8 numpy arrays; pass several tensors as one batch (torch.stack)"
    )


def _check_side(image: Image.Image, where: str) -> None:
    width, height = image.size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"{where} is {width}x{height} pixels, below explain's minimum of {MIN_IMAGE_SIDE} pixels on the shorter "
            f"side (a CNN's last stage has one position per {MIN_IMAGE_SIDE} pixels, so its map would be "
            "meaningless): pass a larger image, or a preprocessed tensor"
        )


def _inputs(
    images: Any, preprocess: Preprocess, image_arg: ImageArg, signals: bool, dtype: torch.dtype | None
) -> tuple[ModelInput, list[Image.Image] | None]:
    if isinstance(images, Mapping) or (isinstance(images, tuple | list) and any(isinstance(i, Tensor) for i in images)):
        return ModelInput.of(images, image_arg), None  # the model's own arguments
    if isinstance(images, np.ndarray) and not _is_image_array(images):
        images = _array_tensor(images, dtype)
    if isinstance(images, Tensor):
        return ModelInput.of(images.unsqueeze(0) if images.ndim == 3 and not signals else images), None
    if isinstance(images, str | os.PathLike | Image.Image | np.ndarray):
        items = [images]
    elif isinstance(images, Sequence):
        items = list(images)
    else:
        raise TypeError(f"images must be {_ACCEPTED}; got {type(images).__name__}")
    if not items:
        raise ValueError("images is empty: pass at least one image, file or tensor")
    pictures = []
    for index, item in enumerate(items):
        picture, where = _image_of(item, index)
        _check_side(picture, where if len(items) > 1 or where.startswith("image ") else "the image")
        pictures.append(picture)
    views = [preprocess.view(picture) for picture in pictures]
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
    batch_size: int | str | None = None,
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
        images: a PIL image, an image file, an ``(H, W, 3)`` uint8 numpy array (pixels), a list of
            them, or a preprocessed tensor ``(N, C, H, W)`` (``(C, H, W)`` is one image, except for a
            model whose first convolution is 1-D: then ``(N, C, L)`` is a batch of signals;
            ``(N, C, D, H, W)`` volumes or videos); a float numpy array is read as that tensor (cast to
            the model's dtype); for a model with several inputs, a tuple of positional arguments or a
            dict of keyword arguments (e.g. a Hugging Face processor's output) with the image among
            them. Images (not tensors) must be at least :data:`MIN_IMAGE_SIDE` (32) pixels on their
            shorter side.
        method: a registry name or a list of them (``"all"`` for every registered method).
        target_layer: layer(s) to explain; default: the loaded model's default layer, else camkit's
            automatic choice (methods with their own layers, e.g. FullGrad, use those).
        class_idx: the class to explain (one int, or one per sample); default: the top ``topk`` classes.
        topk: how many top classes to explain per sample when ``class_idx`` is ``None``.
        preprocess: how to turn PIL images into the input; default: the loaded model's, or ImageNet's.
        categories: class names by index, one per class of the model (default: the loaded model's).
        batch_size: inputs per forward for methods that re-run the model (``None``: 8 on a CPU,
            32 on a GPU; ``"auto"``: see :func:`camkit.engine.auto_batch_size`).
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
        ValueError: for an unknown method, a bad ``topk``/``class_idx``, unreadable or too small
            images, or ``categories`` whose length is not the model's number of classes.
        TypeError: for a ``model`` or ``images`` of an unsupported type, or an unknown option.
    """
    if isinstance(model, str):
        loaded: nn.Module | LoadedModel = load_model(model)
    elif isinstance(model, nn.Module | LoadedModel):
        loaded = model
    else:
        hint = ": call it to build the model" if callable(model) else ""
        raise TypeError(
            "model must be a torch.nn.Module, a camkit.models.LoadedModel or a model name string such as "
            f"'efficientnet_lite0'; got {type(model).__name__} {str(model)[:60]!r}{hint}"
        )
    names_from = "categories"
    if isinstance(loaded, LoadedModel):
        net, preprocess = loaded.model, preprocess or loaded.preprocess
        if categories is None:
            categories, names_from = loaded.categories, "the loaded model's categories (LoadedModel.categories)"
        default_layer: LayerSpec = target_layer if target_layer is not None else loaded.target_layer
    else:
        net, preprocess, default_layer = loaded, preprocess or Preprocess(), target_layer
    asked = list_methods() if method == "all" else [method] if isinstance(method, str) else list(method)
    names = [get_method(name).name for name in asked]
    if not names:
        raise ValueError("method is empty: pass a registry name, a list of them, or 'all'")
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise ValueError(f"topk must be a positive int, got {topk!r}")
    reference = reference_tensor(net)
    call, views = _inputs(
        images, preprocess, image_arg, _reads_signals(net), None if reference is None else reference.dtype
    )
    call = call.to(_device_of(net))
    x = call.image

    def choose(probabilities: Tensor) -> Tensor:
        check_categories(categories, probabilities.shape[1], names_from)  # after the first forward only
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
    if class_idx is not None and not classes.shape[1]:
        raise ValueError(
            f"class_idx={class_idx!r} was given, but the model output holds no class scores (N, num_classes): "
            "class-agnostic methods (eigencam, kpcacam, fem, randomcam) explain no class; drop class_idx"
        )
    return Explanation(maps, classes, probabilities, list(categories) if categories else None, layers, views)
