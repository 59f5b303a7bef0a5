"""A self-contained HTML report: images x methods overlays, predicted classes and metrics.

The report is the page of ``camkit view`` written as one file (:func:`camkit.viz.page.single_page`):
the same grid, filters, detail panel and metric sorting, with the images and heat layers inline as
``data:`` URIs, and a Content-Security-Policy that allows only the page's own inline blocks (by
their SHA-256) and ``data:`` images, so the file makes no network request.
"""

from __future__ import annotations

import io
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from torch import Tensor

from camkit.viz._cells import SanityCell, _is_number
from camkit.viz.colormaps import ColormapLike
from camkit.viz.overlay import MaskLike, check_alpha, check_image, heat_layer
from camkit.viz.page import data_uri, legend_png, png, single_page

__all__ = ["ReportRow", "SanityCell", "render_report", "write_report"]

#: the most rows one page of the report shows at first (the page's "per page" menu changes it)
REPORT_PAGE = 500


@dataclass
class ReportRow:
    """One image of a report: the image, its predictions, a map per method and optional metrics.

    Attributes:
        title: the heading of the image, e.g. its file name.
        image: the image as the model saw it (e.g. resized and cropped), RGB or grayscale.
        predictions: the top-k ``(class name, probability)`` pairs, best first.
        maps: method name -> ``(H, W)`` map in ``[0, 1]`` (tensor on any device, numpy array or
            Pillow float image), any size: it is resized to the image.
        metrics: method name -> {metric name: value}; empty when none were computed.
        sanity: method name -> its :class:`SanityCell` on this image; empty when no check ran.

    Raises:
        TypeError: when a field has the wrong type.
        ValueError: when the image mode is not supported.

    Example:
        >>> import torch
        >>> from PIL import Image
        >>> row = ReportRow("cat.jpg", Image.new("RGB", (8, 8)), [("tabby", 0.8)], {"gradcam": torch.rand(2, 2)})
        >>> row.metrics
        {}
    """

    title: str
    image: Image.Image
    predictions: Sequence[tuple[str, float]]
    maps: Mapping[str, MaskLike]
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    sanity: Mapping[str, SanityCell] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.title, str):
            raise TypeError(f"ReportRow.title must be a str, got {type(self.title).__name__}")
        check_image(self.image, "ReportRow.image")
        if isinstance(self.predictions, str) or not isinstance(self.predictions, Sequence):
            raise TypeError(
                f"ReportRow.predictions must be a list of (class name, probability), got {self.predictions!r}"
            )
        for entry in self.predictions:
            if isinstance(entry, str) or not isinstance(entry, Sequence) or len(entry) != 2:
                raise TypeError(f"ReportRow.predictions entries must be (class name, probability) pairs, got {entry!r}")
            if not isinstance(entry[0], str) or not _is_number(entry[1]):
                raise TypeError(f"ReportRow.predictions entries must be (str, number) pairs, got {entry!r}")
        if not isinstance(self.maps, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (Tensor, np.ndarray, Image.Image)) for k, v in self.maps.items()
        ):
            raise TypeError("ReportRow.maps must map method names (str) to maps (tensor, numpy array or PIL image)")
        if not isinstance(self.metrics, Mapping) or not all(
            isinstance(method, str)
            and isinstance(values, Mapping)
            and all(isinstance(k, str) and _is_number(v) for k, v in values.items())
            for method, values in self.metrics.items()
        ):
            raise TypeError(f"ReportRow.metrics must map method -> {{metric name: number}}, got {self.metrics!r}")
        if not isinstance(self.sanity, Mapping) or not all(
            isinstance(k, str) and isinstance(v, SanityCell) for k, v in self.sanity.items()
        ):
            raise TypeError(f"ReportRow.sanity must map method names to SanityCell, got {self.sanity!r}")


_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg")}
#: the header of the sanity column
SANITY_HEADER = "sanity (randomised model)"


def _encode(image: Image.Image, image_format: str) -> str:
    """An image as a ``data:`` URI, PNG (exact pixels) or JPEG (quality 90)."""
    pillow_format, mime = _FORMATS[image_format]
    buffer = io.BytesIO()
    if pillow_format == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG")
    uri = data_uri(buffer.getvalue(), mime)
    assert uri is not None
    return uri


def _finite(value: float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _ordered_union(groups: Iterable[Iterable[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        seen.update(dict.fromkeys(group))
    return list(seen)


def _verdict(cell: SanityCell) -> dict[str, Any]:
    return {"passed": cell.passed, "similarity": {k: _finite(v) for k, v in cell.similarity.items()}}


def _record(
    index: int, row: ReportRow, colormap: ColormapLike, max_image_size: int, image_format: str
) -> dict[str, Any]:
    """One row as a record of the page: the input and one heat layer per method as ``data:`` URIs."""
    image = row.image.convert("RGB")
    if max(image.size) > max_image_size:
        image = ImageOps.contain(image, (max_image_size, max_image_size), method=Image.Resampling.LANCZOS)
    maps: dict[str, list[str | None]] = {}
    for method, cam in row.maps.items():
        try:
            layer = heat_layer(cam, image.size, colormap, "mask")
        except (TypeError, ValueError) as error:
            raise type(error)(f"rows[{index}].maps[{method!r}] ({row.title!r}): {error}") from error
        maps[method] = [data_uri(png(layer))]
    return {
        "key": row.title,
        "index": index,
        "label": None,
        "label_name": None,
        "pred": [[None, float(p), name] for name, p in row.predictions],
        "targets": [],
        "size": [image.height, image.width],
        "mistake": None,
        "image": _encode(image, image_format),
        "maps": maps,
        "metrics": {m: {k: _finite(v) for k, v in values.items()} for m, values in row.metrics.items()},
        "sanity": {m: _verdict(cell) for m, cell in row.sanity.items()},
    }


def _summary(rows: Sequence[ReportRow], sanity: Mapping[str, SanityCell] | None, note: str) -> dict[str, Any]:
    """The page's summary table: per method the mean of each metric over the rows (non-finite left out)."""
    with_metrics = [row for row in rows if row.metrics]
    if not with_metrics and not sanity:
        return {"note": "No metrics were computed for this report."}
    methods = _ordered_union([*(row.metrics.keys() for row in with_metrics), (sanity or {}).keys()])
    names = _ordered_union(values.keys() for row in with_metrics for values in row.metrics.values())
    values: dict[str, dict[str, float | None]] = {}
    for method in methods:
        per_metric: dict[str, list[float]] = {}
        for row in with_metrics:
            for name, value in row.metrics.get(method, {}).items():
                finite = per_metric.setdefault(name, [])
                if math.isfinite(float(value)):
                    finite.append(float(value))
        values[method] = {name: sum(v) / len(v) if v else None for name, v in per_metric.items()}
    count = len(with_metrics) if with_metrics else len(rows)
    what = " with metrics (non-finite values left out)" if with_metrics else ""
    return {
        "caption": f"Mean over the {count} image{'s' if count != 1 else ''}{what}",
        "methods": methods,
        "names": names,
        "values": values,
        "sanity": {m: _verdict(cell) for m, cell in (sanity or {}).items()},
        "sanity_header": SANITY_HEADER,
        "note": note if sanity else "",
    }


def render_report(
    rows: Sequence[ReportRow],
    *,
    title: str = "camkit report",
    colormap: ColormapLike = "jet",
    alpha: float = 0.5,
    subtitle: str = "",
    max_image_size: int = 320,
    image_format: str = "png",
    sanity: Mapping[str, SanityCell] | None = None,
    sanity_note: str = "",
) -> str:
    """Render a self-contained HTML page: per image, its predictions and one overlay per method.

    The page is ``camkit view``'s (:func:`camkit.viz.page.single_page`): a row per image with the
    input and, per method, the heat layer of :func:`~camkit.viz.overlay_mask` drawn over it with
    opacity ``1 - alpha`` (a slider changes it), the method's metric values and sanity verdict under
    it; clicking a row opens its top predictions and metrics. A summary table averages the metrics
    over the images (or says none were computed), and the sort menu sorts by any metric. Images,
    data, CSS and script are inline; every text is set as text, never parsed as HTML.

    Args:
        rows: one :class:`ReportRow` per image.
        title: the page title.
        colormap: a colormap name or ``(K, 3)`` uint8 table for the overlays.
        alpha: the weight of the image in each overlay, in ``[0, 1)``.
        subtitle: an optional line under the title (e.g. the model name).
        max_image_size: images larger than this (longest side, pixels) are shrunk in the page.
        image_format: ``"png"`` (exact pixels) or ``"jpeg"`` (quality 90, about 5x smaller pages for photos).
        sanity: method name -> the report's sanity verdict (:class:`SanityCell`, e.g. from
            :mod:`camkit.sanity`), shown as a column of the summary table; ``None``: no column.
        sanity_note: a line under the summary that says what the sanity column means.

    Returns:
        The HTML document.

    Raises:
        TypeError: for rows that are not :class:`ReportRow` or bad argument types.
        ValueError: for an empty ``rows``, a bad ``alpha``/``max_image_size``/``image_format``/``colormap``,
            or a bad map (the message names the row and the method).

    Example:
        >>> import torch
        >>> from PIL import Image
        >>> row = ReportRow("a.png", Image.new("RGB", (8, 8)), [("cat", 0.9)], {"gradcam": torch.rand(2, 2)})
        >>> page = render_report([row])
        >>> page.startswith("<!DOCTYPE html>"), page.count("data:image/png;base64,")  # scale, input, heat layer
        (True, 3)
    """
    if isinstance(rows, ReportRow) or not isinstance(rows, Sequence) or len(rows) == 0:
        raise ValueError(f"rows must be a non-empty sequence of ReportRow, got {rows!r}")
    for i, row in enumerate(rows):
        if not isinstance(row, ReportRow):
            raise TypeError(f"rows[{i}] must be a ReportRow, got {type(row).__name__}")
    for name, text in (("title", title), ("subtitle", subtitle)):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    weight = check_alpha(alpha)
    if isinstance(max_image_size, bool) or not isinstance(max_image_size, int) or max_image_size < 16:
        raise ValueError(f"max_image_size must be an int >= 16 (pixels), got {max_image_size!r}")
    if image_format not in _FORMATS:
        raise ValueError(f"image_format must be one of {', '.join(map(repr, _FORMATS))}, got {image_format!r}")
    if sanity is not None and not (
        isinstance(sanity, Mapping) and all(isinstance(k, str) and isinstance(v, SanityCell) for k, v in sanity.items())
    ):
        raise TypeError(f"sanity must map method names to SanityCell, got {sanity!r}")
    if not isinstance(sanity_note, str):
        raise TypeError(f"sanity_note must be a str, got {type(sanity_note).__name__}")
    legend = data_uri(legend_png(colormap))
    records = [_record(i, row, colormap, max_image_size, image_format) for i, row in enumerate(rows)]
    methods = _ordered_union(row.maps.keys() for row in rows)
    colormap_name = colormap if isinstance(colormap, str) else "custom"
    import camkit  # the package root, read lazily so that camkit may import viz

    about = f"colormap {colormap_name}, image weight {weight:g}; made with camkit {camkit.__version__}"
    columns = _ordered_union([f"{m}:{name}" for m, values in row.metrics.items() for name in values] for row in rows)
    info = {
        "kind": "report",
        "title": title,
        "subtitle": f"{subtitle}; {about}" if subtitle else about,
        "methods": methods,
        "labels": [],
        "preds": [],
        "has_labels": False,
        "failed": 0,
        "metrics": columns,
        "summary": _summary(rows, sanity, sanity_note),
        "legend": legend,
        "opacity": 1.0 - weight,
        "given_order": True,
        "limit": min(max(len(rows), 12), REPORT_PAGE),
    }
    return single_page(info, records)


def write_report(path: str | os.PathLike[str], rows: Sequence[ReportRow], **options: Any) -> pathlib.Path:
    """Render the report and write it as UTF-8, creating parent folders.

    Args:
        path: the ``.html`` file to write.
        rows: one :class:`ReportRow` per image.
        **options: the keyword arguments of :func:`render_report` (``title``, ``colormap``, ``alpha``,
            ``subtitle``, ``max_image_size``, ``image_format``, ``sanity``, ``sanity_note``).

    Returns:
        The path written.

    Raises:
        TypeError: for a bad ``path`` type (other errors as :func:`render_report`).
        ValueError: as :func:`render_report`.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from PIL import Image
        >>> row = ReportRow("a.png", Image.new("RGB", (8, 8)), [("cat", 0.9)], {"gradcam": torch.rand(2, 2)})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     write_report(f"{folder}/report.html", [row]).name
        'report.html'
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    page = render_report(rows, **options)
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target
