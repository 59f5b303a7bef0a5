"""Mixed precision: maps of a forward under ``torch.autocast`` against the float32 maps.

The user runs the forward under autocast (bfloat16 on CPU here); the extractor captures bfloat16
activations and gradients and computes the map in float32. bfloat16 keeps 8 significant bits
(relative rounding 2^-8 ~ 0.004), and min-max normalization stretches the rounding of a map by
``1 / (max - min)``, so the tolerance is stated on normalized maps of well-conditioned toy models
(a bright blob on noise, ReLU CNNs with 1, 2 and 3 spatial dims):

* Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Grad-CAM element-wise, ShapleyCAM,
  Smooth Grad-CAM++: max abs difference <= 0.05 (measured <= 0.036 over 10 seeds per rank);
* FullGrad: <= 0.35 (it min-max normalizes every channel's bias-gradient map separately, so a
  ReLU that switches on or off under bfloat16 moves a whole channel's term; measured 0.07 on
  the pretrained EfficientNet-Lite0 and the bundled photos).

Eigen-Grad-CAM / SegEigenCAM are not held to a bound: when the two largest singular values are
close, rounding can pick the other component (one map in 30 flipped in our measurements).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from camkit.engine import CAMExtractor

TOLERANCE = 0.05
FULLGRAD_TOLERANCE = 0.35
METHODS = ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "gradcamelementwise", "shapleycam"]
SHAPES = {1: (96,), 2: (32, 32), 3: (10, 16, 16)}


def blob_model(dims: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[dims]
    return nn.Sequential(
        conv(3, 16, 3, padding=1),
        nn.ReLU(),
        conv(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        conv(32, 32, 3, padding=1),
        nn.ReLU(),
        pool(1),
        nn.Flatten(),
        nn.Linear(32, 4),
    ).eval()


def blob_input(dims: int, seed: int) -> Tensor:
    """Noise (std 0.3) with a bright 5-wide blob (+2) at a random place in each of 4 samples."""
    generator = torch.Generator().manual_seed(seed)
    shape = SHAPES[dims]
    x = 0.3 * torch.randn(4, 3, *shape, generator=generator)
    for n in range(4):
        start = [int(torch.randint(2, s - 6, (1,), generator=generator)) for s in shape]
        x[(n, slice(None), *(slice(i, i + 5) for i in start))] += 2.0
    return x


def maps_pair(method: str, dims: int, seed: int, **options: Any) -> tuple[Tensor, Tensor]:
    """Normalized maps of the top class for a float32 forward and a bfloat16-autocast forward."""
    model, x = blob_model(dims, seed), blob_input(dims, seed)
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    layer = None if method == "fullgrad" else "5"
    maps = []
    for enabled in (False, True):
        opts = dict(options)
        if method == "smoothgradcampp":  # the same noise draws in both runs
            opts["generator"] = torch.Generator().manual_seed(0)
        with CAMExtractor(model, layer, input_shape=tuple(x.shape[1:]), method=method, **opts) as extractor:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                scores = model(x)
            assert scores.dtype == (torch.bfloat16 if enabled else torch.float32)  # autocast really ran
            maps.append(extractor.fuse_cams(extractor(top, scores)))
    if method == "fullgrad":  # FullGrad's layers have several sizes: compare at the input size
        maps = [torch.nn.functional.interpolate(m.unsqueeze(1), size=SHAPES[dims]).squeeze(1) for m in maps]
    return maps[0], maps[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("method", METHODS)
def test_gradient_methods_bfloat16(method: str, dims: int, seed: int) -> None:
    full, mixed = maps_pair(method, dims, seed)
    assert mixed.dtype == torch.float32
    assert bool(torch.isfinite(mixed).all())
    assert float((full - mixed).abs().max()) <= TOLERANCE


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_smoothgradcampp_bfloat16(dims: int) -> None:
    full, mixed = maps_pair("smoothgradcampp", dims, 0, num_samples=2)
    assert float((full - mixed).abs().max()) <= TOLERANCE


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_fullgrad_bfloat16(dims: int) -> None:
    full, mixed = maps_pair("fullgrad", dims, 0)
    assert float((full - mixed).abs().max()) <= FULLGRAD_TOLERANCE


@pytest.mark.parametrize("method", ["scorecam", "cam", "eigencam"])
def test_other_families_run_under_autocast(method: str) -> None:
    """Gradient-free methods take the bfloat16 activations too (their maps come back in float32)."""
    model, x = blob_model(2, 0), blob_input(2, 0)
    with CAMExtractor(model, "5", method=method) as extractor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
        cam = extractor([0, 1, 2, 3])[0]
    assert cam.dtype == torch.float32
    assert cam.shape == (4, 16, 16)
    assert bool(torch.isfinite(cam).all())


@pytest.mark.parametrize("method", ["ablationcam", "reciprocam"])
def test_replacement_methods_inside_autocast(method: str) -> None:
    """Called inside the autocast block, the re-forward on bfloat16 activations runs under autocast too."""
    model, x = blob_model(2, 0), blob_input(2, 0)
    with CAMExtractor(model, "5", method=method) as extractor, torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
        cam = extractor([0, 1, 2, 3])[0]
    assert cam.dtype == torch.float32
    assert cam.shape == (4, 16, 16)
    assert bool(torch.isfinite(cam).all())
    assert float(cam.amax(dim=(1, 2)).min()) == 1.0


@pytest.mark.parametrize("method", ["ablationcam", "reciprocam"])
def test_replacement_methods_under_autocast(method: str) -> None:
    model, x = blob_model(2, 0), blob_input(2, 0)
    with CAMExtractor(model, "5", method=method) as extractor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
        cam = extractor([0, 1, 2, 3])[0]
    assert bool(torch.isfinite(cam).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_gradient_methods_float16_cuda(method: str) -> None:
    model, x = blob_model(2, 0).cuda(), blob_input(2, 0).cuda()
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    maps = []
    for enabled in (False, True):
        with CAMExtractor(model, "5", method=method) as extractor:
            with torch.autocast("cuda", dtype=torch.float16, enabled=enabled):
                scores = model(x)
            maps.append(extractor(top, scores)[0])
    assert float((maps[0] - maps[1]).abs().max()) <= TOLERANCE
