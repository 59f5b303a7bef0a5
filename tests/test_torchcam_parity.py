"""Differential tests of camkit's TorchCAM-style API against TorchCAM 0.5.0 (the peer).

Both libraries explain the same torchvision model (``resnet18`` or ``mobilenet_v2``, random
weights, eval mode, float32), the same target layer(s), the same per-sample classes and the same
input; the maps must agree within 1e-5 (relative to the map's maximum).

Where TorchCAM's code departs from the formula it documents (see ``PEERS.md`` and the docstrings
of :mod:`camkit.methods.extractors`), camkit follows the formula and the test says so: it checks
camkit against the formula written out here, checks that TorchCAM's result is the formula with its
deviation, and where possible compares the two on a case in which the deviation has no effect.

Random init: the weights are torchvision's random init, but the BatchNorm running statistics are
calibrated on one random batch (train-mode forward, cumulative average). With the default running
statistics (mean 0, var 1) mobilenet_v2's activations shrink to ~1e-8 in eval mode, and the maps
(~1e-9) would be dominated by TorchCAM's ``eps=1e-8`` in its normalization.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import camkit.methods as ck

# The deviations asserted below are those of TorchCAM 0.5 (a later release may fix them).
pytest.importorskip("torchcam", minversion="0.5")
tc = pytest.importorskip("torchcam.methods")
tv_models = pytest.importorskip("torchvision.models")

ClassIdx = int | list[int]
Layer = str | list[str]

# A noise level so small that ``x + std * z == x`` bit for bit at the magnitudes used here: TorchCAM's
# ``Normal(0, std)`` rejects ``std=0``, so this is how TorchCAM is run "without noise".
TINY_STD = 1e-30

# (model, layer(s), input size, classes): classes chosen so that every pre-ReLU map has a positive
# maximum and a negative minimum for each image (so ReLU and normalization both matter).
RESNET_L4 = ("resnet18", "layer4", 96, [3, 4])
RESNET_L3 = ("resnet18", "layer3", 96, [3, 4])
RESNET_L34 = ("resnet18", ["layer3", "layer4"], 96, [3, 4])
RESNET_L4_INT = ("resnet18", "layer4", 96, 3)
MOBILE_LAST = ("mobilenet_v2", "features", 96, [2, 5])
MOBILE_MID = ("mobilenet_v2", "features.13", 96, [2, 5])

# Layers whose output goes straight into global average pooling: there dY/dA is the same at every
# position of a channel (fc weight / HW), which makes some of TorchCAM's deviations vanish.
UNIFORM_GRADIENT_CASES = [RESNET_L4, MOBILE_LAST]
# RESNET_L34 also covers layer3 alone (its first map), where the gradient is not uniform.
GRADIENT_CASES = [RESNET_L4, RESNET_L4_INT, RESNET_L34, MOBILE_LAST, MOBILE_MID]


def _case_id(case: tuple[Any, ...]) -> str:
    model, layer, size, classes = case
    layer_id = "+".join(layer) if isinstance(layer, list) else layer
    cls_id = "-".join(map(str, classes)) if isinstance(classes, list) else str(classes)
    return f"{model}-{layer_id}-{size}px-c{cls_id}"


# models and inputs ---------------------------------------------------------------------------
@functools.cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = getattr(tv_models, name)(weights=None)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(123)))
    return model.eval()


def _input(size: int, n: int = 2, seed: int = 0) -> Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _batch(classes: ClassIdx) -> int:
    return len(classes) if isinstance(classes, list) else 2


def _layers(layer: Layer) -> list[str]:
    return layer if isinstance(layer, list) else [layer]


def _select(scores: Tensor, classes: ClassIdx) -> Tensor:
    """Per-sample target scores ``Y^(c_n)`` of a batch."""
    idx = torch.tensor(classes if isinstance(classes, list) else [classes] * scores.shape[0])
    return scores.gather(1, idx.view(-1, 1)).squeeze(1)


def _forward_with_grads(model: nn.Module, layer: Layer, x: Tensor, classes: ClassIdx) -> tuple[list, list]:
    """Activations A and gradients dY/dA of the target layers, from our own hooks and autograd."""
    modules = dict(model.named_modules())
    outputs: dict[str, Tensor] = {}
    handles = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
        for name in _layers(layer)
    ]
    try:
        scores = model(x)
    finally:
        for handle in handles:
            handle.remove()
    acts = [outputs[name] for name in _layers(layer)]
    grads = torch.autograd.grad(_select(scores, classes).sum(), acts)
    return [a.detach() for a in acts], [g.detach() for g in grads]


# reference formulas ----------------------------------------------------------------------------
def _normalize(cam: Tensor) -> Tensor:
    """Exact per-sample min-max normalization (the documented one, no eps)."""
    flat = cam.flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    assert (high > low).all(), "flat map: the comparison would be trivial"
    return ((flat - low) / (high - low)).view_as(cam)


def _combine(weights: Tensor, act: Tensor, normalized: bool) -> Tensor:
    """ReLU(sum_k w_k A_k), optionally normalized."""
    w = weights.reshape(*weights.shape, *([1] * (act.ndim - weights.ndim)))
    cam = torch.relu((w * act).sum(1))
    return _normalize(cam) if normalized else cam


def _gradcampp_weights(act: Tensor, g1: Tensor, g2: Tensor, g3: Tensor) -> Tensor:
    """Documented Grad-CAM++ weights: sum_ij alpha_ij ReLU(g1_ij), alpha = g2 / (2 g2 + (sum_ab A_ab) g3)."""
    total = act.flatten(2).sum(-1)[..., None, None]
    denom = 2 * g2 + total * g3
    ok = (g2 > 0) & (denom != 0)
    alpha = torch.where(ok, g2 / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(g2))
    return (alpha * torch.relu(g1)).flatten(2).sum(-1)


def _score_gains(model: nn.Module, layer: str, x: Tensor, classes: ClassIdx, coeff: float) -> Tensor:
    """Score-CAM-family gains ``Y(coeff * M_k * X) - Y(X)``, shape (N, C), written out from the formula.

    ``M_k`` is channel k's activation min-max normalized over its positions (0 for a flat channel),
    upsampled (bilinear) to the input size.
    """
    (act,), _ = _forward_with_grads(model, layer, x, classes)
    n, c = act.shape[:2]
    flat = act.flatten(2)
    low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    masks = torch.where(high > low, (flat - low) / (high - low).clamp_min(1e-30), 0.0)
    masks = F.interpolate(masks.view(n * c, 1, *act.shape[2:]), x.shape[2:], mode="bilinear", align_corners=False)
    rows = torch.arange(n).repeat_interleave(c)
    row_classes = classes if isinstance(classes, int) else [classes[r] for r in rows.tolist()]
    with torch.no_grad():
        baseline = _select(model(x), classes)
        return (_select(model(coeff * masks * x[rows]), row_classes) - baseline[rows]).view(n, c)


def _score_map(act: Tensor, gains: Sequence[Tensor]) -> Tensor:
    """Raw Score-CAM-family map: ReLU(sum_k softmax_k(mean_i gains_i) A_k)."""
    weights = torch.softmax(torch.stack(list(gains)).mean(0), dim=1)
    return _combine(weights, act, normalized=False)


# running both libraries ------------------------------------------------------------------------
def _torchcam_maps(
    cls: type,
    model: nn.Module,
    layer: Layer,
    x: Tensor,
    classes: ClassIdx,
    normalized: bool,
    *,
    ctor: dict[str, Any] | None = None,
    call: dict[str, Any] | None = None,
) -> list[Tensor]:
    with cls(model, layer, **(ctor or {})) as extractor:
        scores = model(x)
        maps = extractor(classes, scores, normalized=normalized, **(call or {}))
    return [m.detach().clone() for m in maps]


def _camkit_maps(
    cls: type, model: nn.Module, layer: Layer, x: Tensor, classes: ClassIdx, normalized: bool, **ctor: Any
) -> list[Tensor]:
    with cls(model, layer, **ctor) as extractor:
        scores = model(x)
        maps = extractor(classes, scores if extractor.spec.needs_scores else None, normalized=normalized)
    return [m.detach().clone() for m in maps]


def assert_maps_close(actual: Tensor, expected: Tensor, tol: float = 1e-5) -> None:
    """Equal within ``tol`` relative to each map's maximum (so ``tol`` absolute for normalized maps)."""
    assert actual.shape == expected.shape
    scale = expected.flatten(1).abs().amax(1).view(-1, *([1] * (expected.ndim - 1)))
    assert (scale > 0).all(), "an all-zero map: the comparison would be trivial"
    torch.testing.assert_close(actual / scale, expected / scale, rtol=tol, atol=tol)


def _assert_differs(actual: Tensor, other: Tensor, at_least: float = 1e-3) -> None:
    rel = float(((actual - other).abs().flatten(1).amax(1) / other.flatten(1).abs().amax(1)).max())
    assert rel > at_least, f"expected a visible difference, got relative {rel:.3g}"


@pytest.mark.parametrize("case", [RESNET_L4, RESNET_L34, MOBILE_LAST, MOBILE_MID], ids=_case_id)
def test_cases_are_non_trivial(case: tuple[Any, ...]) -> None:
    """Each image's pre-ReLU Grad-CAM map has both signs, so ReLU and normalization are exercised."""
    model_name, layer, size, classes = case
    acts, grads = _forward_with_grads(_model(model_name), layer, _input(size, _batch(classes)), classes)
    for a, g in zip(acts, grads, strict=True):
        pre_relu = (g.mean((2, 3), keepdim=True) * a).sum(1).flatten(1)
        assert (pre_relu.amax(1) > 0).all()
        assert (pre_relu.amin(1) < 0).all()


# CAM ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize(
    ("model_name", "layer", "fc", "classes"),
    [
        ("resnet18", "layer4", "fc", [3, 4]),
        ("resnet18", "layer4", "fc", 3),
        ("mobilenet_v2", "features", "classifier.1", [2, 5]),
    ],
    ids=["resnet18-layer4-c3-4", "resnet18-layer4-c3", "mobilenet_v2-features-c2-5"],
)
def test_cam_is_relu_of_torchcam(model_name: str, layer: str, fc: str, classes: ClassIdx, normalized: bool) -> None:
    """TorchCAM's CAM applies no ReLU although its documented formula has one; camkit applies it.

    So camkit's raw map is ReLU(TorchCAM's raw map) and camkit's normalized map is the min-max
    normalization of that.
    """
    model, x = _model(model_name), _input(96)
    (raw_tc,) = _torchcam_maps(tc.CAM, model, layer, x, classes, False, ctor={"fc_layer": fc})
    assert (raw_tc.flatten(1).amin(1) < 0).all(), "ReLU must matter in this case"
    (ours,) = _camkit_maps(ck.CAM, model, layer, x, classes, normalized, fc_layer=fc)
    expected = torch.relu(raw_tc)
    assert_maps_close(ours, _normalize(expected) if normalized else expected)


# Grad-CAM, XGrad-CAM, LayerCAM: same formula in both libraries -----------------------------------
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("case", GRADIENT_CASES, ids=_case_id)
@pytest.mark.parametrize("method", ["GradCAM", "XGradCAM", "LayerCAM"])
def test_gradient_methods_match_torchcam(method: str, case: tuple[Any, ...], normalized: bool) -> None:
    model_name, layer, size, classes = case
    model, x = _model(model_name), _input(size, _batch(classes))
    theirs = _torchcam_maps(getattr(tc, method), model, layer, x, classes, normalized)
    ours = _camkit_maps(getattr(ck, method), model, layer, x, classes, normalized)
    assert len(ours) == len(theirs) == len(_layers(layer))
    for mine, ref in zip(ours, theirs, strict=True):
        assert_maps_close(mine, ref)


@pytest.mark.parametrize("normalized", [False, True])
def test_layercam_fuse_cams_matches_torchcam(normalized: bool) -> None:
    """Two layers of different resolution, fused with tanh(2 L) scaling and element-wise max."""
    model_name, layer, size, classes = RESNET_L34
    model, x = _model(model_name), _input(size)
    theirs = _torchcam_maps(tc.LayerCAM, model, layer, x, classes, normalized)
    ours = _camkit_maps(ck.LayerCAM, model, layer, x, classes, normalized)
    fused_tc = tc.LayerCAM.fuse_cams(theirs)
    fused_ck = ck.LayerCAM.fuse_cams(ours)
    assert fused_ck.shape == fused_tc.shape == (2, 6, 6)
    assert_maps_close(fused_ck, fused_tc)


# Grad-CAM++: camkit applies the documented alpha, TorchCAM does not ---------------------------------
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("case", [RESNET_L4, RESNET_L34, MOBILE_LAST, MOBILE_MID], ids=_case_id)
def test_gradcampp_follows_documented_formula(case: tuple[Any, ...], normalized: bool) -> None:
    """TorchCAM 0.5's GradCAMpp never applies the alpha denominator (PEERS.md), so camkit is checked
    against the documented formula, computed here from gradients taken with torch.autograd.grad:
    alpha = g^2 / (2 g^2 + sum_ab A_ab g^3), w = sum_ij alpha ReLU(g), map = ReLU(sum_k w_k A_k).
    """
    model_name, layer, size, classes = case
    model, x = _model(model_name), _input(size, _batch(classes))
    acts, grads = _forward_with_grads(model, layer, x, classes)
    ours = _camkit_maps(ck.GradCAMpp, model, layer, x, classes, normalized)
    for mine, a, g in zip(ours, acts, grads, strict=True):
        expected = _combine(_gradcampp_weights(a, g, g**2, g**3), a, normalized)
        assert_maps_close(mine, expected)


@pytest.mark.parametrize("case", [RESNET_L4, RESNET_L3, MOBILE_LAST, MOBILE_MID], ids=_case_id)
def test_torchcam_gradcampp_skips_alpha_denominator(case: tuple[Any, ...]) -> None:
    """TorchCAM's GradCAMpp weights are sum_ij g^2 ReLU(g) (its in-place division hits a copy), so
    its maps are that formula, and camkit's (documented alpha) visibly differ from them."""
    model_name, layer, size, classes = case
    model, x = _model(model_name), _input(size, _batch(classes))
    (a,), (g,) = _forward_with_grads(model, layer, x, classes)
    (theirs,) = _torchcam_maps(tc.GradCAMpp, model, layer, x, classes, False)
    buggy = _combine((g**2 * torch.relu(g)).flatten(2).sum(-1), a, normalized=False)
    assert_maps_close(theirs, buggy)
    (ours,) = _camkit_maps(ck.GradCAMpp, model, layer, x, classes, True)
    _assert_differs(ours, _normalize(theirs))


# Smooth Grad-CAM++ ------------------------------------------------------------------------------
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("case", UNIFORM_GRADIENT_CASES, ids=_case_id)
def test_smoothgradcampp_without_noise_matches_torchcam(case: tuple[Any, ...], normalized: bool) -> None:
    """Without noise both libraries reduce to the same computation.

    TorchCAM combines the activation of the last noisy forward with ReLU of the last sample's
    gradient, camkit the clean activation with the averaged derivatives (PEERS.md); with std=0
    every noisy copy is the clean input, so these coincide. TorchCAM rejects std=0, so it runs with
    std=1e-30 (below float32 resolution at these input magnitudes: the copies are bit-identical).
    TorchCAM's alpha denominator has ``+ eps`` (1e-8 by default, not in the formula): with
    g ~ 1e-3 here it moves the maps by up to ~1e-2 relative, so its ``eps`` call argument is set
    to 0 to assert 1e-5.

    On layers that feed global pooling the gradient is uniform over positions; there TorchCAM's
    denominator term sum_ab A_ab g_ab^3 equals the documented (sum_ab A_ab) g_ij^3, see
    test_torchcam_smoothgradcampp_denominator_weights_g3_by_position for the other layers.
    """
    model_name, layer, size, classes = case
    model, x = _model(model_name), _input(size, _batch(classes))
    assert torch.equal(x + TINY_STD * torch.randn_like(x), x)
    theirs = _torchcam_maps(
        tc.SmoothGradCAMpp,
        model,
        layer,
        x,
        classes,
        normalized,
        ctor={"num_samples": 2, "std": TINY_STD},
        call={"eps": 0.0},
    )
    ours = _camkit_maps(ck.SmoothGradCAMpp, model, layer, x, classes, normalized, num_samples=2, std=0.0)
    assert_maps_close(ours[0], theirs[0])


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("case", [RESNET_L3, RESNET_L34, MOBILE_MID], ids=_case_id)
def test_smoothgradcampp_without_noise_is_gradcampp(case: tuple[Any, ...], normalized: bool) -> None:
    """Documented relation: with std=0, D^(p) = g^p, so Smooth Grad-CAM++ is Grad-CAM++ (formula above)."""
    model_name, layer, size, classes = case
    model, x = _model(model_name), _input(size, _batch(classes))
    acts, grads = _forward_with_grads(model, layer, x, classes)
    ours = _camkit_maps(ck.SmoothGradCAMpp, model, layer, x, classes, normalized, num_samples=2, std=0.0)
    for mine, a, g in zip(ours, acts, grads, strict=True):
        assert_maps_close(mine, _combine(_gradcampp_weights(a, g, g**2, g**3), a, normalized))


@pytest.mark.parametrize("case", [RESNET_L3, MOBILE_MID], ids=_case_id)
def test_torchcam_smoothgradcampp_denominator_weights_g3_by_position(case: tuple[Any, ...]) -> None:
    """TorchCAM's alpha denominator is 2 D2_ij + sum_ab A_ab D3_ab (one number per channel), not the
    documented 2 D2_ij + (sum_ab A_ab) D3_ij of Grad-CAM++ / Smooth Grad-CAM++ (also what
    pytorch-grad-cam computes). The two agree only where the gradient is uniform over positions.
    Checked here without noise: TorchCAM equals its own formula, and camkit (documented) differs.
    Not listed in PEERS.md when this test was written; pinned to TorchCAM 0.5's code.
    """
    model_name, layer, size, classes = case
    model, x = _model(model_name), _input(size, _batch(classes))
    (a,), (g,) = _forward_with_grads(model, layer, x, classes)
    (theirs,) = _torchcam_maps(
        tc.SmoothGradCAMpp,
        model,
        layer,
        x,
        classes,
        False,
        ctor={"num_samples": 2, "std": TINY_STD},
        call={"eps": 0.0},
    )
    g2, g3 = g**2, g**3
    alpha = g2 / (2 * g2 + (a * g3).flatten(2).sum(-1)[..., None, None])
    torchcam_formula = _combine((alpha * torch.relu(g)).flatten(2).sum(-1), a, normalized=False)
    assert_maps_close(theirs, torchcam_formula)
    (ours,) = _camkit_maps(ck.SmoothGradCAMpp, model, layer, x, classes, False, num_samples=2, std=0.0)
    _assert_differs(ours, theirs)


# Score-CAM family ----------------------------------------------------------------------------------
# Every channel of every image is a forward of the model: small inputs and, on mobilenet_v2, a middle
# layer with 32 channels (the last one has 1280) keep these fast.
SCORE_RESNET = ("resnet18", "layer4", 33, 3)  # 1 image, 512 channels at 2x2 (33 px: smallest for 2x2)
SCORE_MOBILE = ("mobilenet_v2", "features.6", 32, [2, 5])  # 2 images, 32 channels at 4x4


def _score_case(case: tuple[Any, ...]) -> tuple[nn.Module, str, Tensor, ClassIdx]:
    model_name, layer, size, classes = case
    return _model(model_name), layer, _input(size, len(classes) if isinstance(classes, list) else 1), classes


@pytest.mark.parametrize(
    ("case", "normalized"),
    [(SCORE_RESNET, False), (SCORE_MOBILE, False), (SCORE_MOBILE, True)],
    ids=["resnet18-layer4-raw", "mobilenet_v2-features.6-raw", "mobilenet_v2-features.6-normalized"],
)
def test_scorecam_matches_torchcam(case: tuple[Any, ...], normalized: bool) -> None:
    """Same formula: baseline Y(X) of the input itself, masks min-max normalized per channel then
    upsampled bilinearly. TorchCAM adds eps=1e-8 to the denominators of the mask and of the final
    normalization (camkit does not): relatively ~1e-8 at the ranges of order 1 here, below the
    tolerance."""
    model, layer, x, classes = _score_case(case)
    kwargs = {"batch_size": 256}
    (theirs,) = _torchcam_maps(tc.ScoreCAM, model, layer, x, classes, normalized, ctor=kwargs)
    (ours,) = _camkit_maps(ck.ScoreCAM, model, layer, x, classes, normalized, **kwargs)
    assert_maps_close(ours, theirs)


def test_sscam_without_noise_is_scorecam_in_both() -> None:
    """SS-CAM averages Score-CAM gains over noisy masks. TorchCAM draws the noise from the global RNG
    (per channel map, at input size), camkit from its ``generator=`` option, so only the noise-free
    case is comparable: with std=0 both must equal Score-CAM. TorchCAM rejects std=0 and runs with
    std=1e-30 (the masks change by ~1e-30, far below the tolerance)."""
    model, layer, x, classes = _score_case(SCORE_MOBILE)
    (scorecam,) = _camkit_maps(ck.ScoreCAM, model, layer, x, classes, False, batch_size=256)
    kwargs = {"batch_size": 256, "num_samples": 2}
    (theirs,) = _torchcam_maps(tc.SSCAM, model, layer, x, classes, False, ctor={**kwargs, "std": TINY_STD})
    (ours,) = _camkit_maps(ck.SSCAM, model, layer, x, classes, False, **kwargs, std=0.0)
    assert_maps_close(theirs, scorecam)
    assert_maps_close(ours, scorecam)


def test_iscam_mask_coefficients_torchcam_vs_documented() -> None:
    """IS-CAM integrates Score-CAM gains over masks of growing strength. The documented strength of
    sample i (1..N) is i(i-1)/(2N); TorchCAM's loop is shifted by one sample, (i+1)i/(2N), reaching
    (N+1)/2 (PEERS.md). With N=2: documented [0, 1/2], TorchCAM [1/2, 3/2]. Each library must equal
    the formula written out here with its own coefficients, and the two results must differ.
    """
    model, layer, x, classes = _score_case(SCORE_MOBILE)
    (act,), _ = _forward_with_grads(model, layer, x, classes)
    gains = {coeff: _score_gains(model, layer, x, classes, coeff) for coeff in (0.0, 0.5, 1.5)}
    kwargs = {"batch_size": 256, "num_samples": 2}
    (theirs,) = _torchcam_maps(tc.ISCAM, model, layer, x, classes, False, ctor=kwargs)
    (ours,) = _camkit_maps(ck.ISCAM, model, layer, x, classes, False, **kwargs)
    assert_maps_close(theirs, _score_map(act, [gains[0.5], gains[1.5]]))
    assert_maps_close(ours, _score_map(act, [gains[0.0], gains[0.5]]))
    _assert_differs(ours, theirs)


def test_iscam_single_step_is_channel_mean() -> None:
    """Documented formula with N=1: the only mask has strength 0, every channel gets the same gain
    Y(0) - Y(X), the softmax is uniform and the map is ReLU(mean_k A_k). (TorchCAM's N=1 step has
    strength 1, i.e. Score-CAM.)"""
    model, layer, x, classes = _score_case(SCORE_MOBILE)
    (act,), _ = _forward_with_grads(model, layer, x, classes)
    (ours,) = _camkit_maps(ck.ISCAM, model, layer, x, classes, False, batch_size=256, num_samples=1)
    assert_maps_close(ours, torch.relu(act.mean(1)))
