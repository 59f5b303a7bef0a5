"""``camkit view PATH --export DIR``: the page as a folder that works from ``file://``.

Browsers do not let a ``file://`` page ``fetch`` its neighbours, but they run the scripts it
names: the data goes into ``data/*.js`` files that set globals, which the page loads as it
needs them (``data/info.js``, then ``data/records-NNNN.js`` chunks). Images and maps are PNG files
named by the record's position, never by its (user-chosen) file name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from camkit.viewer._server import SAMPLE, agreement
from camkit.viewer._source import Filters, Source
from camkit.viz.page import data_uri, script_json, single_page, static_file

__all__ = ["CHUNK", "export_site", "single_page", "source_page"]

#: records per ``data/records-NNNN.js`` file
CHUNK = 500


def _write(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def export_site(
    source: Source,
    out: str | os.PathLike[str],
    *,
    limit: int | None = None,
    sample: int = SAMPLE,
) -> int:
    """Write the viewer's page with every record's data, image and maps into ``out``.

    Args:
        source: what to export (:func:`~camkit.viewer.open_source`).
        out: the folder to write (created; the page's own files in it are replaced).
        limit: export at most this many records (name order); default: all.
        sample: records in the method-agreement sample.

    Returns:
        The number of records written.

    Raises:
        ValueError: when ``out`` is a file or inside the source folder (the viewer never writes there).
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--export {str(folder)!r} is a file: name a folder to write the page into")
    if folder.resolve().is_relative_to(source.path.resolve()):
        raise ValueError(
            f"--export {str(folder)!r} is inside {str(source.path)!r}: the viewer never writes into "
            "the folder it shows; pick a folder outside it"
        )
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "data", ignore_errors=True)
    shutil.rmtree(folder / "maps", ignore_errors=True)
    shutil.rmtree(folder / "images", ignore_errors=True)
    for name in ("index.html", "viewer.js", "viewer.css"):
        _write(folder / name, static_file(name))
    info = source.info()
    methods: list[str] = info["methods"]
    total = info["records"] if limit is None else min(limit, info["records"])
    written = 0
    chunk = 0
    while written < total:
        _, records = source.page(Filters(), written, min(CHUNK, total - written))
        if not records:
            break
        rows = [_files(source, folder, written + i, record, methods) for i, record in enumerate(records)]
        body = f"window.CAMKIT_VIEW_CHUNKS[{chunk}] = {script_json(rows)};\n"
        _write(folder / "data" / f"records-{chunk:04d}.js", body.encode())
        written += len(records)
        chunk += 1
    table = agreement(source, sample)
    static = {**info, "mode": "static", "records": written, "chunks": chunk, "agreement": table}
    _write(folder / "data" / "info.js", f"window.CAMKIT_VIEW = {script_json(static)};\n".encode())
    return written


def _files(source: Source, folder: Path, index: int, record: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """Write one record's PNGs; return its summary with their relative paths as URLs."""
    key = record["key"]
    image = source.image_png(key)
    image_url = None
    if image is not None:
        image_url = f"images/{index:06d}.png"
        _write(folder / image_url, image)

    def written(method: str, k: int, layer: str, name: str) -> str | None:
        body = source.map_png(key, method, k, layer)
        if body is None:
            return None
        _write(folder / f"maps/{index:06d}/{name}.png", body)
        return f"maps/{index:06d}/{name}.png"

    return {**record, "image": image_url, **_maps(source, record, methods, written)}


def _maps(source: Source, record: dict[str, Any], methods: list[str], url: Any) -> dict[str, Any]:
    """``maps`` (method → one URL per explained class) and, for a store of layer maps, ``layer_maps``.

    ``url(method, k, layer, name)`` gives a map's URL (``None``: no map); ``name`` is a file name
    made of positions only.
    """
    count = max(1, len(record["targets"]))

    def urls(layer: str, prefix: str) -> dict[str, list[str | None]]:
        return {m: [url(m, k, layer, f"{prefix}{i:02d}-{k:02d}") for k in range(count)] for i, m in enumerate(methods)}

    out: dict[str, Any] = {"maps": urls("", "")}
    if source.layers:
        out["layer_maps"] = {layer: urls(layer, f"L{j:02d}-") for j, layer in enumerate(source.layers)}
    return out


def source_page(source: Source, *, limit: int | None = None, sample: int = SAMPLE) -> str:
    """:func:`single_page` of a source's records (at most ``limit``), images and maps inline.

    Example:
        >>> import tempfile, torch
        >>> from camkit.runner.writer import PartWriter, RecordRow, prepare_store
        >>> from camkit.viewer import open_source
        >>> store = Path(tempfile.mkdtemp()) / "store"
        >>> prepare_store(store, {"methods": ["gradcam"]}, {}, overwrite=False)
        >>> with PartWriter(store, 0) as writer:
        ...     writer.commit([RecordRow("a.png", None, [0], [(0, 0.9)], 8, 8)], torch.rand(1, 4).numpy(),
        ...                   [("gradcam", 1, 2, 2)])
        >>> page = source_page(open_source(store))
        >>> page.count("data:image/png;base64,")  # the colour scale and the one map (no source images)
        2
    """
    info = source.info()
    total = info["records"] if limit is None else min(limit, info["records"])
    records: list[dict[str, Any]] = []
    while len(records) < total:
        _, page = source.page(Filters(), len(records), min(CHUNK, total - len(records)))
        if not page:
            break
        for record in page:
            key = record["key"]

            def inline(method: str, k: int, layer: str, _name: str, key: str = key) -> str | None:
                return data_uri(source.map_png(key, method, k, layer))

            maps = _maps(source, record, source.methods, inline)
            records.append({**record, "image": data_uri(source.image_png(key)), **maps})
    return single_page({**info, "agreement": agreement(source, sample)}, records)
