"""What :func:`camkit.explain_detections` returns: :class:`DetectionExplanation`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from camkit.detect._types import Detections

if TYPE_CHECKING:
    from camkit.metrics import MetricResult


__all__ = ["DetectionExplanation"]


@dataclass
class DetectionExplanation:
    """What :func:`explain_detections` found.

    Attributes:
        images: the images as the detector saw them, ``(3, H, W)`` in ``[0, 1]``.
        detections: per image, the explained :class:`~camkit.detect.Detections` (boxes ``(K, 4)``
            xyxy in input pixels, labels, scores), detached, on the CPU.
        maps: method → per image, maps ``(K, H, W)`` in ``[0, 1]``, one per box (CPU).
        layers: method → the target layer names (``[]`` for black-box methods).
        reasons: per image, why it has no box to explain (``None`` when it has).
        categories: class names by label, when the model carries them.
    """

    images: list[Tensor]
    detections: list[Detections]
    maps: dict[str, list[Tensor]]
    layers: dict[str, list[str]] = field(default_factory=dict)
    reasons: list[str | None] = field(default_factory=list)
    categories: list[str] | None = None

    def label(self, index: int) -> str:
        """The name of class ``index`` (its number when names are unknown)."""
        if self.categories is not None and 0 <= index < len(self.categories):
            return self.categories[index]
        return str(index)

    def overlay(
        self, i: int = 0, method: str | None = None, box: int | None = None, colormap: str = "jet", alpha: float = 0.5
    ) -> Image.Image:
        """Image ``i`` with its boxes (label and score drawn) over its boxes' maps.

        Args:
            i: the image.
            method: the method whose maps are shown (default: the first).
            box: show only this box and its map (default: every box; their maps' maximum).
            colormap: see :func:`camkit.viz.overlay_mask`.
            alpha: weight of the image.

        Returns:
            An RGB image of the input's size.

        Raises:
            ValueError: for an unknown method, image or box.
        """
        from camkit.viz import overlay_mask

        if not 0 <= i < len(self.images):
            raise ValueError(f"image {i} does not exist: {len(self.images)} image(s) were explained")
        name = method or next(iter(self.maps), None)
        if name not in self.maps:
            raise ValueError(f"method {name!r} was not computed; computed: {sorted(self.maps)}")
        found, maps = self.detections[i], self.maps[name][i]
        picked = list(range(len(found))) if box is None else [box]
        if box is not None and not 0 <= box < len(found):
            raise ValueError(f"box {box} does not exist: image {i} has {len(found)} box(es)")
        picture = self.picture(i)
        if picked:
            picture = overlay_mask(picture, maps[picked].amax(dim=0), colormap=colormap, alpha=alpha)
        return self.draw_boxes(picture, i, picked)

    def picture(self, i: int = 0) -> Image.Image:
        """Image ``i`` as an RGB PIL image."""
        pixels = (self.images[i].detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
        return Image.fromarray(pixels.cpu().numpy())

    def caption(self, i: int, box: int) -> str:
        """``"<label> <score>"`` of box ``box`` of image ``i``."""
        found = self.detections[i]
        return f"{self.label(int(found.labels[box]))} {float(found.scores[box]):.2f}"

    def draw_boxes(self, picture: Image.Image, i: int, boxes: Sequence[int]) -> Image.Image:
        """``picture`` (image ``i``'s size) with the given boxes of image ``i`` and their captions drawn on it."""
        found = self.detections[i]
        draw = ImageDraw.Draw(picture)
        for k in boxes:
            x1, y1, x2, y2 = found.boxes[k].tolist()
            draw.rectangle((x1, y1, x2, y2), outline=(255, 255, 255), width=2)
            text = self.caption(i, k)
            left, top, right, bottom = draw.textbbox((x1, y1), text)
            lift = bottom - top + 2
            y = y1 - lift if y1 >= lift else y1
            draw.rectangle((x1, y, x1 + right - left + 2, y + lift), fill=(255, 255, 255))
            draw.text((x1 + 1, y), text, fill=(0, 0, 0))
        return picture

    def grid(
        self,
        i: int = 0,
        methods: Sequence[str] | None = None,
        *,
        colormap: str = "jet",
        alpha: float = 0.5,
        cell_size: int = 224,
    ) -> Image.Image:
        """A figure of image ``i``'s boxes × methods: one row per box (titled label and score).

        The first column shows the image with the row's box, the others that box's map by each
        method, the box drawn over it (see :func:`camkit.detect._figure.box_grid`).

        Args:
            i: the image.
            methods: the methods, one column each (default: every computed one).
            colormap: see :func:`camkit.viz.overlay_mask`.
            alpha: weight of the image.
            cell_size: the side of each square cell in pixels.

        Returns:
            The RGB figure.

        Raises:
            ValueError: for an unknown image or method, or an image without boxes.
        """
        from camkit.detect._figure import box_grid

        return box_grid(self, i, methods, colormap=colormap, alpha=alpha, cell_size=cell_size)

    def pointing_game(
        self, method: str | None = None, *, tolerance: float = 15.0, energy: bool = False
    ) -> MetricResult:
        """Per box, whether its map points into the box itself (each box is its own region).

        The pointing game (Zhang et al., ECCV 2016; a hit when the map's maximum lies within
        ``tolerance`` pixels of the box) or, with ``energy=True``, the energy-based pointing game
        (Wang et al., Score-CAM, CVPRW 2020: the share of the map's mass inside the box), see
        :func:`camkit.metrics.pointing_game`.

        Args:
            method: the method whose maps are scored (default: the first).
            tolerance: pixels around the box that still count as a hit (the paper's 15).
            energy: the energy-based variant instead.

        Returns:
            A :class:`camkit.metrics.MetricResult`: ``per_sample`` has one value per box (image by
            image, in detection order) and ``mean`` their mean.

        Raises:
            ValueError: for an unknown method.
        """
        from camkit.metrics import MetricResult, energy_pointing_game, pointing_game

        name = method or next(iter(self.maps), None)
        if name not in self.maps:
            raise ValueError(f"method {name!r} was not computed; computed: {sorted(self.maps)}")
        values = []
        for found, maps in zip(self.detections, self.maps[name], strict=True):
            if not len(found):
                continue
            boxes = [box[None] for box in found.boxes]
            score = energy_pointing_game(maps, boxes) if energy else pointing_game(maps, boxes, tolerance=tolerance)
            values.append(score.per_sample)
        per_box = torch.cat(values) if values else torch.zeros(0)
        valid = per_box[~per_box.isnan()]
        return MetricResult(per_box, float(valid.mean()) if valid.numel() else float("nan"))

    def __repr__(self) -> str:
        """Per image: its boxes (label, score) or why it has none."""
        lines = [f"DetectionExplanation({len(self.images)} image(s), methods {list(self.maps)}"]
        for i, found in enumerate(self.detections[:8]):
            if not len(found):
                lines.append(f"  image {i}: no boxes ({self.reasons[i] if i < len(self.reasons) else ''})")
                continue
            boxes = ", ".join(
                f"{self.label(int(label))} {float(score):.2f}"
                for label, score in zip(found.labels[:6], found.scores[:6], strict=True)
            )
            more = f", ... {len(found) - 6} more" if len(found) > 6 else ""
            lines.append(f"  image {i}: {len(found)} box(es): {boxes}{more}")
        return "\n".join(lines) + ")"
