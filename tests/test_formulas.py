"""Every deterministic registry method against an independent float64 derivation of its formula.

The table :data:`FORMULAS` is checked against the registry: a deterministic method without a
reference here fails :func:`test_every_deterministic_method_has_a_float64_reference`, so a method
(camkit's or a new one) cannot land with a formula no test derives. References are written from
the papers with plain float64 tensor arithmetic on activations and gradients captured by hand
(no camkit code), on ``tiny_cnn`` at layer ``"3"`` (a convolution before ReLU, pooling and the head).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import camkit
from camkit.engine import CAMExtractor
from conftest import METHODS, tiny_cnn

CLASSES = [1, 3]
LAYER = 3  # index of the target layer in tiny_cnn; model[LAYER + 1:] is the rest of the network


@dataclass
class Captured:
    """What a reference may use: the model, its input, the layer's activation and gradient, the classes."""

    model: nn.Sequential
    x: Tensor
    a: Tensor
    g: Tensor
    classes: list[int]

    def tail(self, a: Tensor) -> Tensor:
        """The network after the target layer, applied to activations ``a``."""
        return self.model[LAYER + 1 :](a)

    def score(self, logits: Tensor, rows: Tensor) -> Tensor:
        return logits.gather(1, torch.tensor(self.classes)[rows].view(-1, 1)).squeeze(1)


def _model() -> nn.Sequential:
    torch.manual_seed(3)
    model = tiny_cnn().double().eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return model


def _capture(model: nn.Sequential, x: Tensor) -> Captured:
    """Activation and gradient of the class scores at the layer, by a plain hook and backward on a copy."""
    net = copy.deepcopy(model)
    kept: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
        out.retain_grad()
        kept["a"] = out

    net[LAYER].register_forward_hook(hook)
    logits = net(x)
    logits.gather(1, torch.tensor(CLASSES).view(-1, 1)).sum().backward()
    return Captured(model, x, kept["a"].detach(), kept["a"].grad.detach(), CLASSES)


def _mean(t: Tensor) -> Tensor:
    return t.mean(dim=(2, 3))


def _combine(w: Tensor, a: Tensor) -> Tensor:
    return (w.view(*w.shape[:2], *([1] * (a.ndim - w.ndim))) * a).sum(1)


def _pc_projection(rows: Tensor) -> Tensor:
    """Projection of each position on the first principal component, sign towards more activation."""
    n = rows.shape[0]
    flat = rows.flatten(2).transpose(1, 2)  # (N, P, C)
    centred = flat - flat.mean(1, keepdim=True)
    out = []
    for i in range(n):
        _, _, vh = torch.linalg.svd(centred[i], full_matrices=False)
        v = vh[0] if vh[0].sum() >= 0 else -vh[0]
        out.append(centred[i] @ v)
    return torch.stack(out).view(n, *rows.shape[2:])


def gradcampp(c: Captured) -> Tensor:
    g, a = c.g, c.a
    denom = 2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3
    alpha = torch.where((g != 0) & (denom != 0), g**2 / torch.where(denom == 0, 1.0, denom), 0.0)
    return _combine((alpha * g.clamp_min(0)).sum(dim=(2, 3)), a)


def xgradcam(c: Captured) -> Tensor:
    total = c.a.sum(dim=(2, 3))
    w = (c.g * c.a).sum(dim=(2, 3)) / torch.where(total == 0, torch.inf, total)
    return _combine(w, c.a)


def segeigencam(c: Captured) -> Tensor:
    p = _pc_projection(c.g.abs() * c.a)
    flip = p.flatten(1).amin(1).abs() > p.flatten(1).amax(1).abs()
    return torch.where(flip.view(-1, 1, 1), -p, p)


def kpcacam(c: Captured) -> Tensor:
    """scikit-learn's KernelPCA(kernel='sigmoid', gamma=1/C, coef0=1) first component, Eigen-CAM's sign."""
    flat = c.a.flatten(2).transpose(1, 2)
    rows = flat - flat.mean(1, keepdim=True)
    out = []
    for r in rows:
        k = torch.tanh(r @ r.T / r.shape[1] + 1.0)
        p = torch.full_like(k, 1.0 / k.shape[0])
        kc = k - p @ k - k @ p + p @ k @ p
        values, vectors = torch.linalg.eigh(kc)
        alpha = vectors[:, -1]
        sign = -1.0 if (alpha * r.sum(1)).sum() < 0 else 1.0
        out.append(sign * alpha * values[-1].clamp_min(0).sqrt())
    return torch.stack(out).view(c.a.shape[0], *c.a.shape[2:])


def fem(c: Captured) -> Tensor:
    flat = c.a.flatten(2)
    mean, std = flat.mean(-1, keepdim=True), flat.std(-1, correction=0, keepdim=True)
    return _combine((flat > mean + 2.0 * std).double().mean(-1), c.a)


def cam(c: Captured) -> Tensor:
    return _combine(c.model[-1].weight[c.classes].detach(), c.a)


def ablationcam(c: Captured) -> Tensor:
    n, ch = c.a.shape[:2]
    base = c.score(c.tail(c.a), torch.arange(n))
    w = torch.empty(n, ch, dtype=c.a.dtype)
    for k in range(ch):
        ablated = c.a.clone()
        ablated[:, k] = 0
        w[:, k] = (base - c.score(c.tail(ablated), torch.arange(n))) / base
    return _combine(w, c.a)


def reciprocam(c: Captured) -> Tensor:
    n, _, h, w = c.a.shape
    taps = torch.tensor([0.5, 1.0, 0.5], dtype=c.a.dtype)
    kernel = taps[:, None] * taps[None, :]
    out = torch.empty(n, h, w, dtype=c.a.dtype)
    for i in range(h):
        for j in range(w):
            mask = torch.zeros(h + 2, w + 2, dtype=c.a.dtype)
            mask[i : i + 3, j : j + 3] = kernel
            out[:, i, j] = c.score(c.tail(c.a * mask[1:-1, 1:-1]), torch.arange(n))
    return out


def _score_family(c: Captured, strengths: list[float]) -> Tensor:
    """softmax_k of the mean over strengths s of Y(s M_k ⊙ X) (the baseline Y(X) cancels in the softmax)."""
    n, ch = c.a.shape[:2]
    lo = c.a.amin(dim=(2, 3), keepdim=True)
    hi = c.a.amax(dim=(2, 3), keepdim=True)
    masks = torch.where(hi > lo, (c.a - lo) / torch.where(hi > lo, hi - lo, 1.0), 0.0)
    up = F.interpolate(masks, size=c.x.shape[2:], mode="bilinear", align_corners=False)
    w = torch.empty(n, ch, dtype=c.a.dtype)
    with torch.no_grad():
        for k in range(ch):
            scores = [c.score(c.model(s * up[:, k : k + 1] * c.x), torch.arange(n)) for s in strengths]
            w[:, k] = torch.stack(scores).mean(0)
    return _combine(torch.softmax(w, dim=1), c.a)


def fullgrad(c: Captured) -> Tensor:
    from test_fullgrad import _reference

    return torch.stack([_reference(c.model, c.x[i : i + 1], k) for i, k in enumerate(c.classes)])


def _new_method(c: Captured, name: str) -> Tensor:
    """Integrated Grad-CAM and CAMERAS at layer 3, Poly-CAM at its default layer ("4"), by their tests' references."""
    from test_methods_integrated import reference_cameras, reference_integratedgradcam
    from test_methods_polycam import reference_polycam

    if name == "integratedgradcam":
        return reference_integratedgradcam(c.model, c.x, c.classes, str(LAYER), steps=5)
    if name == "cameras":
        return reference_cameras(c.model, c.x, c.classes, str(LAYER), num_scales=3, step=4)
    return reference_polycam(c.model, c.x, c.classes, ["4"])


def _masking_method(c: Captured, name: str) -> Tensor:
    """Occlusion (black-box), Group-CAM and Opti-CAM (at layer 3), by their tests' references (options in OPTIONS)."""
    from test_methods_masking import groupcam_reference, opticam_reference
    from test_methods_perturbation import occlusion_reference

    if name == "occlusion":
        return occlusion_reference(c.model, c.x, c.classes, window=3, stride=2)
    if name == "groupcam":
        return groupcam_reference(c.model, c.x, c.a, c.g, c.classes, groups=3)
    return opticam_reference(c.model, c.x, c.a, c.classes, steps=3)


#: registry name → float64 reference of the map before normalization (ReLU applied by the harness per spec)
FORMULAS: dict[str, Callable[[Captured], Tensor]] = {
    "gradcam": lambda c: _combine(_mean(c.g), c.a),
    "gradcampp": gradcampp,
    "xgradcam": xgradcam,
    "layercam": lambda c: (c.g.clamp_min(0) * c.a).sum(1),
    "hirescam": lambda c: (c.g * c.a).sum(1),
    "gradcamelementwise": lambda c: (c.g * c.a).clamp_min(0).sum(1),
    # the layers after the target layer are piecewise linear, so H A = 0 and ShapleyCAM is Grad-CAM's formula
    "shapleycam": lambda c: _combine(_mean(c.g), c.a),
    "cam": cam,
    "eigencam": lambda c: _pc_projection(c.a),
    "eigengradcam": lambda c: _pc_projection(c.g * c.a),
    "segeigencam": segeigencam,
    "kpcacam": kpcacam,
    "fem": fem,
    "ablationcam": ablationcam,
    "reciprocam": reciprocam,
    "scorecam": lambda c: _score_family(c, [1.0]),
    "iscam": lambda c: _score_family(c, [i * (i - 1) / (2 * 10) for i in range(1, 11)]),
    "fullgrad": fullgrad,
    # the noise methods, run without noise (std=0): the mean over noisy copies is the clean formula
    "smoothgradcampp": gradcampp,
    "sscam": lambda c: _score_family(c, [1.0]),
    # issue 25's methods: their references live beside their own tests
    "integratedgradcam": lambda c: _new_method(c, "integratedgradcam"),
    "cameras": lambda c: _new_method(c, "cameras"),
    "polycam": lambda c: _new_method(c, "polycam"),
    "occlusion": lambda c: _masking_method(c, "occlusion"),
    "groupcam": lambda c: _masking_method(c, "groupcam"),
    "opticam": lambda c: _masking_method(c, "opticam"),
}
#: options for the run (noise methods without noise)
OPTIONS: dict[str, dict[str, Any]] = {
    "smoothgradcampp": {"std": 0.0, "num_samples": 3},
    "sscam": {"std": 0.0, "num_samples": 2},
    "integratedgradcam": {"steps": 5},
    "cameras": {"num_scales": 3, "step": 4},
    "occlusion": {"window": 3, "stride": 2},
    "groupcam": {"groups": 3},
    "opticam": {"steps": 3},
}

DETERMINISTIC = [m for m in METHODS if not camkit.get_method(m).stochastic]


def test_every_deterministic_method_has_a_float64_reference() -> None:
    missing = [m for m in camkit.list_methods() if not camkit.get_method(m).stochastic and m not in FORMULAS]
    assert not missing, f"no float64 reference in tests/test_formulas.py::FORMULAS for {missing}: add one"


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_map_equals_its_float64_formula(name: str) -> None:
    if name not in FORMULAS:
        pytest.fail(f"no float64 reference for {name}: add one to FORMULAS")
    spec = camkit.get_method(name)
    model = _model()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    expected = FORMULAS[name](_capture(model, x))
    if spec.relu:
        expected = expected.clamp_min(0)
    layer = None if spec.layers is not None else str(LAYER)
    with CAMExtractor(model, layer, method=name, batch_size=64, **OPTIONS.get(name, {})) as extractor:
        got = extractor(CLASSES, model(x), normalized=False)
    assert len(got) == 1
    assert got[0].dtype == torch.float64
    torch.testing.assert_close(got[0], expected, rtol=1e-7, atol=1e-9)
