"""The store a run writes, read back as one mapping: :func:`open_store`.

Layout (everything readable with Python's ``sqlite3``, ``json`` and numpy)::

    STORE/
      camkit-store.json             the options the store was made with, class names, format version,
                                    sanity verdicts (camkit run --sanity)
      parts/rank-00000/
        manifest.sqlite             records: key, status, shard, row, prediction, target, metrics, ...
        <32 hex digits>.npy         one shard per batch: (images, values) float32 or float16
      parts/rank-00001/ ...         one part per writing process (torch.distributed rank)

Each rank writes only its own part, so no two processes ever write one file, and a reader merges
the parts. A shard is written under a temporary name and renamed into place (``os.replace``)
before the manifest transaction that references it commits: the manifest is the source of truth,
a reader sees only committed records, and a shard is never changed after it is referenced.

Example:
    >>> import tempfile
    >>> store = open_store(tempfile.mkdtemp())  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    FileNotFoundError: no camkit store at ...
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from camkit import ops

__all__ = ["Record", "Store", "open_store"]

META = "camkit-store.json"
PARTS = "parts"
MANIFEST = "manifest.sqlite"
FORMAT = "camkit-store"
VERSION = 1
#: how long a reader or writer waits for another process's manifest transaction (seconds)
BUSY_TIMEOUT = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (
    name TEXT PRIMARY KEY, layout TEXT NOT NULL, dtype TEXT NOT NULL, rows INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY, status TEXT NOT NULL, shard TEXT, row INTEGER, label INTEGER,
    target TEXT, pred TEXT, height INTEGER, width INTEGER, reason TEXT, metrics TEXT
);
"""
#: the records' columns in the order a writer inserts them (``metrics``: JSON method → {metric: value}, or NULL)
COLUMNS = "key, status, shard, row, label, target, pred, height, width, reason, metrics"


def part_name(rank: int) -> str:
    """The folder name of a rank's part (``rank-00003``)."""
    return f"rank-{rank:05d}"


def read_meta(path: Path) -> dict[str, Any]:
    """The store's ``camkit-store.json``.

    Raises:
        FileNotFoundError: when ``path`` holds no store.
        ValueError: when the file is not a camkit store of a known version.
    """
    file = path / META
    if not file.is_file():
        raise FileNotFoundError(f"no camkit store at {str(path)!r} (no {META}): pass the --out of a camkit run")
    try:
        meta: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(
            f"{str(file)!r} is not valid JSON ({error}): the store is damaged; rerun with --overwrite"
        ) from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{str(file)!r} is format {meta.get('format')!r} version {meta.get('version')!r}; this camkit reads "
            f"{FORMAT!r} version {VERSION}: rerun with --overwrite to rewrite the store"
        )
    return meta


def connect(file: Path, write: bool = False) -> sqlite3.Connection:
    """A connection to a part's manifest.

    The writer uses SQLite's rollback journal (``journal_mode=DELETE``, not WAL, which needs shared
    memory that network file systems lack) with full syncs. A reader opens read-write when it may,
    so that it can roll back the journal of a writer killed during a commit, else read-only.
    """
    mode = "rwc" if write else "rw"
    try:
        conn = sqlite3.connect(
            f"file:{file.as_posix()}?mode={mode}", uri=True, timeout=BUSY_TIMEOUT, check_same_thread=write
        )
    except sqlite3.OperationalError:
        if write:
            raise
        conn = sqlite3.connect(
            f"file:{file.as_posix()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT, check_same_thread=False
        )
    if write:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=FULL")
    return conn


@dataclass(frozen=True)
class Record:
    """One image's explanation, read back from a store.

    Attributes:
        key: the image's path relative to the source (``/``-separated), or its dataset key.
        maps: method name → map, float32 in ``[0, 1]``, **at the target layer's resolution**
            (e.g. 7×7 for EfficientNet-Lite0's ``bn2`` at 224 px; the largest layer's for a method
            that fuses several), min-max normalized per map: shape ``(h, w)``, or ``(K, h, w)``
            with ``--target topk:K`` for K > 1 (one map per class of :attr:`target`). Use
            :meth:`resized` for maps at the input size, equal to :func:`camkit.explain`'s.
        pred: the model's top classes, best first, as ``(class index, probability)`` (up to 5).
        target: the class the maps explain (a tuple of K classes with ``topk:K``, K > 1).
        label: the image's label (ImageFolder sub-folder or dataset label), when it has one.
        size: ``(height, width)`` of the model input the maps belong to.
        metrics: method → metric → value (``None`` where not finite) of the first explained class,
            as ``camkit run --metric`` stored them; empty when the run computed none.
        layer_maps: layer → method → the map of that layer alone (shaped as :attr:`maps`), as
            ``camkit run --layer-maps`` stored them; empty when the run stored none.
    """

    key: str
    maps: dict[str, Tensor]
    pred: tuple[tuple[int, float], ...]
    target: int | tuple[int, ...]
    label: int | None
    size: tuple[int, int]
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    layer_maps: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    def resized(self, size: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """The maps upsampled (bilinear) to ``size`` (default: the input size) and min-max normalized again.

        Args:
            size: ``(height, width)``; default :attr:`size`.

        Returns:
            Method name → ``(H, W)`` (or ``(K, H, W)``) float32 maps in ``[0, 1]``.

        Example:
            >>> record = Record("a.png", {"gradcam": torch.eye(2)}, ((1, 0.9),), 1, None, (4, 4))
            >>> record.resized()["gradcam"].shape, record.resized((8, 6))["gradcam"].shape
            (torch.Size([4, 4]), torch.Size([8, 6]))
        """
        height, width = size or self.size
        out = {}
        for name, cam in self.maps.items():
            batch = cam.reshape(-1, *cam.shape[-2:])
            out[name] = ops.normalize(ops.upsample(batch, (height, width))).reshape(*cam.shape[:-2], height, width)
        return out


@lru_cache(maxsize=8)
def _shard(file: str) -> np.ndarray[Any, Any]:
    array: np.ndarray[Any, Any] = np.load(file, mmap_mode="r")
    return array


def decode_record(part: Path, row: tuple[Any, ...], layout: list[list[Any]]) -> Record:
    """A :class:`Record` from a manifest row ``(key, shard, row, label, target, pred, height, width[, metrics])``."""
    key, shard, index, label, target, pred, height, width = row[:8]
    metrics = json.loads(row[8]) if len(row) > 8 and row[8] else {}
    values = np.asarray(_shard(str(part / shard))[index], dtype=np.float32)
    maps: dict[str, Tensor] = {}
    layers: dict[str, dict[str, Tensor]] = {}
    offset = 0
    for name, k, h, w, *layer in layout:
        size = int(k) * int(h) * int(w)
        cam = torch.from_numpy(values[offset : offset + size].copy()).reshape(int(k), int(h), int(w))
        (layers.setdefault(layer[0], {}) if layer else maps)[name] = cam[0] if k == 1 else cam
        offset += size
    targets = tuple(int(t) for t in json.loads(target))
    return Record(
        key=key,
        maps=maps,
        pred=tuple((int(c), float(p)) for c, p in json.loads(pred)),
        target=targets[0] if len(targets) == 1 else targets,
        label=None if label is None else int(label),
        size=(int(height), int(width)),
        metrics=metrics,
        layer_maps=layers,
    )


def scan_parts(path: Path) -> Iterator[tuple[Path, list[tuple[str, str, str]]]]:
    """Every part of the store at ``path`` with its committed ``(key, status, reason)`` rows, in part order.

    A part whose first transaction has not committed yet has no rows.
    """
    parts = path / PARTS
    for part in sorted(parts.iterdir()) if parts.is_dir() else []:
        file = part / MANIFEST
        if not file.is_file():
            continue
        conn = connect(file)
        try:
            rows = conn.execute("SELECT key, status, reason FROM records").fetchall()
        except sqlite3.OperationalError:  # no table yet: the part's writer has not committed anything
            rows = []
        finally:
            conn.close()
        yield part, rows


class Store(Mapping[str, Record]):
    """A read-only view of a store: the records committed when it was opened, merged over all parts.

    ``len(store)``, ``store.keys()`` (sorted) and ``store[key]`` cover the finished images;
    :attr:`failed` maps the images that could not be read to the reason. A record is read from
    its shard when it is accessed. Use as a context manager (or call :meth:`close`) to release
    the manifest connections.

    Attributes:
        path: the store folder.
        options: the options the store was made with (source, model, methods, target, ...).
        categories: class names by index, when the model had them.
        root: the folder the images were read from (``None`` for a dataset without one).
        failed: key → reason, for images recorded as failed.
        sanity: the model-randomisation verdicts of ``camkit run --sanity`` (``"methods"``: method →
            ``passed``, ``similarity`` per measure, ``per_image``; ``"settings"``, ``"images"``,
            ``"classes"``, ``"layers"``: see :mod:`camkit.runner.sanity`); empty when none were stored.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        meta = read_meta(self.path)
        self.options: dict[str, Any] = meta["options"]
        self.categories: list[str] | None = meta.get("categories")
        self.root: Path | None = Path(meta["root"]) if meta.get("root") else None
        self.sanity: dict[str, Any] = meta.get("sanity") or {}
        self._parts: list[Path] = []
        self._conns: dict[int, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        self._layouts: dict[tuple[int, str], list[list[Any]]] = {}
        ok: dict[str, int] = {}
        failed: dict[str, str] = {}
        for number, (part, rows) in enumerate(scan_parts(self.path)):
            self._parts.append(part)
            for key, status, reason in rows:
                if status == "ok":
                    ok.setdefault(key, number)
                else:
                    failed[key] = reason
        self._index = dict(sorted(ok.items()))
        self.failed: dict[str, str] = {k: failed[k] for k in sorted(failed) if k not in ok}

    def _conn(self, number: int) -> sqlite3.Connection:
        if number not in self._conns:
            self._conns[number] = connect(self._parts[number] / MANIFEST)
        return self._conns[number]

    def __getitem__(self, key: str) -> Record:
        number = self._index.get(key)
        if number is None:
            reason = self.failed.get(key)
            if reason is not None:
                raise KeyError(f"{key!r} failed in the run ({reason}); rerun with --retry-failed after fixing it")
            raise KeyError(key)
        with self._lock:  # one connection per part, shared by the threads that read this view
            conn = self._conn(number)
            extra = ", metrics" if self.options.get("metrics") else ""  # a store made without: maybe no column
            row = conn.execute(
                f"SELECT key, shard, row, label, target, pred, height, width{extra} FROM records WHERE key = ?", (key,)
            ).fetchone()
            if (number, row[1]) not in self._layouts:
                (text,) = conn.execute("SELECT layout FROM shards WHERE name = ?", (row[1],)).fetchone()
                self._layouts[number, row[1]] = json.loads(text)
        return decode_record(self._parts[number], row, self._layouts[number, row[1]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, {len(self)} records, {len(self.failed)} failed)"

    @property
    def methods(self) -> list[str]:
        """The methods whose maps every record holds."""
        return list(self.options["methods"])

    def close(self) -> None:
        """Close the manifest connections (the store stays usable; they reopen on access)."""
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def open_store(path: str | os.PathLike[str]) -> Store:
    """Open a store written by :func:`camkit.run` / ``camkit run`` for reading.

    The view holds the records committed when it is opened (a run still writing the store adds
    records that a later ``open_store`` shows); never a partial one.

    Args:
        path: the store folder (the run's ``out``).

    Returns:
        A read-only mapping key → :class:`Record`.

    Raises:
        FileNotFoundError: when ``path`` holds no store.
        ValueError: when the store is damaged or of another format version.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> import camkit
        >>> from camkit.models import LoadedModel, Preprocess
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> model = LoadedModel(net.eval(), "tiny", Preprocess(8, 8), target_layer="0")
        >>> out = tempfile.mkdtemp()
        >>> report = camkit.run([torch.rand(3, 8, 8)] * 3, out, model=model, workers=0, progress=False)
        >>> with camkit.open_store(out) as store:
        ...     len(store), store["00000001"].maps["gradcam"].shape
        (3, torch.Size([6, 6]))
    """
    return Store(path)
