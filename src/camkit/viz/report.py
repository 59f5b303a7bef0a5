"""A self-contained HTML report: images x methods overlays, predicted classes and metrics.

The page needs nothing but itself: images are inline PNG (or JPEG) data URIs, the CSS is inline, there is
no script, and a Content-Security-Policy forbids any network request.
"""

from __future__ import annotations

import base64
import io
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from camkit.viz._cells import SanityCell, _esc, _is_number
from camkit.viz._style import PAGE_CSS
from camkit.viz.colormaps import ColormapLike, apply_colormap
from camkit.viz.overlay import MaskLike, check_alpha, check_image, overlay_mask

__all__ = ["ReportRow", "SanityCell", "render_report", "write_report"]


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


def _shrunk(image: Image.Image, max_size: int) -> Image.Image:
    if max(image.size) <= max_size:
        return image
    return ImageOps.contain(image, (max_size, max_size), method=Image.Resampling.LANCZOS)


_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg")}


@dataclass(frozen=True)
class _Encoder:
    """Turns images into inline ``<img>`` tags: shrunk to ``max_size`` pixels, PNG or JPEG."""

    max_size: int
    image_format: str

    def uri(self, image: Image.Image) -> str:
        pillow_format, mime = _FORMATS[self.image_format]
        buffer = io.BytesIO()
        if pillow_format == "JPEG":
            image.convert("RGB").save(buffer, format="JPEG", quality=90)
        else:
            image.save(buffer, format="PNG")
        return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    def img(self, image: Image.Image, alt: str) -> str:
        shown = _shrunk(image, self.max_size)
        return f'<img src="{self.uri(shown)}" width="{shown.width}" height="{shown.height}" alt="{_esc(alt)}">'


def _format(value: float) -> str:
    number = float(value)
    if math.isnan(number):
        return "n/a"
    return f"{number:.4g}"


def _ordered_union(groups: Iterable[Iterable[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        seen.update(dict.fromkeys(group))
    return list(seen)


#: the header of the sanity column
SANITY_HEADER = "sanity (randomised model)"


def _metrics_table(
    metrics: Mapping[str, Mapping[str, float]], caption: str, sanity: Mapping[str, SanityCell] | None = None
) -> str:
    names = _ordered_union(values.keys() for values in metrics.values())
    methods = _ordered_union([metrics.keys(), (sanity or {}).keys()])
    head = "".join(f'<th scope="col">{_esc(n)}</th>' for n in names)
    if sanity:
        head += f'<th scope="col">{_esc(SANITY_HEADER)}</th>'
    body = ""
    for method in methods:
        values = metrics.get(method, {})
        cells = "".join(f"<td>{_format(values[n]) if n in values else '&ndash;'}</td>" for n in names)
        if sanity:
            cells += f"<td>{sanity[method].html() if method in sanity else '&ndash;'}</td>"
        body += f'<tr><th scope="row">{_esc(method)}</th>{cells}</tr>'
    return (
        f'<div class="table-wrap"><table><caption>{_esc(caption)}</caption>'
        f'<thead><tr><th scope="col">method</th>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def _summary(rows: Sequence[ReportRow], sanity: Mapping[str, SanityCell] | None = None, note: str = "") -> str:
    with_metrics = [row for row in rows if row.metrics]
    remark = f'<p class="note">{_esc(note)}</p>' if sanity and note else ""
    if not with_metrics and not sanity:
        return '<p class="note">No metrics were computed for this report.</p>'
    if len(rows) == 1 and not sanity:
        return ""
    methods = _ordered_union(row.metrics.keys() for row in with_metrics)
    mean: dict[str, dict[str, float]] = {}
    for method in methods:
        per_metric: dict[str, list[float]] = {}
        for row in with_metrics:
            for name, value in row.metrics.get(method, {}).items():
                per_metric.setdefault(name, [])
                if math.isfinite(float(value)):
                    per_metric[name].append(float(value))
        mean[method] = {name: sum(v) / len(v) if v else math.nan for name, v in per_metric.items()}
    count = len(with_metrics) if with_metrics else len(rows)
    what = "with metrics (non-finite values left out)" if with_metrics else ""
    caption = f"Mean over the {count} image{'s' if count != 1 else ''} {what}".rstrip()
    return f'<section class="summary card"><h2>Metrics</h2>{_metrics_table(mean, caption, sanity)}{remark}</section>'


def _predictions(predictions: Sequence[tuple[str, float]]) -> str:
    if not predictions:
        return '<p class="note">No predictions.</p>'
    items = []
    for name, probability in predictions:
        p = float(probability)
        width = min(max(p, 0.0), 1.0) * 100 if math.isfinite(p) else 0.0
        items.append(
            f'<li><span class="label">{_esc(name)}</span><span class="pct">{_esc(f"{p:.1%}")}</span>'
            f'<span class="bar"><span style="width:{width:.1f}%"></span></span></li>'
        )
    return f'<ol class="preds">{"".join(items)}</ol>'


def _card(index: int, row: ReportRow, colormap: ColormapLike, alpha: float, encoder: _Encoder) -> str:
    image = row.image.convert("RGB")
    cells = [f'<figure class="original">{encoder.img(image, row.title)}<figcaption>input</figcaption></figure>']
    for method, cam in row.maps.items():
        try:
            picture = overlay_mask(image, cam, colormap, alpha)
        except (TypeError, ValueError) as error:
            raise type(error)(f"rows[{index}].maps[{method!r}] ({row.title!r}): {error}") from error
        alt = f"{method} overlay on {row.title}"
        cells.append(f"<figure>{encoder.img(picture, alt)}<figcaption>{_esc(method)}</figcaption></figure>")
    if not row.maps:
        cells.append('<p class="note">No maps for this image.</p>')
    metrics = _metrics_table(row.metrics, "Metrics for this image", row.sanity) if row.metrics or row.sanity else ""
    return (
        f'<article class="card" id="image-{index + 1}"><div class="card-head"><h2>{_esc(row.title)}</h2>'
        f'<span class="dims">{image.width}&times;{image.height}</span></div>'
        f'<div class="card-body"><div><h3>Top predictions</h3>{_predictions(row.predictions)}</div>'
        f'<div class="cells">{"".join(cells)}</div></div>{metrics}</article>'
    )


def _legend(colormap: ColormapLike) -> str:
    # The overlay colours the squared map (TorchCAM's convention); the legend shows what map values become.
    values = torch.linspace(0.0, 1.0, 256).square().reshape(1, -1)
    bar = Image.fromarray(apply_colormap(values, colormap).numpy())
    uri = _Encoder(256, "png").uri(bar)
    return (
        f'<span class="legend">map 0<img src="{uri}" width="256" height="1" alt="colour scale of the overlays">1</span>'
    )


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

    Each image gets a card with its top predictions, the input and an
    :func:`~camkit.viz.overlay_mask` overlay per method, and its metrics table when metrics are
    given; a summary table averages the metrics over the images (or the page says none were
    computed). Images are inline PNGs, CSS is inline, there is no script, and all text is escaped.

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
        >>> from PIL import Image
        >>> row = ReportRow("a.png", Image.new("RGB", (8, 8)), [("cat", 0.9)], {"gradcam": torch.rand(2, 2)})
        >>> page = render_report([row])
        >>> page.startswith("<!DOCTYPE html>"), page.count("<img")  # colour scale, input, overlay
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
    encoder = _Encoder(max_image_size, image_format)
    legend = _legend(colormap)
    methods = _ordered_union(row.maps.keys() for row in rows)
    cards = "".join(_card(i, row, colormap, weight, encoder) for i, row in enumerate(rows))
    colormap_name = colormap if isinstance(colormap, str) else "custom"
    toc = ""
    if len(rows) > 1:
        links = "".join(f'<li><a href="#image-{i + 1}">{_esc(row.title)}</a></li>' for i, row in enumerate(rows))
        toc = f'<nav class="toc" aria-label="Images"><ol>{links}</ol></nav>'
    import camkit  # the package root, read lazily so that camkit may import viz

    meta = (
        f"<span>{len(rows)} image{'s' if len(rows) != 1 else ''}</span>"
        f"<span>{len(methods)} method{'s' if len(methods) != 1 else ''}</span>"
        f"<span>colormap {_esc(colormap_name)}, image weight {weight:g}</span>{legend}"
    )
    subtitle_html = f'<p class="subtitle">{_esc(subtitle)}</p>' if subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">"
        f'<meta name="generator" content="camkit {_esc(camkit.__version__)}">'
        f'<title>{_esc(title)}</title><link rel="icon" href="data:,"><style>{PAGE_CSS}</style></head>\n'
        f'<body><div class="page"><header class="page-head"><h1>{_esc(title)}</h1>{subtitle_html}'
        f'<p class="meta">{meta}</p>{toc}</header>\n<main>{_summary(rows, sanity, sanity_note)}{cards}</main>\n'
        f"<footer>Made with camkit {_esc(camkit.__version__)}. This page is self-contained: it loads "
        "nothing from the network.</footer></div></body></html>\n"
    )


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
