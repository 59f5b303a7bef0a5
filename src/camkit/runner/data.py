"""Where the images of a run come from, and how they are decoded in DataLoader workers.

A source is a folder (ImageFolder layout: one sub-folder per class, whose sorted names give the
labels 0, 1, ...; or a flat folder of images) or any :class:`torch.utils.data.Dataset` whose items
are a PIL image or a ``(C, H, W)`` tensor, optionally as ``(image, label)``. Every image gets a
key: its path relative to the folder, ``/``-separated.

Decoding runs in :class:`Items`, inside the DataLoader's worker processes, while the model runs on
the previous batch. An image that cannot be read becomes a failed item with its reason; it never
stops the run.

Example:
    >>> parse_target("topk:3")
    ('topk', 3)
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from camkit.explanation import open_image
from camkit.models import Preprocess

__all__ = ["IMAGE_SUFFIXES", "Batch", "Item", "Items", "Source", "collate", "dataset_source", "folder_source"]

#: file suffixes read as images (case-insensitive)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

TARGET_HELP = "label, pred, topk:K or class:C"


def parse_target(text: str) -> tuple[str, int]:
    """Read a ``--target`` rule: which class each image's maps explain.

    Args:
        text: ``"label"`` (the folder's or dataset's label), ``"pred"`` (the top class),
            ``"topk:K"`` (the K most probable classes) or ``"class:C"`` (class C for every image).

    Returns:
        ``("label", 1)``, ``("topk", K)`` (``"pred"`` is ``("topk", 1)``) or ``("class", C)``.

    Raises:
        ValueError: for another rule, or K < 1 or C < 0.

    Example:
        >>> parse_target("pred"), parse_target("class:281")
        (('topk', 1), ('class', 281))
    """
    rule, _, number = str(text).partition(":")
    if rule in ("label", "pred") and not number:
        return ("label", 1) if rule == "label" else ("topk", 1)
    if rule in ("topk", "class") and number.isdigit():
        value = int(number)
        if rule == "class" or value >= 1:
            return rule, value
    raise ValueError(f"target {text!r} is not one of {TARGET_HELP} (K >= 1, C >= 0), e.g. topk:5 or class:281")


def target_text(rule: tuple[str, int]) -> str:
    """The canonical spelling of a parsed target rule (``("topk", 1)`` is ``"pred"``)."""
    kind, value = rule
    if kind == "label" or (kind == "topk" and value == 1):
        return "label" if kind == "label" else "pred"
    return f"{kind}:{value}"


@dataclass
class Source:
    """The images of a run, in a fixed order.

    Attributes:
        keys: one key per image (relative ``/``-separated path for folders).
        identity: what the store records as the run's source.
        root: the folder (folder sources), for reading images back in ``camkit export``.
        labels: the label of each image from its class sub-folder (``None`` outside one).
        classes: the class sub-folder names by label (ImageFolder layout), else ``None``.
        dataset: the dataset (dataset sources).
    """

    keys: list[str]
    identity: str
    root: Path | None = None
    labels: list[int | None] = field(default_factory=list)
    classes: list[str] | None = None
    dataset: Dataset[Any] | None = None


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _walk(folder: Path) -> list[Path]:
    found: list[Path] = []
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(here) / f for f in sorted(files) if _is_image(f))
    return found


def folder_source(path: str | os.PathLike[str]) -> Source:
    """List the images of a folder, ImageFolder layout or flat.

    Images inside a first-level sub-folder get that sub-folder's label (its position among the
    sorted sub-folder names that hold images, as torchvision's ``ImageFolder``); images directly in
    the folder get no label.

    Args:
        path: the folder.

    Returns:
        The source, keys sorted.

    Raises:
        FileNotFoundError: when the folder does not exist.
        ValueError: when it is not a folder or holds no images.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "cat").mkdir()
        >>> Image.new("RGB", (4, 4)).save(root / "cat" / "a.png")
        >>> src = folder_source(root)
        >>> src.keys, src.labels, src.classes
        (['cat/a.png'], [0], ['cat'])
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"source folder {str(folder)!r} does not exist: pass a folder of images")
    if not folder.is_dir():
        raise ValueError(
            f"source {str(folder)!r} is not a folder: pass a folder of images (camkit explain takes single files)"
        )
    files = _walk(folder)
    if not files:
        raise ValueError(f"source folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    keys = sorted(f.relative_to(folder).as_posix() for f in files)
    classes = sorted({k.split("/", 1)[0] for k in keys if "/" in k})
    index = {name: i for i, name in enumerate(classes)}
    labels = [index[k.split("/", 1)[0]] if "/" in k else None for k in keys]
    identity = f"folder:{folder.resolve().as_posix()}"
    return Source(keys, identity, folder, labels, classes or None)


def dataset_source(dataset: Dataset[Any], keys: Sequence[str] | None = None) -> Source:
    """Wrap a map-style dataset; keys are ``keys``, else the file paths of an ImageFolder-like dataset, else indices.

    Args:
        dataset: a dataset with ``__len__`` whose items are an image or ``(image, label, ...)``.
        keys: one unique key per item.

    Returns:
        The source.

    Raises:
        TypeError: when the dataset has no length.
        ValueError: when ``keys`` has the wrong length or repeats a key.

    Example:
        >>> dataset_source([torch.zeros(3, 4, 4)] * 2).keys
        ['00000000', '00000001']
    """
    if not hasattr(dataset, "__len__"):
        raise TypeError(f"dataset must be a map-style Dataset with __len__, got {type(dataset).__name__}")
    size = len(dataset)
    samples = getattr(dataset, "samples", None)
    root = getattr(dataset, "root", None)
    if keys is None and isinstance(samples, list) and len(samples) == size and root is not None:
        base = Path(root)
        keys = [Path(sample[0]).relative_to(base).as_posix() for sample in samples]
    if keys is None:
        keys = [f"{i:08d}" for i in range(size)]
    keys = [str(k) for k in keys]
    if len(keys) != size:
        raise ValueError(f"keys has {len(keys)} entries but the dataset has {size} items: pass one key per item")
    if len(set(keys)) != size:
        raise ValueError("keys repeat: pass one unique key per dataset item")
    kind = type(dataset)
    identity = f"dataset:{kind.__module__}.{kind.__qualname__}" + (f":{Path(root).as_posix()}" if root else "")
    return Source(keys, identity, Path(root) if root else None, [None] * size, None, dataset)


@dataclass
class Item:
    """One decoded image (``pixels``), or why it could not be decoded (``reason``)."""

    index: int
    pixels: Tensor | None
    label: int | None
    reason: str | None
    seconds: float


def _label_of(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    return None


class Items(Dataset[Item]):
    """The images of a source as model inputs; a failure becomes an :class:`Item` with a reason.

    Args:
        source: the images.
        preprocess: turns a PIL image into the model input (tensors from a dataset are used as given).
    """

    def __init__(self, source: Source, preprocess: Preprocess) -> None:
        self.source = source
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.source.keys)

    def _load(self, index: int) -> tuple[Tensor, int | None]:
        source = self.source
        if source.dataset is None:
            assert source.root is not None
            return self.preprocess(open_image(source.root / source.keys[index])), source.labels[index]
        item: Any = source.dataset[index]
        label = None
        if isinstance(item, (tuple, list)):
            item, label = item[0], _label_of(item[1]) if len(item) > 1 else None
        if isinstance(item, Image.Image):
            return self.preprocess(item), label
        if isinstance(item, Tensor) and item.ndim == 3 and item.is_floating_point():
            return item, label
        shape = f" of shape {tuple(item.shape)}" if isinstance(item, Tensor) else ""
        raise TypeError(f"dataset item is a {type(item).__name__}{shape}, not a PIL image or a float (C, H, W) tensor")

    def __getitem__(self, index: int) -> Item:
        start = time.perf_counter()
        try:
            pixels, label = self._load(index)
        except Exception as error:  # recorded in the store with its reason, never dropped silently
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
            return Item(index, None, None, reason, time.perf_counter() - start)
        return Item(index, pixels, label, None, time.perf_counter() - start)


@dataclass
class Batch:
    """The good images of a batch stacked, and the failed ones with their reasons."""

    indices: list[int]
    x: Tensor | None
    labels: list[int | None]
    failures: list[tuple[int, str]]
    seconds: float

    def __len__(self) -> int:
        return len(self.indices) + len(self.failures)

    def pin_memory(self) -> Batch:
        """The batch with its pixels in pinned memory (DataLoader ``pin_memory=True``)."""
        return Batch(
            self.indices, None if self.x is None else self.x.pin_memory(), self.labels, self.failures, self.seconds
        )


def collate(items: list[Item]) -> Batch:
    """Stack the decoded items of a batch; items of another shape than the first fail with the reason.

    Args:
        items: decoded items.

    Returns:
        The batch.

    Example:
        >>> good = Item(0, torch.zeros(3, 2, 2), 1, None, 0.0)
        >>> collate([good, Item(1, None, None, "OSError: truncated", 0.0)]).failures
        [(1, 'OSError: truncated')]
    """
    decoded = [(i, i.pixels) for i in items if i.pixels is not None]
    failures = [(i.index, i.reason or "unreadable") for i in items if i.pixels is None]
    shape = decoded[0][1].shape if decoded else None
    failures += [
        (i.index, f"input shape {tuple(p.shape)} differs from {tuple(shape or ())}: resize/crop every item alike")
        for i, p in decoded
        if p.shape != shape
    ]
    good = [(i, p) for i, p in decoded if p.shape == shape]
    x = torch.stack([p for _, p in good]) if good else None
    return Batch([i.index for i, _ in good], x, [i.label for i, _ in good], failures, sum(i.seconds for i in items))
