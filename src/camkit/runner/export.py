"""Overlay PNGs for every record of a store: :func:`export` (``camkit export``).

Also the output naming that ``camkit explain`` shares (:func:`output_bases`) and the check of an
output path before any work (:func:`check_out`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from camkit.engine import Progress
from camkit.explanation import open_image
from camkit.models import Preprocess
from camkit.runner.store import Store, open_store
from camkit.viz import colorize, get_colormap, overlay_mask
from camkit.viz.overlay import check_alpha

__all__ = ["check_out", "export", "output_bases"]


def _clean(key: str) -> str:
    """A ``/``-separated relative path without empty, ``.`` and ``..`` parts (it stays inside the output folder)."""
    return "/".join(part for part in key.split("/") if part not in ("", ".", ".."))


def output_bases(keys: Sequence[str], labels: Sequence[str] | None = None) -> list[str]:
    """Where each input's files go, relative to the output folder, before ``_<method>_<class>.png``.

    The rule: an input's relative path without its extension (``a/img.jpg`` → ``a/img``), so the
    output folder mirrors the input folder; when two inputs of one folder share that stem
    (``x.jpg`` and ``x.png``), both keep their extension (``x.jpg``, ``x.png``). Every base is
    checked before anything is written: two inputs that still map to the same base (the same
    relative path under two folders) are an error.

    Args:
        keys: one ``/``-separated relative path per input.
        labels: how to name each input in the error (default: its key).

    Returns:
        One base per key, in order.

    Raises:
        ValueError: when two inputs would write the same files (both named, and the fix).

    Example:
        >>> output_bases(["a/img.jpg", "b/img.jpg", "x.jpg", "x.png", "y.png"])
        ['a/img', 'b/img', 'x.jpg', 'x.png', 'y']
    """
    clean = [_clean(key) or "image" for key in keys]
    stems = [str(PurePosixPath(c).with_suffix("")) if PurePosixPath(c).suffix else c for c in clean]
    counts = Counter(stems)
    bases = [stem if counts[stem] == 1 else path for stem, path in zip(stems, clean, strict=True)]
    names = list(labels) if labels is not None else list(keys)
    first: dict[str, int] = {}
    for i, base in enumerate(bases):
        if base in first:
            raise ValueError(
                f"{names[first[base]]!r} and {names[i]!r} would write the same files ({base}_<method>_<class>.png): "
                "rename one of them, or write them in two runs to different output folders"
            )
        first[base] = i
    return bases


def check_out(path: str | os.PathLike[str], *, file: bool = False, name: str = "out") -> Path:
    """Check, before any work, that ``path`` can be written: a folder (or, with ``file``, a file) to create or reuse.

    Nothing is created. Refused: an existing file where a folder is wanted (and a folder where a
    file is), a path under a file, and a path whose nearest existing folder is not writable.

    Args:
        path: the output folder, or with ``file=True`` the output file.
        file: whether ``path`` names a file (an HTML report) rather than a folder.
        name: how to name the argument in the error (``"--out"`` on the command line).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: one line naming the problem and the fix.

    Example:
        >>> import tempfile
        >>> check_out(Path(tempfile.mkdtemp()) / "new" / "folder").name
        'folder'
    """
    target = Path(path)
    if file and target.is_dir():
        raise ValueError(f"{name} {str(target)!r} is a folder: name the file to write (e.g. {target / 'report.html'})")
    if not file and target.exists() and not target.is_dir():
        raise ValueError(
            f"{name} {str(target)!r} is a file, not a folder: name a folder to write into (made if missing)"
        )
    probe = target.parent if file else target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{name} {str(target)!r} is inside {str(probe)!r}, which is a file: name a path in a folder")
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {str(target)!r} cannot be written: {str(probe)!r} is not writable; pick another path")
    return target


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
    ``OUT/<key's folder>/<stem>_<method>_<class>.png``, as ``camkit explain`` names them (the
    stem keeps its extension when two images of a folder share it: :func:`output_bases`).

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
        ValueError: for a method not in the store, a source folder that no longer exists, an
            ``out`` that cannot be a folder, or an unknown colormap or bad ``alpha`` (all before
            anything is drawn).
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
    get_colormap(colormap)
    check_alpha(alpha)
    folder = check_out(out)
    pre = opened.options["preprocess"]
    preprocess = Preprocess(pre["resize"], pre["crop"], tuple(pre["mean"]), tuple(pre["std"]))
    keys = list(opened)
    bases = dict(zip(keys, output_bases(keys), strict=True))
    written: set[Path] = set()
    bar = Progress(len(keys), "overlays", enabled=progress)
    for key in keys:
        record = opened[key]
        image = preprocess.view(open_image(root / key)) if root is not None else None
        classes = record.target if isinstance(record.target, tuple) else (record.target,)
        base = folder / bases[key]
        base.parent.mkdir(parents=True, exist_ok=True)
        for name, maps in record.resized().items():
            if name not in names:
                continue
            for cls, cam in zip(classes, maps.reshape(-1, *maps.shape[-2:]), strict=True):
                drawn = colorize(cam, colormap) if image is None else overlay_mask(image, cam, colormap, alpha)
                path = base.with_name(f"{base.name}_{name}_{cls}.png")
                drawn.save(path)
                written.add(path)
        bar.update(1)
    bar.close()
    return len(written)
