"""camkit's maps against independent float64 re-derivations of each method's documented formula.

The references below are written from the documented formulas only (the TorchCAM seed reference
and camkit's class docstrings), in the most literal way: one sample at a time, channel weights in
plain Python floats, gradients by ``torch.autograd.grad`` on a fresh forward of the model split at
the target layer. Every comparison is float64 with a relative error of at most 1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camkit.methods import CAM, ISCAM, SSCAM, GradCAM, GradCAMpp, LayerCAM, ScoreCAM, SmoothGradCAMpp, XGradCAM

RTOL = 1e-6
DTYPE = torch.float64
CLASSES = [0, 2]  # one class per sample of the batch of two

Weights = list[Any]  # one float (or one spatial tensor, for LayerCAM) per channel


# --------------------------------------------------------------------------------------------------
# Tiny float64 models (nn.Sequential, so a target layer "i" is model[i] and the model splits there)
# --------------------------------------------------------------------------------------------------
def linear_head_model() -> nn.Sequential:
    """Conv -> ReLU -> Conv -> ReLU -> GAP -> one Linear (the CAM setting)."""
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.ReLU(),
            nn.Conv2d(4, 5, 3),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(5, 3),
        )
        .double()
        .eval()
    )


def nonlinear_model(dims: int = 2, dead_channel: bool = False, dropout: bool = False) -> nn.Sequential:
    """Conv -> ReLU -> Conv -> ReLU -> 2x2 pool -> Linear -> Tanh -> Linear: gradients vary in space.

    With ``dead_channel`` the second conv's channel 0 is pushed far below zero, so after the ReLU
    (layer "3") it is identically 0: a zero-sum channel (XGrad-CAM), a flat mask (Score-CAM) and a
    zero gradient (Grad-CAM++ alpha) at layer "2". With ``dropout`` a Dropout(0.5) precedes the
    head (same weights), which only matters in training mode.
    """
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
    in_channels = 3 if dims == 2 else 2
    torch.manual_seed(5 if dims == 2 else 3)
    model = nn.Sequential(
        conv(in_channels, 4, 3),
        nn.ReLU(),
        conv(4, 5, 3),
        nn.ReLU(),
        pool(2),
        nn.Flatten(),
        *([nn.Dropout(0.5)] if dropout else []),
        nn.Linear(5 * 2**dims, 6),
        nn.Tanh(),
        nn.Linear(6, 3),
    )
    if dead_channel:
        with torch.no_grad():
            model[2].bias[0] = -100.0
    return model.double().eval()


def make_input(dims: int = 2) -> Tensor:
    generator = torch.Generator().manual_seed(7)
    shape = (2, 3, 8, 8) if dims == 2 else (2, 2, 7, 7, 7)
    return torch.rand(shape, generator=generator, dtype=DTYPE)


# --------------------------------------------------------------------------------------------------
# Reference helpers
# --------------------------------------------------------------------------------------------------
def activation(model: nn.Sequential, layer: int, x: Tensor) -> Tensor:
    """Activation ``A`` of ``model[layer]`` for one input ``x`` of shape (1, ...), as (K, *S)."""
    with torch.no_grad():
        return model[: layer + 1](x)[0]


def class_score(model: nn.Module, x: Tensor, c: int) -> float:
    """``Y^(c)(x)`` for one input ``x`` of shape (1, ...)."""
    with torch.no_grad():
        return float(model(x)[0, c])


def activation_and_gradient(model: nn.Sequential, layer: int, x: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """``A`` and ``g = dY^(c)/dA`` at ``model[layer]`` for one input of shape (1, ...), each (K, *S)."""
    a = model[: layer + 1](x).detach().requires_grad_(True)
    y = model[layer + 1 :](a)[0, c]
    (g,) = torch.autograd.grad(y, a)
    return a.detach()[0], g[0]


def values(t: Tensor) -> list[float]:
    """All entries of a tensor as Python floats."""
    return [float(v) for v in t.flatten().tolist()]


def relu_weighted_sum(weights: Weights, a: Tensor) -> Tensor:
    """``ReLU(sum_k w_k A_k)`` with scalar or spatial ``w_k``."""
    cam = torch.zeros(a.shape[1:], dtype=DTYPE)
    for k in range(a.shape[0]):
        cam = cam + weights[k] * a[k]
    return torch.relu(cam)


def normalize(cams: Tensor) -> Tensor:
    """Per-sample min-max to [0, 1]; a flat map becomes all zeros."""
    out = torch.zeros_like(cams)
    for n in range(cams.shape[0]):
        lo, hi = cams[n].min(), cams[n].max()
        if hi > lo:
            out[n] = (cams[n] - lo) / (hi - lo)
    return out


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def assert_close_to_reference(got: Tensor, ref: Tensor) -> None:
    assert got.dtype == DTYPE
    assert got.shape == ref.shape
    scale = float(ref.abs().max())
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=RTOL * max(scale, 1e-12) * 1e-3)
    assert float((got - ref).abs().max()) <= RTOL * scale


def assert_informative(ref: Tensor) -> None:
    """Every sample's reference map has a positive max, so the comparison proves something."""
    for n in range(ref.shape[0]):
        assert float(ref[n].max()) > 0, f"reference map of sample {n} is all zero: pick another case"


# --------------------------------------------------------------------------------------------------
# Reference channel weights, one sample at a time (a, g: (K, *S))
# --------------------------------------------------------------------------------------------------
def gradcam_weights(a: Tensor, g: Tensor) -> Weights:
    """w_k = 1/(H W) sum_ij g_k(i, j)."""
    weights = []
    for k in range(a.shape[0]):
        gk = values(g[k])
        weights.append(sum(gk) / len(gk))
    return weights


def gradcampp_alpha_weight(d1: list[float], d2: list[float], d3: list[float], a_sum: float) -> float:
    """w = sum_ij alpha(i, j) ReLU(D1(i, j)) with alpha = D2 / (2 D2 + sum_ab A(a, b) D3).

    alpha is 0 where D2 or the denominator is 0.
    """
    w = 0.0
    for p1, p2, p3 in zip(d1, d2, d3, strict=True):
        denominator = 2 * p2 + a_sum * p3
        alpha = p2 / denominator if p2 != 0 and denominator != 0 else 0.0
        w += alpha * max(p1, 0.0)
    return w


def gradcampp_weights(a: Tensor, g: Tensor) -> Weights:
    """Grad-CAM++ with D^(p) = g^p (exponential-output assumption)."""
    weights = []
    for k in range(a.shape[0]):
        gk = values(g[k])
        weights.append(gradcampp_alpha_weight(gk, [v**2 for v in gk], [v**3 for v in gk], sum(values(a[k]))))
    return weights


def xgradcam_weights(a: Tensor, g: Tensor) -> Weights:
    """w_k = sum_ij g_k(i, j) A_k(i, j) / sum_mn A_k(m, n); 0 for a channel that sums to 0."""
    weights = []
    for k in range(a.shape[0]):
        ak, gk = values(a[k]), values(g[k])
        total = sum(ak)
        weights.append(sum(gv * av / total for gv, av in zip(gk, ak, strict=True)) if total != 0 else 0.0)
    return weights


def layercam_weights(a: Tensor, g: Tensor) -> Weights:
    """Spatial weights w_k(x, y) = ReLU(g_k(x, y))."""
    return [torch.relu(g[k]) for k in range(a.shape[0])]


GRADIENT_METHODS: dict[str, tuple[type, Callable[[Tensor, Tensor], Weights]]] = {
    "GradCAM": (GradCAM, gradcam_weights),
    "GradCAMpp": (GradCAMpp, gradcampp_weights),
    "XGradCAM": (XGradCAM, xgradcam_weights),
    "LayerCAM": (LayerCAM, layercam_weights),
}


# --------------------------------------------------------------------------------------------------
# Reference maps, (N, *S)
# --------------------------------------------------------------------------------------------------
def cam_reference(model: nn.Sequential, layer: int, fc: nn.Linear, x: Tensor, classes: list[int]) -> Tensor:
    maps = []
    for n, c in enumerate(classes):
        a = activation(model, layer, x[n : n + 1])
        maps.append(relu_weighted_sum([float(v) for v in fc.weight[c].tolist()], a))
    return torch.stack(maps)


def gradient_reference(
    model: nn.Sequential,
    layer: int,
    x: Tensor,
    classes: list[int],
    weight_fn: Callable[[Tensor, Tensor], Weights],
) -> Tensor:
    maps = []
    for n, c in enumerate(classes):
        a, g = activation_and_gradient(model, layer, x[n : n + 1], c)
        maps.append(relu_weighted_sum(weight_fn(a, g), a))
    return torch.stack(maps)


def smoothgradcampp_reference(
    model: nn.Sequential,
    layer: int,
    x: Tensor,
    classes: list[int],
    num_samples: int,
    std: float,
    seed: int,
    batch_size: int = 32,
) -> Tensor:
    """D^(p) = mean over noisy copies x + std * noise of g^p; A (in sum_ab A) is the clean activation.

    Noise draw order (documented for camkit): rows are the samples repeated ``num_samples`` times,
    row r belonging to sample r % N, drawn in chunks of max(1, batch_size // N) * N rows.
    """
    batch = x.shape[0]
    generator = torch.Generator().manual_seed(seed)
    rows = num_samples * batch
    chunk = max(1, batch_size // batch) * batch
    noise: list[Tensor] = []
    for start in range(0, rows, chunk):
        draw = torch.randn((min(chunk, rows - start), *x.shape[1:]), generator=generator, dtype=DTYPE)
        noise.extend(draw.unbind(0))
    maps = []
    for n, c in enumerate(classes):
        a = activation(model, layer, x[n : n + 1])
        grads = []
        for m in range(num_samples):
            noisy = x[n] + std * noise[m * batch + n]
            grads.append(activation_and_gradient(model, layer, noisy[None], c)[1])
        weights = []
        for k in range(a.shape[0]):
            per_copy = [values(g[k]) for g in grads]
            positions = range(len(per_copy[0]))
            d1 = [sum(gm[p] for gm in per_copy) / num_samples for p in positions]
            d2 = [sum(gm[p] ** 2 for gm in per_copy) / num_samples for p in positions]
            d3 = [sum(gm[p] ** 3 for gm in per_copy) / num_samples for p in positions]
            weights.append(gradcampp_alpha_weight(d1, d2, d3, sum(values(a[k]))))
        maps.append(relu_weighted_sum(weights, a))
    return torch.stack(maps)


def upsampled_channel_masks(a: Tensor, size: Sequence[int]) -> list[Tensor]:
    """M_k = U((A_k - min A_k) / (max A_k - min A_k)), a flat channel giving a zero mask."""
    mode = {2: "bilinear", 3: "trilinear"}[a.ndim - 1]
    masks = []
    for k in range(a.shape[0]):
        lo, hi = a[k].min(), a[k].max()
        m = (a[k] - lo) / (hi - lo) if hi > lo else torch.zeros_like(a[k])
        masks.append(F.interpolate(m[None, None], size=tuple(size), mode=mode, align_corners=False)[0, 0])
    return masks


def score_reference(
    model: nn.Sequential,
    layer: int,
    x: Tensor,
    classes: list[int],
    masked_inputs: Callable[[int, int, Tensor, Tensor], list[Tensor]],
) -> Tensor:
    """ReLU(sum_k w_k A_k), w = softmax_k(mean over the inputs of channel k of Y_c(input) - Y_c(X)).

    ``masked_inputs(n, k, M_k, X_n)`` returns the perturbed inputs (each (C, *spatial)) of channel k.
    """
    maps = []
    for n, c in enumerate(classes):
        xn = x[n : n + 1]
        a = activation(model, layer, xn)
        base = class_score(model, xn, c)
        masks = upsampled_channel_masks(a, x.shape[2:])
        diffs = []
        for k, mask in enumerate(masks):
            inputs = masked_inputs(n, k, mask, x[n])
            diffs.append(sum(class_score(model, inp[None], c) - base for inp in inputs) / len(inputs))
        maps.append(relu_weighted_sum(softmax(diffs), a))
    return torch.stack(maps)


def scorecam_reference(model: nn.Sequential, layer: int, x: Tensor, classes: list[int]) -> Tensor:
    return score_reference(model, layer, x, classes, lambda n, k, mask, xn: [mask * xn])


def iscam_reference(model: nn.Sequential, layer: int, x: Tensor, classes: list[int], num_samples: int) -> Tensor:
    """Sample i = 1..N uses the mask strength c_i = sum_{j=0}^{i-1} j / N."""
    strengths = [sum(j / num_samples for j in range(i)) for i in range(1, num_samples + 1)]
    return score_reference(model, layer, x, classes, lambda n, k, mask, xn: [s * mask * xn for s in strengths])


def sscam_reference(
    model: nn.Sequential,
    layer: int,
    x: Tensor,
    classes: list[int],
    num_samples: int,
    std: float,
    seed: int,
    batch_size: int,
) -> Tensor:
    """Sample i uses (M_k + std * noise) * X, noise per input pixel (shared by the input channels).

    Noise draw order (documented for camkit): for each sample i, the rows (n-major, then channel k)
    in chunks of ``batch_size``, one ``randn((rows_in_chunk, 1, *spatial))`` per chunk.
    """
    num_channels = activation(model, layer, x[:1]).shape[0]
    generator = torch.Generator().manual_seed(seed)
    rows = [(n, k) for n in range(x.shape[0]) for k in range(num_channels)]
    noise: dict[tuple[int, int, int], Tensor] = {}
    for i in range(num_samples):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            draw = torch.randn((len(chunk), 1, *x.shape[2:]), generator=generator, dtype=DTYPE)
            for j, (n, k) in enumerate(chunk):
                noise[i, n, k] = draw[j, 0]

    def noisy_inputs(n: int, k: int, mask: Tensor, xn: Tensor) -> list[Tensor]:
        return [(mask + std * noise[i, n, k]) * xn for i in range(num_samples)]

    return score_reference(model, layer, x, classes, noisy_inputs)


# --------------------------------------------------------------------------------------------------
# Running camkit
# --------------------------------------------------------------------------------------------------
def run_camkit(
    cls: type,
    model: nn.Module,
    target_layer: Any,
    x: Tensor,
    class_idx: int | Sequence[int],
    normalized: bool,
    with_scores: bool,
    **kwargs: Any,
) -> list[Tensor]:
    with cls(model, target_layer=target_layer, **kwargs) as extractor:
        scores = model(x)
        return extractor(class_idx, scores if with_scores else None, normalized=normalized)


def check(cams: list[Tensor], ref: Tensor, normalized: bool) -> None:
    assert isinstance(cams, list)
    assert len(cams) == 1
    assert_informative(ref)
    assert_close_to_reference(cams[0], normalize(ref) if normalized else ref)


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("fc_layer", ["auto", "name", "module"])
def test_cam(fc_layer: str, normalized: bool) -> None:
    model, x = linear_head_model(), make_input()
    fc = {"auto": None, "name": "6", "module": model[6]}[fc_layer]
    cams = run_camkit(CAM, model, "3", x, CLASSES, normalized, with_scores=False, fc_layer=fc)
    check(cams, cam_reference(model, 3, model[6], x, CLASSES), normalized)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("dead_channel", [False, True])
@pytest.mark.parametrize("layer", ["2", "3"])
@pytest.mark.parametrize("method", list(GRADIENT_METHODS))
def test_gradient_method(method: str, layer: str, dead_channel: bool, normalized: bool) -> None:
    cls, weight_fn = GRADIENT_METHODS[method]
    model, x = nonlinear_model(dead_channel=dead_channel), make_input()
    cams = run_camkit(cls, model, layer, x, CLASSES, normalized, with_scores=True)
    check(cams, gradient_reference(model, int(layer), x, CLASSES, weight_fn), normalized)


@pytest.mark.parametrize("method", list(GRADIENT_METHODS))
def test_gradient_method_single_class_for_batch(method: str) -> None:
    cls, weight_fn = GRADIENT_METHODS[method]
    model, x = nonlinear_model(), make_input()
    cams = run_camkit(cls, model, "2", x, 1, False, with_scores=True)
    check(cams, gradient_reference(model, 2, x, [1, 1], weight_fn), False)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("method", list(GRADIENT_METHODS))
def test_gradient_method_two_layers(method: str, normalized: bool) -> None:
    cls, weight_fn = GRADIENT_METHODS[method]
    model, x = nonlinear_model(), make_input()
    cams = run_camkit(cls, model, [model[1], "2"], x, CLASSES, normalized, with_scores=True)
    assert len(cams) == 2
    for cam, layer in zip(cams, [1, 2], strict=True):
        ref = gradient_reference(model, layer, x, CLASSES, weight_fn)
        assert_informative(ref)
        assert_close_to_reference(cam, normalize(ref) if normalized else ref)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize(
    ("num_samples", "std", "seed", "batch_size"),
    [(4, 0.3, 0, 32), (3, 0.5, 5, 2), (5, 0.2, 11, 3)],
)
def test_smoothgradcampp(num_samples: int, std: float, seed: int, batch_size: int, normalized: bool) -> None:
    model, x = nonlinear_model(), make_input()
    generator = torch.Generator().manual_seed(seed)
    cams = run_camkit(
        SmoothGradCAMpp,
        model,
        "2",
        x,
        CLASSES,
        normalized,
        with_scores=False,
        num_samples=num_samples,
        std=std,
        generator=generator,
        batch_size=batch_size,
    )
    ref = smoothgradcampp_reference(model, 2, x, CLASSES, num_samples, std, seed, batch_size)
    check(cams, ref, normalized)


def test_smoothgradcampp_single_sample_noise() -> None:
    """For one sample the noise is a single randn((num_samples, *x.shape[1:])) draw."""
    model, x = nonlinear_model(), make_input()[:1]
    cams = run_camkit(
        SmoothGradCAMpp,
        model,
        "2",
        x,
        2,
        False,
        with_scores=False,
        num_samples=4,
        std=0.3,
        generator=torch.Generator().manual_seed(3),
    )
    noise = torch.randn((4, *x.shape[1:]), generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    a = activation(model, 2, x)
    grads = [activation_and_gradient(model, 2, (x[0] + 0.3 * noise[m])[None], 2)[1] for m in range(4)]
    d = [torch.stack([g**p for g in grads]).mean(0) for p in (1, 2, 3)]
    weights = [
        gradcampp_alpha_weight(values(d[0][k]), values(d[1][k]), values(d[2][k]), sum(values(a[k])))
        for k in range(a.shape[0])
    ]
    check(cams, relu_weighted_sum(weights, a)[None], False)


@pytest.mark.parametrize("normalized", [False, True])
def test_smoothgradcampp_without_noise_is_gradcampp(normalized: bool) -> None:
    model, x = nonlinear_model(), make_input()
    cams = run_camkit(
        SmoothGradCAMpp,
        model,
        "2",
        x,
        CLASSES,
        normalized,
        with_scores=False,
        num_samples=3,
        std=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    check(cams, gradient_reference(model, 2, x, CLASSES, gradcampp_weights), normalized)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize(
    ("layer", "dead_channel", "batch_size"),
    # the dead channel (about -100 at layer "2") would make every layer-"2" map negative, i.e. zero
    [("2", False, 32), ("3", False, 3), ("3", True, 32), ("3", True, 4)],
)
def test_scorecam(layer: str, dead_channel: bool, batch_size: int, normalized: bool) -> None:
    model, x = nonlinear_model(dead_channel=dead_channel), make_input()
    cams = run_camkit(ScoreCAM, model, layer, x, CLASSES, normalized, with_scores=False, batch_size=batch_size)
    check(cams, scorecam_reference(model, int(layer), x, CLASSES), normalized)


def test_scorecam_two_layers() -> None:
    model, x = nonlinear_model(), make_input()
    cams = run_camkit(ScoreCAM, model, ["1", "3"], x, CLASSES, False, with_scores=False)
    assert len(cams) == 2
    for cam, layer in zip(cams, [1, 3], strict=True):
        ref = scorecam_reference(model, layer, x, CLASSES)
        assert_informative(ref)
        assert_close_to_reference(cam, ref)


@pytest.mark.parametrize("normalized", [False, True])
def test_sscam_without_noise_is_scorecam(normalized: bool) -> None:
    model, x = nonlinear_model(), make_input()
    cams = run_camkit(
        SSCAM,
        model,
        "2",
        x,
        CLASSES,
        normalized,
        with_scores=False,
        batch_size=4,
        num_samples=3,
        std=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    check(cams, scorecam_reference(model, 2, x, CLASSES), normalized)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize(("num_samples", "std", "seed", "batch_size"), [(3, 0.5, 0, 32), (2, 1.0, 4, 3)])
def test_sscam_seeded(num_samples: int, std: float, seed: int, batch_size: int, normalized: bool) -> None:
    model, x = nonlinear_model(), make_input()
    cams = run_camkit(
        SSCAM,
        model,
        "2",
        x,
        CLASSES,
        normalized,
        with_scores=False,
        batch_size=batch_size,
        num_samples=num_samples,
        std=std,
        generator=torch.Generator().manual_seed(seed),
    )
    ref = sscam_reference(model, 2, x, CLASSES, num_samples, std, seed, batch_size)
    check(cams, ref, normalized)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize(("num_samples", "batch_size"), [(1, 32), (4, 32), (6, 5)])
def test_iscam(num_samples: int, batch_size: int, normalized: bool) -> None:
    model, x = nonlinear_model(), make_input()
    cams = run_camkit(
        ISCAM, model, "2", x, CLASSES, normalized, with_scores=False, batch_size=batch_size, num_samples=num_samples
    )
    check(cams, iscam_reference(model, 2, x, CLASSES, num_samples), normalized)


@pytest.mark.parametrize("method", ["ScoreCAM", "SSCAM", "ISCAM", "SmoothGradCAMpp"])
def test_model_rerun_in_eval_mode(method: str) -> None:
    """Methods that re-run the model do it in eval mode (Dropout off) and leave the mode as it was."""
    model, x = nonlinear_model(dropout=True).train(), make_input()
    cls, options = {
        "ScoreCAM": (ScoreCAM, {}),
        "SSCAM": (SSCAM, {"num_samples": 2, "std": 0.0}),
        "ISCAM": (ISCAM, {"num_samples": 3}),
        "SmoothGradCAMpp": (SmoothGradCAMpp, {"num_samples": 2, "std": 0.0}),
    }[method]
    cams = run_camkit(cls, model, "3", x, CLASSES, False, with_scores=False, **options)
    assert model.training
    model.eval()
    ref = {
        "ScoreCAM": lambda: scorecam_reference(model, 3, x, CLASSES),
        "SSCAM": lambda: scorecam_reference(model, 3, x, CLASSES),
        "ISCAM": lambda: iscam_reference(model, 3, x, CLASSES, 3),
        "SmoothGradCAMpp": lambda: gradient_reference(model, 3, x, CLASSES, gradcampp_weights),
    }[method]()
    check(cams, ref, False)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("layer", ["2", "3"])
def test_gradcam_3d(layer: str, normalized: bool) -> None:
    model, x = nonlinear_model(dims=3), make_input(dims=3)
    cams = run_camkit(GradCAM, model, layer, x, CLASSES, normalized, with_scores=True)
    assert cams[0].shape == (2, 3, 3, 3)
    check(cams, gradient_reference(model, int(layer), x, CLASSES, gradcam_weights), normalized)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("layer", ["2", "3"])
def test_scorecam_3d(layer: str, normalized: bool) -> None:
    model, x = nonlinear_model(dims=3), make_input(dims=3)
    cams = run_camkit(ScoreCAM, model, layer, x, CLASSES, normalized, with_scores=False)
    assert cams[0].shape == (2, 3, 3, 3)
    check(cams, scorecam_reference(model, int(layer), x, CLASSES), normalized)


@pytest.mark.parametrize("method", ["CAM", "GradCAM"])
def test_flat_map_normalizes_to_zeros(method: str) -> None:
    """A map that is zero everywhere (zeroed head) stays all zeros after normalization, not NaN."""
    model, x = linear_head_model(), make_input()
    with torch.no_grad():
        model[6].weight.zero_()
    cls = {"CAM": CAM, "GradCAM": GradCAM}[method]
    raw = run_camkit(cls, model, "3", x, CLASSES, False, with_scores=method == "GradCAM")[0]
    normed = run_camkit(cls, model, "3", x, CLASSES, True, with_scores=method == "GradCAM")[0]
    ref = cam_reference(model, 3, model[6], x, CLASSES)
    assert float(ref.abs().max()) == 0
    assert torch.equal(raw, torch.zeros_like(ref))
    assert torch.equal(normed, normalize(ref))
