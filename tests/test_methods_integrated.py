"""Integrated Grad-CAM and CAMERAS against independent float64 derivations, and on known-answer models.

The references capture the target layer's activation and gradient with a plain forward hook and
``backward`` on a copy of the model (no camkit code), run the path inputs / upsampled inputs one at
a time, and apply the formulas of the papers with float64 tensor arithmetic.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import camkit
from camkit.engine import CAMExtractor
from camkit.methods import CAMERAS, IntegratedGradCAM
from camkit.methods.integrated import cameras_scales
from conftest import all_hooks

DTYPE = torch.float64
CLASSES = [1, 3]


# --------------------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------------------
def layer_grad(model: nn.Module, layer: str, x: Tensor, classes: list[int]) -> tuple[Tensor, Tensor]:
    """The layer's activation and the gradient of the summed class scores, by a hook and backward on a copy."""
    net = copy.deepcopy(model)
    kept: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> Tensor:
        out = out.clone()
        out.retain_grad()
        kept["a"] = out
        return out

    net.get_submodule(layer).register_forward_hook(hook)
    logits = net(x)
    logits.gather(1, torch.tensor(classes).view(-1, 1)).sum().backward()
    return kept["a"].detach(), kept["a"].grad.detach()


def reference_integratedgradcam(
    model: nn.Module, x: Tensor, classes: list[int], layer: str, steps: int, baseline: Tensor | None = None
) -> Tensor:
    """sum_k w_k (A_k(x) - A_k(x')), w_k = mean over m = 1..M and positions of dY(x_m)/dA_k (before ReLU)."""
    base = torch.zeros_like(x) if baseline is None else baseline.expand_as(x)
    a_x, _ = layer_grad(model, layer, x, classes)
    a_base, _ = layer_grad(model, layer, base, classes)
    total = torch.zeros_like(a_x)
    for m in range(1, steps + 1):
        _, g = layer_grad(model, layer, base + m / steps * (x - base), classes)
        total += g
    w = total.mean(dim=(2, 3)) / steps
    return (w[:, :, None, None] * (a_x - a_base)).sum(1)


def reference_cameras(
    model: nn.Module, x: Tensor, classes: list[int], layer: str, num_scales: int, step: int
) -> Tensor:
    """sum_k mean_r U(A_k^r) * mean_r U(g_k^r) over inputs enlarged by step/224 per scale (before ReLU)."""
    h, w = x.shape[2:]
    acts, grads = [], []
    for r in range(num_scales):
        size = (round(h * (1 + r * step / 224)), round(w * (1 + r * step / 224)))
        low = x.amin(dim=(2, 3), keepdim=True)  # bicubic relative to each channel's minimum (constants stay exact)
        xr = x if r == 0 else F.interpolate(x - low, size=size, mode="bicubic", align_corners=False) + low
        a, g = layer_grad(model, layer, xr, classes)
        acts.append(F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False))
        grads.append(F.interpolate(g, size=(h, w), mode="bilinear", align_corners=False))
    return (torch.stack(acts).mean(0) * torch.stack(grads).mean(0)).sum(1)


def small_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.Conv2d(5, 6, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    ).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def _input(n: int = 2, size: int = 10) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5), dtype=DTYPE)


# --------------------------------------------------------------------------------------------------
# The formulas
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["0", "3"])
@pytest.mark.parametrize(("steps", "batch_size"), [(4, 64), (7, 3), (1, 1)])
def test_integratedgradcam_equals_its_float64_formula(layer: str, steps: int, batch_size: int) -> None:
    model, x = small_model(), _input()
    expected = reference_integratedgradcam(model, x, CLASSES, layer, steps).clamp_min(0)
    with IntegratedGradCAM(model, layer, steps=steps, batch_size=batch_size) as extractor:
        got = extractor(CLASSES, model(x), normalized=False)[0]
    assert got.dtype == DTYPE
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("baseline", [0.5, "tensor"])
def test_integratedgradcam_baselines(baseline: Any) -> None:
    model, x = small_model(1), _input()
    base = (
        torch.rand(1, 3, 1, 1, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
        if baseline == "tensor"
        else torch.full((1, 3, 10, 10), baseline, dtype=DTYPE)
    )
    given = base if baseline == "tensor" else baseline
    expected = reference_integratedgradcam(model, x, CLASSES, "3", 5, base).clamp_min(0)
    with IntegratedGradCAM(model, "3", steps=5, baseline=given) as extractor:
        got = extractor(CLASSES, model(x), normalized=False)[0]
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_integratedgradcam_completeness_when_linear_after_the_layer() -> None:
    """Linear after the layer: the map sums over positions to Y(x) - Y(x') (here every term is >= 0)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    head = nn.Linear(4, 2)
    with torch.no_grad():
        conv.weight.abs_()
        head.weight.abs_()
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).double().eval()
    x = _input()
    with IntegratedGradCAM(model, "0", steps=3) as extractor:
        logits = model(x)
        cam = extractor([0, 1], logits, normalized=False)[0]
    base = model(torch.zeros_like(x)).detach()
    gain = logits.detach().gather(1, torch.tensor([[0], [1]])) - base.gather(1, torch.tensor([[0], [1]]))
    torch.testing.assert_close(cam.sum(dim=(1, 2)), gain.squeeze(1), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("layer", ["0", "3"])
@pytest.mark.parametrize(("num_scales", "step"), [(3, 90), (1, 100), (2, 157)])
def test_cameras_equals_its_float64_formula(layer: str, num_scales: int, step: int) -> None:
    model, x = small_model(), _input()
    expected = reference_cameras(model, x, CLASSES, layer, num_scales, step).clamp_min(0)
    with CAMERAS(model, layer, num_scales=num_scales, step=step) as extractor:
        got = extractor(CLASSES, model(x), normalized=False)[0]
    assert got.shape == (2, 10, 10)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-10)


def test_cameras_channel_chunks_do_not_change_the_map(monkeypatch: pytest.MonkeyPatch) -> None:
    from camkit.methods import integrated

    model, x = small_model(), _input()
    with CAMERAS(model, "3", num_scales=2, step=134) as extractor:
        scores = model(x)
        whole = extractor(CLASSES, scores, normalized=False, retain_graph=True)[0]
        monkeypatch.setattr(integrated, "_CHUNK_ELEMENTS", 1)  # one channel per step
        chunked = extractor(CLASSES, scores, normalized=False)[0]
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-14)


def test_cameras_scales_follow_the_paper() -> None:
    assert cameras_scales((224, 224), 8, 100) == [(224 + 100 * r,) * 2 for r in range(8)]
    assert cameras_scales((10, 20), 3, 112) == [(10, 20), (15, 30), (20, 40)]  # step / 224 of the input


def test_cameras_several_layers_sum_at_the_input_size() -> None:
    model, x = small_model(), _input()
    with CAMERAS(model, ["0", "3"], num_scales=2, step=112) as extractor:
        got = extractor(CLASSES, model(x), normalized=False)
    expected = sum(reference_cameras(model, x, CLASSES, layer, 2, 112).clamp_min(0) for layer in ["0", "3"])
    assert len(got) == 1
    torch.testing.assert_close(got[0], expected, rtol=1e-7, atol=1e-10)


class FixedSize(nn.Module):
    """Refuses every input size but its own (like a ViT with a fixed position embedding)."""

    def __init__(self, inner: nn.Module, size: int) -> None:
        super().__init__()
        self.inner, self.size = inner, size

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.size:
            raise ValueError(f"expected {self.size}, got {x.shape[-1]}")
        out: Tensor = self.inner(x)
        return out


def test_cameras_warns_and_keeps_the_resolutions_a_model_accepts() -> None:
    inner, x = small_model(), _input()
    model = FixedSize(inner, 10)
    with CAMERAS(model, "inner.3", num_scales=3, step=112) as extractor:
        scores = model(x)
        with pytest.warns(UserWarning, match=r"did not run on inputs of size \(15, 15\)"):
            got = extractor(CLASSES, scores, normalized=False)[0]
    expected = reference_cameras(inner, x, CLASSES, "3", 1, 112).clamp_min(0)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# Known answers: the score depends only on a known region
# --------------------------------------------------------------------------------------------------
class RedInRegion(nn.Module):
    """Logit 0: the mean of the red channel over the region (rows and columns 1/4..1/2 of the input).

    ``features`` (a ReLU, then a 2x2 average pooling and another ReLU: identities on the non-negative
    inputs used here) is where the methods look; the region is relative, so the score is defined at
    every input size.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.ReLU(), nn.AvgPool2d(2), nn.ReLU())

    @staticmethod
    def region(h: int, w: int) -> tuple[slice, slice]:
        return slice(h // 4, h // 2), slice(w // 4, w // 2)

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x)
        rows, cols = self.region(*f.shape[2:])
        score = f[:, 0, rows, cols].mean(dim=(1, 2))
        return torch.stack([score, -score], dim=1)


def red_and_green(size: int = 32) -> Tensor:
    """A red square inside the region and a green one, as bright, outside it, on a dark background."""
    x = torch.full((1, 3, size, size), 0.05, dtype=DTYPE)
    rows, cols = RedInRegion.region(size, size)
    x[0, 0, rows, cols] = 1.0
    x[0, 1, size // 2 + 4 : size - 2, size // 2 + 4 : size - 2] = 1.0
    return x


def region_mass(cam: Tensor) -> float:
    rows, cols = RedInRegion.region(*cam.shape[-2:])
    return float(cam[..., rows, cols].sum() / cam.sum())


@pytest.mark.parametrize(("name", "layer"), [("integratedgradcam", "features.0"), ("cameras", "features.0")])
def test_known_region_gets_most_of_the_mass(name: str, layer: str) -> None:
    model, x = RedInRegion().double().eval(), red_and_green()
    with (
        CAMExtractor(model, layer, method=name, num_scales=3)
        if name == "cameras"
        else IntegratedGradCAM(model, layer, steps=8) as extractor
    ):
        cam = extractor(0, model(x))[0]
    cam = F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    assert region_mass(cam) >= 0.8


def test_explain_and_compare_run_the_new_methods() -> None:
    model, x = small_model(), _input()
    hooks = all_hooks(model)
    names = ["integratedgradcam", "cameras", "gradcam"]
    result = camkit.compare(model, x, names, "3", class_idx=CLASSES, steps=3, num_scales=2, step=4)
    assert set(result) >= set(names)
    one = camkit.explain(model, x, method="integratedgradcam", target_layer="3", class_idx=CLASSES, steps=3)
    assert one.maps["integratedgradcam"].shape[-2:] == (10, 10)
    assert all_hooks(model) == hooks


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "options", "error", "match"),
    [
        (IntegratedGradCAM, {"steps": 0}, ValueError, "steps must be a positive int"),
        (IntegratedGradCAM, {"baseline": torch.zeros(1, 3, 4, 4, dtype=DTYPE)}, ValueError, "does not broadcast"),
        (CAMERAS, {"num_scales": 0}, ValueError, "num_scales must be a positive int"),
        (CAMERAS, {"step": -3}, ValueError, "step must be a positive int"),
    ],
)
def test_bad_option_values(cls: type, options: dict[str, Any], error: type, match: str) -> None:
    model, x = small_model(), _input()
    with cls(model, "3", **options) as extractor:
        scores = model(x)
        with pytest.raises(error, match=match):
            extractor(CLASSES, scores)


def test_unknown_and_mistyped_options() -> None:
    model = small_model()
    with pytest.raises(TypeError, match=r"unexpected argument 'stesp'.*Accepted: baseline, .*steps"):
        IntegratedGradCAM(model, "3", stesp=3)
    with pytest.raises(TypeError, match="num_scales"):
        CAMERAS(model, "3", num_scales=2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert camkit.get_method("integratedgradcam").forwards(512, 49) == 52
        assert camkit.get_method("cameras").forwards(512, 49) == 9
