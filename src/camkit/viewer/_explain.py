"""A folder of ``camkit explain --out`` outputs as the viewer reads it (``predictions.json`` and ``.npy`` maps).

Example:
    >>> ExplainSource.kind
    'explain'
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from camkit.viewer._source import MAX_LIMIT, Filters, _Cache, _display, _norm, _table
from camkit.viz.page import data_uri, heatmap_png, legend_png, png

__all__ = ["ExplainSource"]


class ExplainSource:
    """A folder written by ``camkit explain --out`` (its ``predictions.json``, maps as ``.npy`` files).

    An image's label is its sub-folder's name. Without the model's class list, a mistake is known
    only when that name is one of the image's top predictions (it is a mistake unless it is the
    first); otherwise the image is neither a mistake nor correct.

    The folder's ``predictions.json`` is one document that ``camkit explain`` wrote in one go, so it
    is read whole (once, and again when it changes); maps and images are read on request.

    Args:
        path: the folder.
        colormap: the heatmaps' colormap.

    Raises:
        FileNotFoundError: when the folder has no ``predictions.json``.
        ValueError: when it is not valid JSON.
    """

    kind = "explain"

    def __init__(self, path: str | os.PathLike[str], colormap: str = "jet") -> None:
        self.path = Path(path)
        self.colormap = _table(colormap)
        self._file = self.path / "predictions.json"
        if not self._file.is_file():
            raise FileNotFoundError(f"no predictions.json in {str(self.path)!r}")
        self._stamp: float = -1.0
        self._doc: dict[str, Any] = {}
        self._records: list[dict[str, Any]] = []
        self._by_key: dict[str, dict[str, Any]] = {}
        self._cache = _Cache()
        self._lock = threading.Lock()
        self._load()

    @property
    def methods(self) -> list[str]:
        """The methods of the outputs."""
        self._load()
        return list(self._doc.get("methods", []))

    def _load(self) -> None:
        with self._lock:
            stamp = self._file.stat().st_mtime
            if stamp == self._stamp:
                return
            try:
                doc: dict[str, Any] = json.loads(self._file.read_text(encoding="utf-8"))
            except ValueError as error:
                raise ValueError(f"{str(self._file)!r} is not valid JSON ({error})") from None
            records = []
            for entry in doc.get("images", []):
                if entry.get("error") is None:
                    records.append(entry)
            self._doc, self._stamp = doc, stamp
            self._records = sorted(records, key=lambda e: str(e.get("key")))
            self._by_key = {str(e.get("key")): e for e in self._records}

    @staticmethod
    def _label(entry: dict[str, Any]) -> str | None:
        key = str(entry.get("key", ""))
        return key.rsplit("/", 2)[-2] if "/" in key else None

    def summary(self, entry: dict[str, Any]) -> dict[str, Any]:
        """One image of ``predictions.json`` as the page's JSON (see :meth:`StoreSource.summary`)."""
        predictions = [[int(p["class"]), float(p["probability"]), str(p["name"])] for p in entry.get("top", [])]
        label = self._label(entry)
        mistake = None
        names = [_norm(str(p[2])) for p in predictions]
        if label is not None and _norm(label) in names:  # a folder that names no class shown: unknown
            mistake = names[0] != _norm(label)
        explained = entry.get("explained", [])
        return {
            "key": str(entry["key"]),
            "label": label,
            "label_name": label,
            "pred": predictions,
            "targets": [[int(e["class"]), str(e["name"])] for e in explained],
            "size": None,
            "mistake": mistake,
        }

    def _matches(self, record: dict[str, Any], filters: Filters) -> bool:
        if filters.q and filters.q not in record["key"].lower():
            return False
        if filters.show == "mistakes" and record["mistake"] is not True:
            return False
        if filters.show == "correct" and record["mistake"] is not False:
            return False
        if filters.label and record["label"] != filters.label:
            return False
        return not (filters.pred and (not record["pred"] or str(record["pred"][0][0]) != filters.pred))

    def page(self, filters: Filters, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """As :meth:`StoreSource.page`."""
        self._load()
        offset, limit = max(0, int(offset)), max(0, min(int(limit), MAX_LIMIT))
        chosen = [r for r in (self.summary(e) for e in self._records) if self._matches(r, filters)]
        if filters.sort == "confidence":
            chosen.sort(key=lambda r: (r["pred"][0][1] if r["pred"] else -1.0, r["key"]))
        if filters.descending:
            chosen.reverse()
        return len(chosen), chosen[offset : offset + limit]

    def info(self) -> dict[str, Any]:
        """As :meth:`StoreSource.info`."""
        self._load()
        records = [self.summary(e) for e in self._records]
        labels: dict[str, int] = {}
        tops: dict[tuple[int, str], int] = {}
        for r in records:
            if r["label"] is not None:
                labels[r["label"]] = labels.get(r["label"], 0) + 1
            if r["pred"]:
                top = (r["pred"][0][0], r["pred"][0][2])
                tops[top] = tops.get(top, 0) + 1
        failed = sum(1 for e in self._doc.get("images", []) if e.get("error") is not None)
        return {
            "kind": self.kind,
            "title": f"camkit view: {self.path.name}",
            "subtitle": f"model {self._doc.get('model', '')}, layers {', '.join(self._doc.get('layers', []))}",
            "methods": list(self._doc.get("methods", [])),
            "records": len(records),
            "failed": failed,
            "labels": [[name, name, n] for name, n in sorted(labels.items())],
            "preds": [[str(c), name, n] for (c, name), n in sorted(tops.items())],
            "has_labels": bool(labels),
            "legend": data_uri(legend_png(self.colormap)),
        }

    def _npy(self, key: str, method: str, k: int) -> Path | None:
        self._load()
        entry = self._by_key.get(key)
        if entry is None:
            return None
        explained = entry.get("explained", [])
        if not 0 <= k < len(explained):
            return None
        relative = explained[k].get("overlays", {}).get(method)
        if not isinstance(relative, str):
            return None
        root = self.path.resolve()
        file = (root / relative).with_suffix(".npy").resolve()
        return file if file.is_relative_to(root) and file.is_file() else None

    def image_png(self, key: str) -> bytes | None:
        """The image ``camkit explain`` read for ``key`` (the path it recorded, an image file), or ``None``."""

        def make() -> bytes | None:
            from camkit.explanation import open_image

            self._load()
            entry = self._by_key.get(key)
            if entry is None:
                return None
            from camkit.runner.data import IMAGE_SUFFIXES

            file = Path(str(entry.get("image", "")))
            if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
                return None
            try:
                image = open_image(file)
            except (OSError, ValueError):
                return None
            if not self._doc.get("full_image"):
                image = _center_view(image, self._map_size(key))
            height, width = _display(image.height, image.width)
            return png(image.resize((width, height)))

        return self._cache.get(("image", key), make)

    def _map_size(self, key: str) -> tuple[int, int] | None:
        methods = self._doc.get("methods", [])
        file = self._npy(key, methods[0], 0) if methods else None
        if file is None:
            return None
        shape = np.load(file, mmap_mode="r").shape
        return int(shape[-2]), int(shape[-1])

    @property
    def layers(self) -> list[str]:
        """None: ``camkit explain`` writes one map per method."""
        return []

    def map_png(self, key: str, method: str, k: int, layer: str = "") -> bytes | None:
        """The heatmap PNG of the ``.npy`` map ``camkit explain`` wrote (``None``: no such map, or a ``layer``)."""

        def make() -> bytes | None:
            import torch

            file = self._npy(key, method, k) if not layer else None
            if file is None:
                return None
            cam = torch.from_numpy(np.load(file).astype(np.float32))
            return heatmap_png(cam, _display(int(cam.shape[-2]), int(cam.shape[-1])), self.colormap)

        return self._cache.get(("map", key, method, k, layer), make)

    def maps(self, key: str) -> dict[str, np.ndarray[Any, Any]] | None:
        """Method → the first explained class's map (``.npy``)."""
        out = {}
        for method in self._doc.get("methods", []):
            file = self._npy(key, method, 0)
            if file is not None:
                out[method] = np.load(file).astype(np.float32)
        shapes = {m.shape for m in out.values()}
        return out if out and len(shapes) == 1 else None

    def sample_keys(self, count: int) -> list[str]:
        """Up to ``count`` keys spread evenly over the records."""
        self._load()
        keys = [str(e["key"]) for e in self._records]
        if count <= 0 or not keys:
            return []
        step = max(1.0, len(keys) / count)
        return [keys[int(i * step)] for i in range(min(count, len(keys)))]


def _center_view(image: Any, size: tuple[int, int] | None) -> Any:
    """The centre square crop that ``camkit explain`` maps cover (the model's crop; no resize needed for display)."""
    side = min(image.width, image.height)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))
