"""Drawing class activation maps: overlays, colormaps, figures and the HTML report.

Maps stay torch tensors (on any device) through camkit; this package is the drawing boundary
where they become Pillow images. Only Pillow is needed; matplotlib, when installed, adds its
colormaps (``viridis``, ``inferno``, ``turbo``, ...).

Example:
    >>> import torch
    >>> from PIL import Image
    >>> from camkit.viz import overlay_mask
    >>> overlay_mask(Image.new("RGB", (8, 8)), torch.rand(2, 2), alpha=0.5).size
    (8, 8)
"""

from camkit.viz.colormaps import ColormapLike as ColormapLike
from camkit.viz.colormaps import apply_colormap as apply_colormap
from camkit.viz.colormaps import builtin_colormaps as builtin_colormaps
from camkit.viz.colormaps import get_colormap as get_colormap
from camkit.viz.colormaps import list_colormaps as list_colormaps
from camkit.viz.grid import cell_grid as cell_grid
from camkit.viz.grid import grid as grid
from camkit.viz.grid import slices as slices
from camkit.viz.grid import strip as strip
from camkit.viz.overlay import MaskLike as MaskLike
from camkit.viz.overlay import colorize as colorize
from camkit.viz.overlay import overlay_mask as overlay_mask
from camkit.viz.overlay import to_mask_image as to_mask_image
from camkit.viz.report import ReportRow as ReportRow
from camkit.viz.report import render_report as render_report
from camkit.viz.report import write_report as write_report
from camkit.viz.video import frame_strip as frame_strip
from camkit.viz.video import save_gif as save_gif
from camkit.viz.video import video_frames as video_frames

__all__ = [
    "ColormapLike",
    "MaskLike",
    "ReportRow",
    "apply_colormap",
    "builtin_colormaps",
    "cell_grid",
    "colorize",
    "frame_strip",
    "get_colormap",
    "grid",
    "list_colormaps",
    "overlay_mask",
    "render_report",
    "save_gif",
    "slices",
    "strip",
    "to_mask_image",
    "video_frames",
    "write_report",
]
