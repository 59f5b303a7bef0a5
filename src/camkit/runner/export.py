"""Overlay PNGs for every record of a store: :func:`export` (``camkit export``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from camkit.engine import Progress
from camkit.explanation import open_image
from camkit.models import Preprocess
from camkit.runner.store import Store, open_store
from camkit.viz import colorize, overlay_mask

__all__ = ["export"]


def export(
    store: str | os.PathLike[str] | Store,
    out: str | os.PathLike[str],
    methods: Sequence[str] | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    colormap: str = "jet",
    alpha: float = 0.5,
    progress: bool | None = None,
) -> int:
    """Write one overlay PNG per record, method and explained class.

    Each map is upsampled to the input size (:meth:`Record.resized`) and drawn with
    :func:`camkit.viz.overlay_mask` over the image as the model saw it (resized and cropped with
    the store's preprocessing), read from the run's source folder. A store made from a dataset
    without a folder gets the coloured maps alone. Files are named
    ``OUT/<key's folder>/<stem>_<method>_<class>.png``, as ``camkit explain`` names them.

    Args:
        store: a store folder or an open :class:`Store`.
        out: the output folder.
        methods: the methods to draw (default: all in the store).
        source: the images' folder, when it moved since the run (default: the run's source).
        colormap: overlay colormap.
        alpha: weight of the image in the overlay, in ``[0, 1)``.
        progress: a progress line (default: when stderr is a terminal).

    Returns:
        The number of PNG files written.

    Raises:
        ValueError: for a method not in the store, or a source folder that no longer exists.
        FileNotFoundError: when ``store`` holds no store.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> import camkit
        >>> from camkit.models import LoadedModel, Preprocess
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> model = LoadedModel(net.eval(), "tiny", Preprocess(8, 8), target_layer="0")
        >>> out = tempfile.mkdtemp()
        >>> _ = camkit.run([torch.rand(3, 8, 8)] * 2, out, model=model, workers=0, progress=False)
        >>> export(out, tempfile.mkdtemp(), progress=False)
        2
    """
    opened = store if isinstance(store, Store) else open_store(store)
    names = list(methods) if methods else opened.methods
    unknown = [m for m in names if m not in opened.methods]
    if unknown:
        raise ValueError(f"method(s) {unknown} are not in store {str(opened.path)!r}; it holds {opened.methods}")
    root = Path(source) if source is not None else opened.root
    if root is not None and not root.is_dir():
        raise ValueError(
            f"the images' folder {str(root)!r} does not exist (any more): pass --source DIR (source=...) where they are"
        )
    pre = opened.options["preprocess"]
    preprocess = Preprocess(pre["resize"], pre["crop"], tuple(pre["mean"]), tuple(pre["std"]))
    folder = Path(out)
    written = 0
    bar = Progress(len(opened), "overlays", enabled=progress)
    for key in opened:
        record = opened[key]
        image = preprocess.view(open_image(root / key)) if root is not None else None
        classes = record.target if isinstance(record.target, tuple) else (record.target,)
        base = folder / "/".join(part for part in key.split("/") if part not in ("", ".", ".."))
        base.parent.mkdir(parents=True, exist_ok=True)
        for name, maps in record.resized().items():
            if name not in names:
                continue
            for cls, cam in zip(classes, maps.reshape(-1, *maps.shape[-2:]), strict=True):
                drawn = colorize(cam, colormap) if image is None else overlay_mask(image, cam, colormap, alpha)
                drawn.save(base.with_name(f"{base.stem}_{name}_{cls}.png"))
                written += 1
        bar.update(1)
    bar.close()
    return written
