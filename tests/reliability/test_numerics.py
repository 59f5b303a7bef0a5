"""Guarantee 6, numerics: flat maps give zeros (not NaN), low-precision activations are upcast
for the weighting, and results are deterministic on CPU (within a process and across processes).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import Tensor, nn

import camkit
from camkit import ops
from reliability.support import DOORS, METHODS, maps, small_cnn, torchcam


def _pointwise_cnn(stride: int) -> nn.Sequential:
    """1x1 convolutions only: a constant input gives spatially constant activations (flat maps)."""
    generator = torch.Generator().manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1, stride=stride),
        nn.ReLU(),
        nn.Conv2d(4, 4, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator).abs() + 0.1)  # activations stay positive
    return model.eval()


@pytest.mark.parametrize("stride", [1, 2], ids=["same_size", "upsampled"])
@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", DOORS)
def test_flat_maps_normalize_to_zeros_not_nan(door: str, name: str, stride: int) -> None:
    model = _pointwise_cnn(stride)
    x = torch.full((2, 3, 8, 8), 0.7)
    with torchcam(name, model, "2") as extractor:
        raw = extractor(0, model(x), normalized=False)[0]
    flat = raw.flatten(1).amax(dim=1) == raw.flatten(1).amin(dim=1)
    got = maps(door, name, model, x, layer="2")
    assert torch.isfinite(got).all()
    assert got.amin() >= 0
    assert got.amax() <= 1
    assert torch.equal(got[flat], torch.zeros_like(got[flat])), "a flat map did not normalize to zeros"
    # the maps are flat, except Recipro-CAM's (its masks are cut at the border), FullGrad's input term
    # after a stride-2 layer (only every other pixel has a gradient) and black-box ones (RISE's random masks
    # keep different amounts of the input; occlusion's windows score alike only up to the model's rounding)
    if name != "reciprocam" and not (name == "fullgrad" and stride == 2) and not camkit.get_method(name).black_box:
        assert flat.all()


FLOAT32_MAX = float(np.finfo(np.float32).max)
FINITE = st.floats(min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX, allow_nan=False, width=32)


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(maps_=hnp.arrays(dtype="float32", shape=hnp.array_shapes(min_dims=2, max_dims=4, max_side=5), elements=FINITE))
def test_normalize_property(maps_: Any) -> None:
    cam = torch.from_numpy(maps_)
    out = ops.normalize(cam)
    assert out.shape == cam.shape
    assert torch.isfinite(out).all()
    flat = cam.flatten(1)
    spans = flat.amax(dim=1) > flat.amin(dim=1)
    rows = out.flatten(1)
    if rows.shape[1]:
        assert torch.equal(rows[~spans], torch.zeros_like(rows[~spans]))  # flat: zeros, not NaN
        torch.testing.assert_close(rows[spans].amin(dim=1), torch.zeros(int(spans.sum())), rtol=0, atol=0)
        torch.testing.assert_close(rows[spans].amax(dim=1), torch.ones(int(spans.sum())), rtol=0, atol=1e-6)
        order = flat[spans].argsort(dim=1)  # monotone: the order of the values is kept
        assert (rows[spans].gather(1, order).diff(dim=1) >= 0).all()


@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_normalize_matches_the_formula_in_float64(eps: float) -> None:
    scales = torch.tensor([1e-30, 1.0, 1e3, 1e30]).view(4, 1, 1)  # normal floats of every magnitude
    cam = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(0)) * scales
    flat = cam.double().flatten(1)
    low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    expected = ((flat - low) / (high - low + eps)).view_as(cam)
    torch.testing.assert_close(ops.normalize(cam, eps=eps).double(), expected, rtol=2e-7, atol=1e-7)
    torch.testing.assert_close(ops.normalize(cam.double(), eps=eps), expected, rtol=1e-15, atol=1e-15)


def test_normalize_needs_a_map_per_sample() -> None:
    with pytest.raises(ValueError, match=r"maps of shape \(N, \*S\)"):
        ops.normalize(torch.rand(5))


@pytest.mark.parametrize("shape", [(1, 7, 3, 3), (3, 5, 4), (2, 4, 2, 3, 2), (0, 4, 2, 2)])
def test_combine_matches_the_weighted_sum_in_float64(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(1)
    a, w = torch.randn(shape, generator=gen), torch.randn(shape[:2], generator=gen)
    expected = (w.double().reshape(*shape[:2], *[1] * (len(shape) - 2)) * a.double()).sum(dim=1)
    torch.testing.assert_close(ops.combine(w, a).double(), expected, rtol=1e-6, atol=1e-6)
    per_position = w.reshape(*shape[:2], *[1] * (len(shape) - 2)).expand(shape)  # the broadcast path
    torch.testing.assert_close(ops.combine(per_position, a).double(), expected, rtol=1e-6, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast must not lower the product's precision
        assert ops.combine(w, a).dtype == torch.float32
    assert ops.combine(w.to("meta"), a.to("meta")).shape == expected.shape  # no autocast on meta tensors


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(value=FINITE, size=st.integers(1, 6), target=st.integers(1, 12))
def test_upsampled_flat_map_stays_flat(value: float, size: int, target: int) -> None:
    up = ops.upsample(torch.full((2, size, size), value), (target, target))
    assert torch.equal(up, torch.full((2, target, target), value))
    assert torch.equal(ops.normalize(up), torch.zeros(2, target, target))


class LowPrecisionLayer(nn.Module):
    """``small_cnn`` whose target layer (``net.3``) runs in ``dtype``; the rest stays float32."""

    def __init__(self, dtype: torch.dtype | None, small_gradients: bool = False) -> None:
        super().__init__()
        self.net = small_cnn()
        if small_gradients:  # g**3 underflows in float16
            with torch.no_grad():
                self.net[7].weight.mul_(1e-3)
        self.dtype = dtype
        if dtype is not None:
            self.net[3].to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        y = self.net[:3](x)
        y = self.net[3](y.to(self.dtype) if self.dtype else y)
        return self.net[4:](y.float())


def _float64_map(name: str, a: Tensor, g: Tensor) -> Tensor:
    """The raw map of ``name`` from the papers' formulas, in float64 (independent of camkit's code)."""
    a, g = a.double(), g.double()
    if name == "gradcam":
        cam = (g.mean(dim=(2, 3))[..., None, None] * a).sum(1)
    elif name == "hirescam":
        cam = (g * a).sum(1)
    elif name == "gradcamelementwise":
        cam = torch.relu(g * a).sum(1)
    elif name == "layercam":
        cam = (torch.relu(g) * a).sum(1)
    elif name == "xgradcam":
        total = a.sum(dim=(2, 3))
        weights = torch.where(total != 0, (g * a).sum(dim=(2, 3)) / total.where(total != 0, 1.0), 0.0)
        cam = (weights[..., None, None] * a).sum(1)
    else:  # gradcampp
        denom = 2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3
        alpha = torch.where((g**2 > 0) & (denom != 0), g**2 / denom.where(denom != 0, 1.0), 0.0)
        cam = ((alpha * torch.relu(g)).sum(dim=(2, 3))[..., None, None] * a).sum(1)
    return torch.relu(cam)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "gradcamelementwise"])
def test_low_precision_activations_are_upcast_for_the_weighting(name: str, dtype: torch.dtype) -> None:
    model = LowPrecisionLayer(dtype, small_gradients=True).eval()
    x = torch.rand(2, 3, 8, 8)
    kept: list[Tensor] = []
    handle = model.net[3].register_forward_hook(lambda _m, _i, out: kept.append(out))
    score = model(x)[:, 1].sum()
    a = kept[0]
    g = torch.autograd.grad(score, a)[0]
    handle.remove()
    assert a.dtype == g.dtype == dtype
    expected = _float64_map(name, a.detach(), g)
    with torchcam(name, model, "net.3") as extractor:
        got = extractor(1, model(x), normalized=False)[0]
    assert got.dtype == torch.float32
    assert expected.amax() > 0
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6 * float(expected.amax()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", DOORS)
def test_low_precision_layer_gives_float32_maps_near_the_float32_ones(door: str, name: str, dtype: torch.dtype) -> None:
    x = torch.rand(2, 3, 8, 8)
    reference = LowPrecisionLayer(None).eval()
    low = LowPrecisionLayer(dtype).eval()
    expected = maps(door, name, reference, x, class_idx=1, layer="net.3")
    got = maps(door, name, low, x, class_idx=1, layer="net.3")
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    # A and G themselves carry 11 (float16) or 8 (bfloat16) bits: a pixel where the weighted channels cancel can
    # move a lot, so the maps are compared on average (the weighting itself is checked exactly above)
    error = float((got - expected).abs().mean())
    assert error < (0.01 if dtype == torch.float16 else 0.03), f"mean |difference| {error:.4f}"


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", DOORS)
def test_results_are_deterministic_within_a_process(door: str, name: str) -> None:
    model = small_cnn()
    x = torch.rand(3, 3, 8, 8)
    first = maps(door, name, model, x, class_idx=[0, 1, 2])
    for _ in range(2):
        assert torch.equal(maps(door, name, model, x, class_idx=[0, 1, 2]), first)


_DIGESTS = """
import hashlib, json, sys, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
from reliability.support import DOORS, METHODS, maps, small_cnn
x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(11))
digests = {
    f"{door} {name}": hashlib.sha256(maps(door, name, small_cnn(), x, class_idx=[0, 1, 2]).numpy().tobytes())
    .hexdigest()
    for door in DOORS
    for name in METHODS
}
print(json.dumps(digests))
"""


def test_results_are_deterministic_across_processes() -> None:
    tests = Path(__file__).resolve().parents[1]
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(11))
    here = {
        f"{door} {name}": hashlib.sha256(
            maps(door, name, small_cnn(), x, class_idx=[0, 1, 2]).numpy().tobytes()
        ).hexdigest()
        for door in DOORS
        for name in METHODS
    }
    done = subprocess.run(
        [sys.executable, "-c", _DIGESTS, str(tests)], capture_output=True, text=True, timeout=300, check=True
    )
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there == here
