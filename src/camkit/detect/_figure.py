"""The boxes × methods figure of one image (``camkit explain --task detect`` writes it as ``<image>_grid.png``).

One row per explained box, titled with its label and score; the first column shows the image with
that box, the others the box's map by each method with the box drawn over it. The layout (column
headers, rotated row titles, square cells) is :func:`camkit.viz.grid.cell_grid`, as for
:func:`camkit.viz.grid`.

Example:
    >>> import torch
    >>> from camkit.detect import Detections
    >>> from camkit.detect._result import DetectionExplanation
    >>> found = Detections(torch.tensor([[2.0, 2.0, 20.0, 20.0]]), torch.tensor([1]), torch.tensor([0.9]))
    >>> result = DetectionExplanation([torch.rand(3, 32, 32)], [found], {"gradcam": [torch.rand(1, 32, 32)]})
    >>> figure = box_grid(result, 0, cell_size=64)  # one row, 2 columns of 64 px, headers and a row title
    >>> figure.width > 2 * 64, figure.height > 64
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PIL import Image

from camkit.viz import cell_grid, overlay_mask
from camkit.viz.grid import check_size

if TYPE_CHECKING:
    from camkit.detect._result import DetectionExplanation

__all__ = ["box_grid"]


def box_grid(
    result: DetectionExplanation,
    i: int = 0,
    methods: Sequence[str] | None = None,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
    cell_size: int = 224,
    padding: int = 8,
) -> Image.Image:
    """Image ``i``'s explained boxes (rows) × the methods (columns), one cell per box and method.

    Args:
        result: what :func:`~camkit.detect.explain_detections` returned.
        i: the image.
        methods: the methods, one column each (default: every computed one, in order).
        colormap: see :func:`camkit.viz.overlay_mask`.
        alpha: weight of the image in each overlay.
        cell_size: the side of each square cell in pixels (the image is scaled to fit).
        padding: pixels between cells.

    Returns:
        The RGB figure.

    Raises:
        ValueError: for an unknown image or method, or an image without boxes.
    """
    if not 0 <= i < len(result.images):
        raise ValueError(f"image {i} does not exist: {len(result.images)} image(s) were explained")
    names = list(result.maps) if methods is None else list(methods)
    unknown = [name for name in names if name not in result.maps]
    if unknown or not names:
        raise ValueError(f"methods {unknown or names!r} were not computed; computed: {sorted(result.maps)}")
    found = result.detections[i]
    if not len(found):
        raise ValueError(f"image {i} has no boxes to show ({result.reasons[i] if i < len(result.reasons) else ''})")
    cell = check_size(cell_size, "cell_size", 16)
    pad = check_size(padding, "padding", 0)
    picture = result.picture(i)
    rows = []
    for k in range(len(found)):
        cells = [result.draw_boxes(picture.copy(), i, [k])]
        for name in names:
            heat = overlay_mask(picture, result.maps[name][i][k], colormap=colormap, alpha=alpha)
            cells.append(result.draw_boxes(heat, i, [k]))
        rows.append(cells)
    titles = [f"#{k} {result.caption(i, k)}" for k in range(len(found))]
    return cell_grid(rows, ["image", *names], row_titles=titles, cell_size=cell, padding=pad)
