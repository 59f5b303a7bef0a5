"""Poly-CAM against an independent float64 derivation, its default layers, and a known-answer model.

The reference captures each layer's activation with a plain forward hook, scores every masked input
with its own forward (one input at a time), and fuses the layers' maps from the coarsest to the
finest as the paper describes, with plain tensor arithmetic (no camkit code).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import camkit
from camkit.methods import PolyCAM
from camkit.methods.polycam import local_normalization, polycam_layers
from camkit.targets import ClassProbabilityTarget
from conftest import all_hooks
from test_methods_integrated import RedInRegion, red_and_green, region_mass

DTYPE = torch.float64
CLASSES = [1, 3]


def activations(model: nn.Module, layers: list[str], x: Tensor) -> list[Tensor]:
    net = copy.deepcopy(model)
    kept: dict[str, Tensor] = {}
    for name in layers:
        net.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: kept.__setitem__(name, out))
    with torch.no_grad():
        net(x)
    return [kept[name].detach() for name in layers]


def _score(model: nn.Module, x: Tensor, cls: int, softmax: bool) -> float:
    with torch.no_grad():
        out = model(x)
        out = torch.softmax(out, dim=1) if softmax else out
    return float(out[0, cls])


def _layer_map(model: nn.Module, a: Tensor, x: Tensor, classes: list[int], variant: str, softmax: bool) -> Tensor:
    """ReLU(sum_k w_k A_k) of one layer, per sample, with the masked-input weights of the variant."""
    maps = []
    for s, cls in enumerate(classes):
        xs = x[s : s + 1]
        clean = _score(model, xs, cls, softmax)
        weights = []
        for k in range(a.shape[1]):
            channel = a[s, k]
            lo, hi = channel.min(), channel.max()
            mask = (channel - lo) / (hi - lo) if hi > lo else torch.zeros_like(channel)
            mask = F.interpolate(mask[None, None], size=x.shape[2:], mode="bilinear", align_corners=False)
            plus = _score(model, xs * mask, cls, softmax)
            minus = _score(model, xs * (1 - mask), cls, softmax)
            w = {"plus": plus, "minus": max(clean - minus, 0.0), "plusminus": max(plus + clean - minus, 0.0)}[variant]
            weights.append(w)
        w = torch.tensor(weights, dtype=DTYPE)
        maps.append((w[:, None, None] * a[s]).sum(0).clamp_min(0))
    return torch.stack(maps)


def reference_polycam(
    model: nn.Module,
    x: Tensor,
    classes: list[int],
    layers: list[str],
    variant: str = "plusminus",
    softmax: bool = False,
) -> Tensor:
    """Poly-CAM by hand: per-layer maps, fused from the coarsest layer with local normalization."""
    maps = [
        _layer_map(model, a, x, classes, variant, softmax) for a in activations(model, layers, x)
    ]  # layers given in forward order, finest first
    maps = sorted(maps, key=lambda m: m.shape[-1] * m.shape[-2])
    fused = maps[0]
    for cam in maps[1:]:
        h, w = cam.shape[-2:]
        cells = F.adaptive_avg_pool2d(cam[:, None], fused.shape[-2:])
        local = F.interpolate(cells, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        up = F.interpolate(fused[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        fused = (cam / local.clamp_min(1e-12) * up).clamp_min(0)
    return F.interpolate(fused[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]


def staged_model(seed: int = 0) -> nn.Sequential:
    """Two resolution stages (16 -> 8 -> 4) before global pooling."""
    torch.manual_seed(seed)
    return (
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 5, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(5, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(6, 5),
        )
        .double()
        .eval()
    )


def _input(n: int = 2, size: int = 16) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(9), dtype=DTYPE)


# --------------------------------------------------------------------------------------------------
# The formula
# --------------------------------------------------------------------------------------------------
def test_default_layers_are_the_ends_of_the_resolution_stages() -> None:
    assert polycam_layers(staged_model()) == ["1", "4", "7"]
    from torchvision.models import resnet18, vgg16

    assert polycam_layers(resnet18()) == ["relu", "layer1", "layer2", "layer3", "layer4"]
    # the authors' list for VGG16 (their README): the last ReLU before each max-pooling
    assert polycam_layers(vgg16()) == ["features.3", "features.8", "features.15", "features.22", "features.29"]


def test_default_layers_on_timm_cnns() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False)
    assert polycam_layers(model) == ["act1", "layer1", "layer2", "layer3", "layer4"]


@pytest.mark.parametrize("variant", ["plus", "minus", "plusminus"])
def test_polycam_equals_its_float64_formula(variant: str) -> None:
    model, x = staged_model(), _input()
    expected = reference_polycam(model, x, CLASSES, ["1", "4", "7"], variant)
    with PolyCAM(model, variant=variant, batch_size=7) as extractor:
        assert extractor.target_names == ["1", "4", "7"]
        got = extractor(CLASSES, model(x), normalized=False)
    assert len(got) == 1
    assert got[0].shape == (2, 16, 16)
    torch.testing.assert_close(got[0], expected, rtol=1e-9, atol=1e-12)


def test_polycam_with_probabilities_and_given_layers_in_any_order() -> None:
    model, x = staged_model(1), _input()
    expected = reference_polycam(model, x, CLASSES, ["4", "7"], "plus", softmax=True)
    with PolyCAM(model, ["7", "4"], variant="plus") as extractor:
        got = extractor(targets=ClassProbabilityTarget(CLASSES), scores=model(x), normalized=False)[0]
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_max_channels_scores_only_the_most_varied_channels() -> None:
    model, x = staged_model(), _input(1)
    with PolyCAM(model, ["7"], max_channels=2) as limited, torch.no_grad():
        model(x)
        weights = camkit.get_method("polycam")
    del weights
    calls = {"n": 0}
    handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        with PolyCAM(model, ["7"], max_channels=2, batch_size=1) as limited:
            limited(1, model(x))
    finally:
        handle.remove()
    assert calls["n"] == 1 + 2 * 2 + 1  # the forward, 2 channels x (masked, mask removed), the clean input


def test_local_normalization_divides_by_the_local_mean() -> None:
    """On a 1x1 grid LNorm divides by the map's mean; it ignores the map's scale; a flat map becomes 1."""
    cam = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    torch.testing.assert_close(local_normalization(cam, (1, 1)), cam / cam.mean(dim=(1, 2), keepdim=True))
    torch.testing.assert_close(local_normalization(7 * cam, (3, 3)), local_normalization(cam, (3, 3)))
    flat = torch.full((1, 4, 4), 2.5, dtype=DTYPE)
    torch.testing.assert_close(local_normalization(flat, (2, 2)), torch.ones_like(flat))


# --------------------------------------------------------------------------------------------------
# Known answer
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["plus", "minus", "plusminus"])
def test_known_region_gets_most_of_the_mass(variant: str) -> None:
    model, x = RedInRegion().double().eval(), red_and_green()
    with PolyCAM(model, variant=variant) as extractor:
        assert extractor.target_names == ["features.0", "features.2"]
        cam = extractor(0, model(x))[0]
    assert cam.shape == (1, 32, 32)
    assert region_mass(cam) >= 0.8


# --------------------------------------------------------------------------------------------------
# Doors and errors
# --------------------------------------------------------------------------------------------------
def test_doors() -> None:
    from camkit.compat.gradcam import PolyCAM as GradcamPolyCAM

    model, x = staged_model(), _input()
    hooks = all_hooks(model)
    explained = camkit.explain(model, x, method="polycam", class_idx=CLASSES, variant="plus")
    assert explained.maps["polycam"].shape[-2:] == (16, 16)
    with GradcamPolyCAM(model=model, target_layers=[model[1], model[4], model[7]]) as cam:
        out = cam(input_tensor=x.float().double(), targets=None)
    assert out.shape == (2, 16, 16)
    assert all_hooks(model) == hooks


@pytest.mark.parametrize(("options", "match"), [({"variant": "both"}, "variant must be one of")])
def test_bad_options(options: dict[str, Any], match: str) -> None:
    model, x = staged_model(), _input()
    with PolyCAM(model, **options) as extractor:
        scores = model(x)
        with pytest.raises(ValueError, match=match):
            extractor(CLASSES, scores)


def test_default_layers_need_no_forward() -> None:
    """Read from the structure: a model with two inputs, 1-D and 3-D convolutions, timm ConvNeXt and MobileNetV3."""

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
            self.side = nn.Linear(2, 4)
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(4, 3)

        def forward(self, x: Tensor, v: Tensor) -> Tensor:
            out: Tensor = self.fc(self.pool(self.features(x)) * self.side(v))
            return out

    assert polycam_layers(TwoInputs()) == ["features.3"]  # the stem convolution is strided
    signal = nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Conv1d(4, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1)
    )
    assert polycam_layers(signal) == ["1", "3"]
    timm = pytest.importorskip("timm")
    assert polycam_layers(timm.create_model("convnext_atto")) == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert polycam_layers(timm.create_model("efficientnet_b0")) == [
        "blocks.0",
        "blocks.1",
        "blocks.2",
        "blocks.4",
        "bn2",
    ]


def test_transformers_get_the_automatic_layer() -> None:
    from test_vit_models import tv_vit

    assert polycam_layers(tv_vit()) == ["encoder.layers.encoder_layer_1.ln_1"]


def test_flat_channels_cost_no_masked_forwards() -> None:
    """The blue channel of the known-answer image is constant: its mask is 0, its scores are shared ones."""
    model, x = RedInRegion().double().eval(), red_and_green()
    calls = {"n": 0}
    handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        with PolyCAM(model, ["features.0"], batch_size=1) as extractor:
            cam = extractor(0, model(x), normalized=False)[0]
    finally:
        handle.remove()
    # the forward, red and green x (masked, mask removed), the zero input, the clean input
    assert calls["n"] == 1 + 2 * 2 + 1 + 1
    expected = reference_polycam(model, x, [0], ["features.0"])
    torch.testing.assert_close(cam, expected, rtol=1e-9, atol=1e-12)
