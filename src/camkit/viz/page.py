r"""The one page of ``camkit view`` and ``camkit report``: static assets, heatmap PNGs and the single-file build.

The page is plain HTML/CSS/JS shipped in the package (``static/``). ``camkit view`` serves it with
its data from an API; :func:`single_page` writes it as ONE self-contained file with the data, the
images and the maps inline, which is what ``camkit report`` writes. Both draw a heatmap the same
way (:func:`heatmap_png`), so a report and the viewer look alike.

Example:
    >>> page = single_page({"title": "t", "methods": []}, [])
    >>> page.startswith("<!DOCTYPE html>"), "<script src=" in page
    (True, False)
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from importlib import resources
from typing import Any

import numpy as np

__all__ = ["data_uri", "heatmap_png", "legend_png", "png", "script_json", "single_page", "static_file"]


def static_file(name: str) -> bytes:
    """The bytes of one of the page's files (``index.html``, ``viewer.js``, ``viewer.css``).

    Example:
        >>> static_file("index.html").startswith(b"<!DOCTYPE html>")
        True
    """
    return resources.files("camkit.viz").joinpath("static").joinpath(name).read_bytes()


def script_json(value: Any) -> str:
    r"""JSON safe to embed in a script: ``<``, ``>``, ``&`` and the line separators escaped.

    Example:
        >>> script_json({"key": "</script><img src=x>"})
        '{"key": "\\u003c/script\\u003e\\u003cimg src=x\\u003e"}'
    """
    text = json.dumps(value, allow_nan=False)
    for char, code in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, code)
    return text


def png(image: Any) -> bytes:
    """A Pillow image as PNG bytes (fast settings: the viewer draws on request)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def data_uri(body: bytes | None, mime: str = "image/png") -> str | None:
    """``body`` as a ``data:`` URI (``None`` stays ``None``).

    Example:
        >>> data_uri(b"x")
        'data:image/png;base64,eA=='
    """
    return None if body is None else f"data:{mime};base64," + base64.b64encode(body).decode("ascii")


def _table(colormap: Any) -> np.ndarray[Any, Any]:
    from camkit.viz.colormaps import get_colormap

    return np.asarray(get_colormap(colormap) if isinstance(colormap, str) else colormap)


def heatmap_png(cam: Any, size: tuple[int, int], colormap: Any = "jet") -> bytes:
    r"""One map as a coloured PNG of ``size`` ``(height, width)``, as the overlays colour it (squared map).

    Stacked over the image with CSS opacity ``1 - alpha`` it gives :func:`camkit.viz.overlay_mask`'s
    blend with image weight ``alpha``.

    Args:
        cam: a ``(h, w)`` float tensor in ``[0, 1]``.
        size: ``(height, width)`` of the PNG.
        colormap: a colormap name or ``(K, 3)`` uint8 table (a table resolved once with
            :func:`camkit.viz.get_colormap` saves rebuilding it per map).

    Returns:
        The PNG file's bytes.

    Example:
        >>> import torch
        >>> heatmap_png(torch.eye(2), (4, 4))[:4]
        b'\x89PNG'
    """
    from PIL import Image

    from camkit import ops

    table = _table(colormap)
    resized = ops.normalize(ops.upsample(cam.reshape(1, *cam.shape[-2:]).float(), size))[0].cpu().numpy()
    # apply_colormap's rule, table[min(floor(x * K), K - 1)], in numpy: torch's thread pool costs more
    # than the work on maps this small
    index = np.clip(np.floor(np.square(resized) * len(table)), 0, len(table) - 1).astype(np.intp)
    return png(Image.fromarray(np.ascontiguousarray(table[index])))


def legend_png(colormap: Any = "jet", width: int = 256) -> bytes:
    r"""The colour scale of the heatmaps: map values 0 → 1, left to right (the squared map, as drawn).

    Example:
        >>> legend_png()[:4]
        b'\x89PNG'
    """
    from PIL import Image

    values = np.square(np.linspace(0.0, 1.0, width))
    table = _table(colormap)
    index = np.clip(np.floor(values * len(table)), 0, len(table) - 1).astype(np.intp)
    return png(Image.fromarray(np.ascontiguousarray(table[index][None, :, :])))


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def single_page(info: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The viewer's page as ONE self-contained HTML document: stylesheet, script and data inline.

    This is what ``camkit report`` writes: ``records`` carry their images and maps as ``data:``
    URIs, the data is JSON with ``<``, ``>`` and ``&`` escaped (it cannot close its ``<script>``),
    and the Content-Security-Policy allows exactly the page's inline blocks (by their SHA-256) and
    ``data:`` images: no other script, and no network request.

    Args:
        info: the summary (:meth:`~camkit.viewer.StoreSource.info`: ``title``, ``subtitle``,
            ``methods``, ``labels``, ``preds``, ``has_labels``; optional: ``agreement``, ``metrics``
            (the metric columns ``"method:name"``), ``summary`` (a table of means and verdicts),
            ``legend`` (a ``data:`` URI), ``opacity`` (the heatmaps' first opacity, 0..1)).
        records: the records' summaries, each with ``image`` and ``maps`` URLs (``data:`` URIs),
            optionally ``metrics`` (method → {name: value}) and ``sanity`` (method → verdict).

    Returns:
        The HTML document.
    """
    template = static_file("index.html").decode()
    css = static_file("viewer.css").decode()
    script = static_file("viewer.js").decode()
    meta = {**info, "mode": "static", "records": len(records), "chunks": 0}
    data = f"window.CAMKIT_VIEW = {script_json(meta)};\nwindow.CAMKIT_VIEW_CHUNKS = [{script_json(records)}];\n"
    policy = (
        f"default-src 'none'; script-src {_csp_hash(data)} {_csp_hash(script)}; style-src {_csp_hash(css)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    start = template.index('<meta http-equiv="Content-Security-Policy"')
    end = template.index(">", start) + 1
    page = template[:start] + f'<meta http-equiv="Content-Security-Policy" content="{policy}">' + template[end:]
    title = html.escape(str(info.get("title") or "camkit view"), quote=False)
    page = page.replace("<title>camkit view</title>", f"<title>{title}</title>", 1)
    page = page.replace('<link rel="stylesheet" href="viewer.css">', f"<style>{css}</style>")
    page = page.replace('<script src="data/info.js"></script>', f"<script>{data}</script>")
    return page.replace('<script src="viewer.js"></script>', f"<script>{script}</script>")
