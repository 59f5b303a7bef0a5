"""1D signals ``(N, C, L)`` and video ``(N, C, T, H, W)``: maps ``(N, L)`` and ``(N, T, H, W)``.

1. Every registry method on a toy Conv1d and a toy Conv3d model, through the TorchCAM-style
   extractor (maps at the layer's resolution) and the pytorch-grad-cam front door (maps at the
   input's length / size) - generated over ``camkit.list_methods()``.
2. Grad-CAM, Grad-CAM++, LayerCAM, XGrad-CAM, HiResCAM, CAM, Score-CAM and Ablation-CAM against
   float64 re-derivations written here from the formulas (one sample at a time, weights as Python
   floats, gradients by ``torch.autograd.grad`` on the model split at the layer): rel. err <= 1e-6.
3. Upsampling to the input length / size against a hand-written linear interpolation
   (``align_corners=False``, separable for trilinear), and the automatic layer choice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import camkit
import camkit.compat.gradcam as front
from camkit import ops
from camkit.compat.gradcam.utils.model_targets import ClassifierOutputTarget
from camkit.engine import CAMExtractor
from camkit.registry import get_method
from conftest import method_options

DTYPE = torch.float64
RTOL = 1e-6
CLASSES = [0, 2]
OPTIONS: dict[str, Any] = {"num_samples": 2, "batch_size": 16}


# --------------------------------------------------------------------------------------------------
# Toy models (nn.Sequential: layer "i" is model[i], and the model splits there)
# --------------------------------------------------------------------------------------------------
def signal_model(head: str = "nonlinear") -> nn.Sequential:
    """Conv1d -> ReLU -> Conv1d(stride 2) -> ReLU -> head, for inputs (N, 2, 16); layer "3" is (N, 5, 8)."""
    torch.manual_seed(11)
    body = [nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 5, 3, stride=2, padding=1), nn.ReLU()]
    if head == "linear":  # GAP + one Linear: the CAM setting
        tail = [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(5, 3)]
    else:  # gradients vary along the signal
        tail = [nn.AdaptiveAvgPool1d(2), nn.Flatten(), nn.Linear(10, 6), nn.Tanh(), nn.Linear(6, 3)]
    return nn.Sequential(*body, *tail).to(DTYPE).eval()


def video_model(head: str = "nonlinear") -> nn.Sequential:
    """Conv3d -> ReLU -> Conv3d(stride 1,2,2) -> ReLU -> head, for (N, 2, 4, 8, 8); layer "3" is (N, 4, 4, 4, 4)."""
    torch.manual_seed(12)
    body = [nn.Conv3d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv3d(3, 4, 3, stride=(1, 2, 2), padding=1), nn.ReLU()]
    if head == "linear":
        tail = [nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 3)]
    else:
        tail = [nn.AdaptiveAvgPool3d(2), nn.Flatten(), nn.Linear(32, 6), nn.Tanh(), nn.Linear(6, 3)]
    return nn.Sequential(*body, *tail).to(DTYPE).eval()


def signal_input() -> Tensor:
    return torch.randn(2, 2, 16, generator=torch.Generator().manual_seed(1), dtype=DTYPE)


def video_input() -> Tensor:
    return torch.randn(2, 2, 4, 8, 8, generator=torch.Generator().manual_seed(2), dtype=DTYPE)


KINDS: dict[str, tuple[Callable[[str], nn.Sequential], Callable[[], Tensor]]] = {
    "signal": (signal_model, signal_input),
    "video": (video_model, video_input),
}
LAYER_SHAPE = {"signal": (8,), "video": (4, 4, 4)}
INPUT_SHAPE = {"signal": (16,), "video": (4, 8, 8)}


# --------------------------------------------------------------------------------------------------
# Reference helpers (float64, one sample at a time)
# --------------------------------------------------------------------------------------------------
def activation_and_gradient(model: nn.Sequential, layer: int, x: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """``A`` and ``dY^(c)/dA`` at ``model[layer]`` for one input (1, ...), each (K, *S)."""
    a = model[: layer + 1](x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model[layer + 1 :](a)[0, c], a)
    return a.detach()[0], g[0]


def weighted_relu(weights: list[Any], a: Tensor) -> Tensor:
    cam = torch.zeros(a.shape[1:], dtype=DTYPE)
    for k, w in enumerate(weights):
        cam = cam + w * a[k]
    return torch.relu(cam)


def gradcam_weights(a: Tensor, g: Tensor) -> list[Any]:
    return [float(g[k].mean()) for k in range(a.shape[0])]


def gradcampp_weights(a: Tensor, g: Tensor) -> list[Any]:
    weights = []
    for k in range(a.shape[0]):
        total = float(a[k].sum())
        w = 0.0
        for gv in g[k].flatten().tolist():
            denom = 2 * gv**2 + total * gv**3
            alpha = gv**2 / denom if gv**2 > 0 and denom != 0 else 0.0
            w += alpha * max(gv, 0.0)
        weights.append(w)
    return weights


def layercam_weights(a: Tensor, g: Tensor) -> list[Any]:
    return [torch.relu(g[k]) for k in range(a.shape[0])]


def xgradcam_weights(a: Tensor, g: Tensor) -> list[Any]:
    return [float((g[k] * a[k]).sum()) / float(a[k].sum()) if float(a[k].sum()) != 0 else 0.0 for k in range(len(a))]


def hirescam_weights(a: Tensor, g: Tensor) -> list[Any]:
    return [g[k] for k in range(a.shape[0])]


GRADIENT_WEIGHTS = {
    "gradcam": gradcam_weights,
    "gradcampp": gradcampp_weights,
    "layercam": layercam_weights,
    "xgradcam": xgradcam_weights,
    "hirescam": hirescam_weights,
}


def gradient_reference(model: nn.Sequential, layer: int, x: Tensor, weigh: Callable[..., list[Any]]) -> Tensor:
    maps = []
    for n, c in enumerate(CLASSES):
        a, g = activation_and_gradient(model, layer, x[n : n + 1], c)
        maps.append(weighted_relu(weigh(a, g), a))
    return torch.stack(maps)


def interpolate_axis(v: Tensor, axis: int, size: int) -> Tensor:
    """Linear interpolation along one axis, ``align_corners=False``, written out index by index."""
    src_len = v.shape[axis]
    moved = v.movedim(axis, 0)
    out = []
    for i in range(size):
        pos = max((i + 0.5) * src_len / size - 0.5, 0.0)
        lo = min(math.floor(pos), src_len - 1)
        hi = min(lo + 1, src_len - 1)
        frac = pos - lo
        out.append((1 - frac) * moved[lo] + frac * moved[hi])
    return torch.stack(out).movedim(0, axis)


def resize(v: Tensor, size: tuple[int, ...]) -> Tensor:
    """Resize the trailing ``len(size)`` dims of ``v`` (separable (tri)linear interpolation)."""
    first = v.ndim - len(size)
    for offset, s in enumerate(size):
        v = interpolate_axis(v, first + offset, s)
    return v


def scorecam_reference(model: nn.Sequential, layer: int, x: Tensor) -> Tensor:
    maps = []
    for n, c in enumerate(CLASSES):
        xn = x[n : n + 1]
        with torch.no_grad():
            a = model[: layer + 1](xn)[0]
            base = float(model(xn)[0, c])
            gains = []
            for k in range(a.shape[0]):
                span = float(a[k].max() - a[k].min())
                mask = (a[k] - a[k].min()) / span if span > 0 else torch.zeros_like(a[k])
                mask = resize(mask, tuple(xn.shape[2:]))
                gains.append(float(model(xn * mask)[0, c]) - base)
        top = max(gains)
        exps = [math.exp(v - top) for v in gains]
        maps.append(weighted_relu([e / sum(exps) for e in exps], a))
    return torch.stack(maps)


def ablation_reference(model: nn.Sequential, layer: int, x: Tensor) -> Tensor:
    maps = []
    for n, c in enumerate(CLASSES):
        with torch.no_grad():
            a = model[: layer + 1](x[n : n + 1])
            y = float(model[layer + 1 :](a)[0, c])
            weights = []
            for k in range(a.shape[1]):
                ablated = a.clone()
                ablated[0, k] = 0.0
                weights.append((y - float(model[layer + 1 :](ablated)[0, c])) / y)
        maps.append(weighted_relu(weights, a[0]))
    return torch.stack(maps)


def cam_reference(model: nn.Sequential, layer: int, x: Tensor) -> Tensor:
    with torch.no_grad():
        a = model[: layer + 1](x)
    head = model[-1].weight.detach()
    return torch.stack(
        [weighted_relu([float(head[c, k]) for k in range(a.shape[1])], a[n]) for n, c in enumerate(CLASSES)]
    )


def run(method: str, model: nn.Module, x: Tensor, layer: str = "3", **options: Any) -> Tensor:
    with CAMExtractor(model, layer, input_shape=tuple(x.shape[1:]), method=method, **options) as extractor:
        scores = model(x)
        return extractor(CLASSES, scores, normalized=False)[0]


def assert_rel(actual: Tensor, expected: Tensor) -> None:
    assert actual.shape == expected.shape
    scale = float(expected.abs().max())
    assert scale > 0, "degenerate reference"
    assert float((actual - expected).abs().max()) <= RTOL * scale


# --------------------------------------------------------------------------------------------------
# 1. Every registry method, both ranks, both front doors
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("method", camkit.list_methods())
def test_every_method_shapes(method: str, kind: str) -> None:
    build, make = KINDS[kind]
    model, x = build("linear"), make()
    with CAMExtractor(
        model, "3", input_shape=tuple(x.shape[1:]), method=method, **method_options(method, **OPTIONS)
    ) as extractor:
        scores = model(x)
        cams = extractor(CLASSES, scores)
    spec = get_method(method)
    reduced = spec.reduce is not None  # FullGrad: one map at the input size
    shapes = {(2, *(tuple(x.shape[2:]) if reduced else LAYER_SHAPE[kind]))}
    if spec.output == "map":  # a method that makes the map itself may make it at the input's size (RISE, Group-CAM)
        shapes.add((2, *x.shape[2:]))
    assert tuple(cams[0].shape) in shapes
    assert cams[0].dtype == DTYPE
    assert bool(torch.isfinite(cams[0]).all())
    assert float(cams[0].min()) >= 0
    assert float(cams[0].max()) <= 1


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("method", camkit.list_methods())
def test_every_method_front_door(method: str, kind: str) -> None:
    """pytorch-grad-cam style: maps at the input's length (1D) / frames and size (video)."""
    build, make = KINDS[kind]
    model, x = build("linear"), make()
    with front.CAMMethod(model, [model[3]], method=method) as cam:
        grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in CLASSES])
    assert grayscale.shape == (2, *INPUT_SHAPE[kind])
    assert bool((grayscale >= 0).all())
    assert bool((grayscale <= 1).all())


# --------------------------------------------------------------------------------------------------
# 2. Float64 re-derivations
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [2, 3])
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("method", sorted(GRADIENT_WEIGHTS))
def test_gradient_methods_against_formula(method: str, kind: str, layer: int) -> None:
    build, make = KINDS[kind]
    model, x = build("nonlinear"), make()
    cam = run(method, model, x, str(layer))
    assert_rel(cam, gradient_reference(model, layer, x, GRADIENT_WEIGHTS[method]))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_scorecam_against_formula(kind: str) -> None:
    """Masks upsampled from the layer (length 8 / 4x4x4) to the input (16 / 4x8x8), by hand."""
    build, make = KINDS[kind]
    model, x = build("nonlinear"), make()
    assert_rel(run("scorecam", model, x, batch_size=3), scorecam_reference(model, 3, x))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_ablationcam_against_formula(kind: str) -> None:
    build, make = KINDS[kind]
    model, x = build("nonlinear"), make()
    assert_rel(run("ablationcam", model, x, batch_size=3), ablation_reference(model, 3, x))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_cam_against_formula(kind: str) -> None:
    build, make = KINDS[kind]
    model, x = build("linear"), make()
    assert_rel(run("cam", model, x), cam_reference(model, 3, x))


# --------------------------------------------------------------------------------------------------
# 3. Upsampling and the automatic layer choice
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "size"),
    [((2, 8), (16,)), ((2, 5), (23,)), ((1, 4, 4, 4), (4, 8, 8)), ((1, 3, 2, 5), (7, 4, 9)), ((2, 3, 4), (3, 4))],
)
def test_upsample_against_hand_interpolation(shape: tuple[int, ...], size: tuple[int, ...]) -> None:
    v = torch.rand(shape, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    torch.testing.assert_close(ops.upsample(v, size), resize(v, size), rtol=1e-12, atol=1e-12)
    with_channels = v.unsqueeze(1).expand(-1, 2, *v.shape[1:])
    torch.testing.assert_close(ops.upsample(with_channels, size), resize(with_channels, size), rtol=1e-12, atol=1e-12)


def test_upsample_refuses_four_spatial_dims() -> None:
    with pytest.raises(ValueError, match="4 spatial dims cannot be resized: expected 1, 2 or 3"):
        ops.upsample(torch.zeros(1, 2, 2, 2, 2), (4, 4, 4, 4))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_front_door_upsampling_by_hand(kind: str) -> None:
    """The front door's map = min-max of the layer's Grad-CAM resized to the input by (tri)linear interpolation."""
    build, make = KINDS[kind]
    model, x = build("nonlinear"), make()
    with front.GradCAM(model=model, target_layers=[model[3]]) as cam:
        grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in CLASSES])
    raw = resize(gradient_reference(model, 3, x, gradcam_weights), INPUT_SHAPE[kind])
    flat = raw.flatten(1)
    expected = (flat - flat.min(1, keepdim=True).values) / (
        flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values
    )
    assert abs(grayscale - expected.view_as(raw).numpy()).max() < 1e-6


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_automatic_layer(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """target_layer=None picks the last layer with a spatial output: the last ReLU (layer "3")."""
    build, make = KINDS[kind]
    model, x = build("linear"), make()
    caplog.set_level(logging.INFO, logger="camkit")  # other tests may have raised the logger's level
    with CAMExtractor(model, None, input_shape=tuple(x.shape[1:]), method="gradcam") as extractor:
        assert extractor.target_names == ["3"]
        cams = extractor(CLASSES, model(x), normalized=False)
    assert_rel(cams[0], gradient_reference(model, 3, x, gradcam_weights))
    assert "no target_layer given: using '3'" in caplog.text


def test_video_layer_without_time() -> None:
    """A layer whose time axis is pooled to 1 frame still counts as spatial (its H x W vary)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(1, 2, (4, 3, 3), padding=(0, 1, 1)), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2, 2)
    ).to(DTYPE)
    with CAMExtractor(model, None, input_shape=(1, 4, 6, 6), method="gradcam") as extractor:
        assert extractor.target_names == ["1"]
        cams = extractor(0, model(torch.rand(1, 1, 4, 6, 6, dtype=DTYPE)))
    assert cams[0].shape == (1, 1, 6, 6)


def test_explain_signal_batch() -> None:
    model, x = signal_model("linear"), signal_input()
    result = camkit.explain(model, x, method="gradcam", topk=1)
    assert result.maps["gradcam"].shape == (2, 1, 16)


def test_explain_video_batch() -> None:
    model, x = video_model("linear"), video_input()
    result = camkit.explain(model, x, method=["gradcam", "layercam"], class_idx=CLASSES, target_layer="3")
    assert result.maps["gradcam"].shape == (2, 1, 4, 8, 8)
    raw = resize(gradient_reference(model, 3, x, gradcam_weights), INPUT_SHAPE["video"])
    torch.testing.assert_close(result.maps["gradcam"][:, 0], ops.normalize(raw), rtol=1e-9, atol=1e-9)


def test_registry_is_covered() -> None:
    """Every method above is a registry method (the lists do not drift)."""
    for name in (*GRADIENT_WEIGHTS, "scorecam", "ablationcam", "cam"):
        assert get_method(name).name == name
