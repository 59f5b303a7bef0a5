"""Draw the 1D and video figures of docs/any-model.md from hand-built models whose answer is known.

* 1D: a "bump or dip" detector. Two Conv1d filters are a Gaussian bump and its negation; after a
  ReLU and global average pooling, class 0 reads the bump filter and class 1 the dip filter. The
  signal holds a bump at t = 70 and a dip at t = 180 in noise, so Grad-CAM of class 0 must point at
  t = 70 and of class 1 at t = 180.
* Video: a "something moves right" detector. One Conv3d filter takes the brightness of a 5x5 box
  minus the same box one frame earlier (a brightness increase); after a ReLU and pooling, class 0
  reads it. The clip holds a square that moves right and a square that stays put, so the map must
  follow the moving square's leading edge and ignore the static one.

Run ``python scripts/any_model_figures.py`` to rewrite docs/images/any-model-*.{png,gif}.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from camkit.methods import GradCAM
from camkit.viz import frame_strip, save_gif, strip, video_frames

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def bump_dip_model() -> nn.Sequential:
    t = torch.arange(-10, 11, dtype=torch.float32)
    bump = torch.exp(-(t**2) / (2 * 4.0**2))
    bump = bump / bump.norm()
    model = nn.Sequential(
        nn.Conv1d(1, 2, 21, padding=10, bias=False), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(2, 2)
    )
    with torch.no_grad():
        model[0].weight.copy_(torch.stack([bump, -bump]).unsqueeze(1))
        model[4].weight.copy_(torch.eye(2))
        model[4].bias.zero_()
    return model.eval()


def signal() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(256, dtype=torch.float32)
    x = 0.15 * torch.randn(256, generator=generator)
    x += torch.exp(-((t - 70) ** 2) / (2 * 5.0**2)) - torch.exp(-((t - 180) ** 2) / (2 * 5.0**2))
    return x.view(1, 1, 256)


def motion_model() -> nn.Sequential:
    model = nn.Sequential(
        nn.Conv3d(1, 1, (2, 5, 5), padding=(0, 2, 2), bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(1, 2),
    )
    with torch.no_grad():
        box = torch.full((5, 5), 1 / 25)
        model[0].weight.copy_(torch.stack([-box, box]).view(1, 1, 2, 5, 5))  # frame t minus frame t-1
        model[4].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[4].bias.zero_()
    return model.eval()


def clip(frames: int = 8, size: int = 48) -> torch.Tensor:
    video = torch.zeros(1, 1, frames, size, size)
    video[..., 30:40, 6:16] = 0.6  # the static square
    for t in range(frames):
        left = 4 + 4 * t
        video[0, 0, t, 8:18, left : left + 10] = 1.0  # the square moving right
    return video


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model, x = bump_dip_model(), signal()
    with GradCAM(model, "1") as extractor:
        maps = [extractor(c, model(x))[0][0] for c in (0, 1)]
    peaks = [int(m.argmax()) for m in maps]
    assert abs(peaks[0] - 70) <= 3, peaks
    assert abs(peaks[1] - 180) <= 3, peaks
    figure = strip(torch.stack(maps), x.expand(2, 1, 256), width=512, row_height=18, signal_height=60,
                   labels=["class 'bump'", "class 'dip'"])  # fmt: skip
    figure.save(OUT / "any-model-signal.png")

    model, video = motion_model(), clip()
    with GradCAM(model, "1") as extractor:
        cam = extractor(0, model(video))[0][0]  # (T - 1, H, W): the filter spans two frames
    assert cam[:, 30:40, 6:16].max() < 1e-4, "the static square must not light up"
    frames = video_frames(cam, video[0, :, 1:].expand(3, -1, -1, -1), alpha=0.5)
    frame_strip(cam, video[0, :, 1:].expand(3, -1, -1, -1), cell_size=96, padding=4).save(OUT / "any-model-video.png")
    save_gif([f.resize((96, 96)) for f in frames], OUT / "any-model-video.gif", duration=250)
    print(f"peaks at t = {peaks}; wrote {len(frames)} video frames; {math.prod(cam.shape)} map values")


if __name__ == "__main__":
    main()
