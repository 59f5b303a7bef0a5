"""Drawing 1D maps under their signals and video maps as frame strips and animated GIFs.

Colours are checked against the colormap table by hand: map values are put at the centre of a
colour bin (``(i + 1/2) / 256``) wherever a pixel is compared exactly, so resizing noise cannot
move a value into the next bin.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from camkit.methods import GradCAM
from camkit.viz import frame_strip, get_colormap, save_gif, strip, video_frames

JET = get_colormap("jet")  # (256, 3) uint8
INK = (33, 37, 41)


def bin_centres(bins: list[int]) -> Tensor:
    """Map values in the middle of the given colour bins."""
    return (torch.tensor(bins, dtype=torch.float32) + 0.5) / 256


def colours(image: Image.Image) -> set[tuple[int, ...]]:
    """The distinct RGB colours of an image."""
    return {tuple(int(c) for c in p) for p in np.asarray(image.convert("RGB")).reshape(-1, 3)}


def colour(value: float) -> tuple[int, ...]:
    """The jet colour of a value in [0, 1], by the table lookup rule floor(x * 256)."""
    return tuple(int(c) for c in JET[min(math.floor(value * 256), 255)])


# --------------------------------------------------------------------------------------------------
# 1D: the map as a heat band under its signal
# --------------------------------------------------------------------------------------------------
def test_signal_panel_layout_and_colours() -> None:
    bins = [16 * j + 8 for j in range(16)]
    maps = torch.stack([bin_centres(bins), bin_centres(bins[::-1])])  # (2, 16)
    signal = torch.stack([torch.linspace(-1.0, 1.0, 16), torch.linspace(3.0, -3.0, 16)])  # up, down
    pad, bar, panel = 3, 6, 20
    image = strip(maps, signal, width=16, row_height=bar, padding=pad, signal_height=panel)
    assert image.size == (16 + 2 * pad, pad + 2 * (panel + bar + pad))
    for row in range(2):
        top = pad + row * (panel + bar + pad)
        for j in range(16):
            expected = tuple(int(c) for c in JET[bins[j] if row == 0 else bins[15 - j]])
            for y in range(top + panel, top + panel + bar):  # the band, under the panel
                assert image.getpixel((pad + j, y)) == expected
            # the line: level 0..1 from the lowest to the highest sample, drawn from the panel's bottom up
            level = j / 15 if row == 0 else 1 - j / 15
            line_y = top + 1 + (1 - level) * (panel - 3)
            column = [image.getpixel((pad + j, y)) for y in range(top, top + panel)]
            ink_rows = [top + y for y, value in enumerate(column) if value == INK]
            assert ink_rows, f"no line drawn in column {j} of row {row}"
            assert min(abs(y - line_y) for y in ink_rows) <= 1.0


def test_signal_channels_get_their_own_colours() -> None:
    maps = torch.full((1, 32), 0.5)
    channels = torch.stack([torch.zeros(32), torch.ones(32)])  # channel 0 at the bottom, channel 1 at the top
    image = strip(maps[0], channels, width=32, row_height=4, padding=0, signal_height=12)
    assert image.size == (32, 16)
    column = [image.getpixel((16, y)) for y in range(12)]
    assert INK in column[8:]  # channel 0 (value 0) near the bottom of the panel
    assert (31, 119, 180) in column[:4]  # channel 1 (value 1) near the top, in the second colour
    assert all(image.getpixel((x, 14)) == colour(0.5) for x in range(32))


def test_signal_over_bar_keeps_old_layout() -> None:
    image = strip(torch.rand(2, 40), torch.randn(2, 3, 40), width=40, row_height=10, padding=2)
    assert image.size == (44, 2 + 2 * 12)


def test_signal_errors() -> None:
    with pytest.raises(ValueError, match=r"signal_height=8 draws the signals above the bars: pass signals="):
        strip(torch.rand(1, 8), signal_height=8)
    with pytest.raises(ValueError, match=r"N = 2 rows .* got \(3, 1, 8\)"):
        strip(torch.rand(2, 8), torch.rand(3, 1, 8), signal_height=8)
    with pytest.raises(ValueError, match=r"signal_height must be an int >= 0"):
        strip(torch.rand(1, 8), torch.rand(8), signal_height=-1)


def test_one_dimensional_model_end_to_end(tmp_path: Path) -> None:
    """A Conv1d model's Grad-CAM (N, L) drawn under its input (N, C, L) and saved as PNG."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    x = torch.randn(2, 2, 50)
    with GradCAM(model, "1") as extractor:
        maps = extractor([0, 1], model(x))[0]
    assert maps.shape == (2, 50)
    image = strip(maps, x, width=200, row_height=12, signal_height=40, labels=["a", "b"])
    file = tmp_path / "signal.png"
    image.save(file)
    with Image.open(file) as loaded:
        assert loaded.size == image.size
        assert loaded.format == "PNG"


# --------------------------------------------------------------------------------------------------
# Video: frames, frame strips, GIFs
# --------------------------------------------------------------------------------------------------
def constant_frames(bins: list[int], size: tuple[int, int] = (6, 5)) -> Tensor:
    """A (T, H, W) map whose frame t is constant at the centre of colour bin ``bins[t]``."""
    return bin_centres(bins).view(-1, 1, 1).expand(-1, size[1], size[0]).contiguous()


def test_video_frames_colour_the_map() -> None:
    bins = [10, 90, 170, 250]
    frames = video_frames(constant_frames(bins))
    assert [f.size for f in frames] == [(6, 5)] * 4
    for frame, b in zip(frames, bins, strict=True):
        assert colours(frame) == {tuple(int(c) for c in JET[b])}


def test_video_overlay_by_hand() -> None:
    """Map (2 frames) resized in time to the video's 4 frames, squared, coloured and blended (alpha 0.6)."""
    a, b = 0.2, 0.9
    cam = torch.tensor([a, b]).view(2, 1, 1).expand(2, 3, 3)
    video = torch.zeros(3, 4, 6, 6)
    video[:, :, :, 3:] = 1.0  # right half white, left half black (bytes 255 and 0 after min-max)
    frames = video_frames(cam, video, alpha=0.6)
    assert len(frames) == 4
    assert frames[0].size == (6, 6)
    # linear interpolation in time, align_corners=False: sources t/2 - 1/4, clamped to [0, 1]
    values = [a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b]
    for frame, m in zip(frames, values, strict=True):
        heat = colour(m * m)
        for x, background in ((1, 0), (4, 255)):
            expected = [0.4 * h + 0.6 * background for h in heat]
            got = frame.getpixel((x, 2))
            assert all(abs(g - e) <= 1 for g, e in zip(got, expected, strict=True)), (got, expected)


def test_video_from_pil_frames_and_grayscale() -> None:
    gray = torch.rand(1, 3, 8, 10)
    pil = [Image.new("RGB", (10, 8), (40 * t, 0, 0)) for t in range(3)]
    assert [f.size for f in video_frames(torch.rand(3, 2, 2), gray)] == [(10, 8)] * 3
    assert [f.size for f in video_frames(torch.rand(1, 2, 2), pil)] == [(10, 8)] * 3


def test_frame_strip_layout_and_colours() -> None:
    bins = [20, 60, 100, 140, 180, 220]
    cell, pad = 16, 2
    image = frame_strip(constant_frames(bins, (16, 16)), cell_size=cell, padding=pad)
    assert image.width == pad + 6 * (cell + pad)
    assert image.height > pad + cell + pad  # plus one caption line
    for k, b in enumerate(bins):
        assert image.getpixel((pad + k * (cell + pad) + cell // 2, pad + cell // 2)) == tuple(int(c) for c in JET[b])
    chosen = frame_strip(constant_frames(bins, (16, 16)), num=3, cell_size=cell, padding=pad, columns=2)
    assert chosen.width == pad + 2 * (cell + pad)
    # frames floor((k + 1/2) * 6 / 3) = 1, 3, 5
    for k, t in enumerate([1, 3, 5]):
        left, top = pad + (k % 2) * (cell + pad), pad + (k // 2) * (chosen.height - pad) // 2
        assert chosen.getpixel((left + cell // 2, top + cell // 2)) == tuple(int(c) for c in JET[bins[t]])


def test_gif(tmp_path: Path) -> None:
    bins = [30, 100, 170, 240, 200]
    frames = video_frames(constant_frames(bins), size=(12, 10))
    file = save_gif(frames, tmp_path / "map.gif", duration=80, loop=0)
    with Image.open(file) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == len(bins)
        assert gif.size == (12, 10)
        assert gif.info["loop"] == 0
        for t, b in enumerate(bins):
            gif.seek(t)
            assert gif.info["duration"] == 80
            assert colours(gif) == {tuple(int(c) for c in JET[b])}


def test_video_model_end_to_end(tmp_path: Path) -> None:
    """A Conv3d model's Grad-CAM (N, T', H', W') drawn over its input video (N, 3, T, H, W)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(3, 4, 3, stride=(1, 2, 2), padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).eval()
    x = torch.randn(2, 3, 5, 16, 20)
    with GradCAM(model, "1") as extractor:
        maps = extractor([0, 1], model(x))[0]
    assert maps.shape == (2, 5, 8, 10)
    frames = video_frames(maps[1], x[1])
    assert len(frames) == 5
    assert frames[0].size == (20, 16)
    assert Image.open(save_gif(frames, tmp_path / "clip.gif")).n_frames == 5
    assert frame_strip(maps[1], x[1], cell_size=32, padding=0).width == 5 * 32


def test_video_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(C, T, H, W\) with C = 1 or 3, got shape \(4, 2, 8, 8\)"):
        video_frames(torch.rand(2, 4, 4), torch.rand(4, 2, 8, 8))
    with pytest.raises(ValueError, match=r"cam must have shape \(D, H, W\)"):
        video_frames(torch.rand(4, 4))
    with pytest.raises(TypeError, match=r"video must be a \(C, T, H, W\) tensor"):
        video_frames(torch.rand(2, 4, 4), "clip.mp4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"frames must be a non-empty list"):
        save_gif([], tmp_path / "x.gif")
    with pytest.raises(ValueError, match=r"frames must all have one size"):
        save_gif([Image.new("RGB", (2, 2)), Image.new("RGB", (3, 2))], tmp_path / "x.gif")
