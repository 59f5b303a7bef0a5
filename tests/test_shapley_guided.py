"""ShapleyCAM (Hessian-vector product) and guided backpropagation against independent references."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.autograd.functional import hessian

from camkit.engine import CAMExtractor
from camkit.methods.guided import guided_backprop, guided_gradcam
from camkit.ops import upsample
from conftest import all_hooks


def _model(act: type[nn.Module]) -> nn.Sequential:
    torch.manual_seed(1)
    return (
        nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(3, 3, 3, padding=1),
            nn.Flatten(),
            nn.Linear(3 * 4 * 4, 5),
            act(),
            nn.Linear(5, 4),
        )
        .double()
        .eval()
    )


def _shapley_reference(model: nn.Sequential, x: torch.Tensor, c: int) -> torch.Tensor:
    a = model[:3](x).detach()[0]
    tail = model[3:]

    def score(flat: torch.Tensor) -> torch.Tensor:
        return tail(flat.view(1, *a.shape))[0, c]

    flat = a.flatten().requires_grad_(True)
    (g,) = torch.autograd.grad(score(flat), flat)
    h = hessian(score, a.flatten())
    hv = (h @ a.flatten()).view(a.shape)
    weights = (g.view(a.shape) - 0.5 * hv).mean(dim=(1, 2))
    return torch.relu((weights[:, None, None] * a).sum(0))


def test_shapleycam_matches_hessian_reference() -> None:
    model = _model(nn.Tanh)
    x = torch.rand(2, 2, 4, 4, dtype=torch.float64)
    with CAMExtractor(model, "2", method="shapleycam") as extractor:
        got = extractor([1, 3], model(x), normalized=False)[0]
    expected = torch.stack([_shapley_reference(model, x[i : i + 1], c) for i, c in enumerate([1, 3])])
    assert expected.amax() > 0
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    # a nonlinear head gives a non-zero Hessian term: ShapleyCAM differs from Grad-CAM here
    with CAMExtractor(model, "2", method="gradcam") as extractor:
        gradcam = extractor([1, 3], model(x), normalized=False)[0]
    assert not torch.allclose(got, gradcam)


def test_shapleycam_equals_gradcam_for_piecewise_linear_tail() -> None:
    model = _model(nn.ReLU)
    x = torch.rand(2, 2, 4, 4, dtype=torch.float64)
    maps = {}
    for name in ("shapleycam", "gradcam"):
        with CAMExtractor(model, "2", method=name) as extractor:
            maps[name] = extractor([0, 2], model(x), normalized=False)[0]
    torch.testing.assert_close(maps["shapleycam"], maps["gradcam"])
    assert all(p.grad is None for p in model.parameters())


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


class _GuidedModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedReLU.apply(x)


def test_guided_backprop_matches_module_replacement() -> None:
    model = _model(nn.ReLU)
    model.train()
    x = torch.rand(2, 2, 4, 4, dtype=torch.float64)
    reference = copy.deepcopy(model).eval()
    for i, m in enumerate(reference):
        if isinstance(m, nn.ReLU):
            reference[i] = _GuidedModule()
    leaf = x.clone().requires_grad_(True)
    out = reference(leaf)
    (expected,) = torch.autograd.grad(out[[0, 1], [2, 1]].sum(), leaf)
    got = guided_backprop(model, x, [2, 1])
    torch.testing.assert_close(got, expected)
    assert model.training
    assert all_hooks(model) == 0
    assert all(p.grad is None for p in model.parameters())
    # plain gradients differ: the guidance matters on this model
    plain = leaf.detach().clone().requires_grad_(True)
    (vanilla,) = torch.autograd.grad(model.eval()(plain)[[0, 1], [2, 1]].sum(), plain)
    assert not torch.allclose(vanilla, got)


def test_guided_gradcam_is_product_with_upsampled_cam() -> None:
    guided = torch.rand(2, 3, 8, 8)
    cam = torch.rand(2, 4, 4)
    torch.testing.assert_close(guided_gradcam(guided, cam), guided * upsample(cam, (8, 8)).unsqueeze(1))


def test_guided_backprop_default_class_is_argmax() -> None:
    model = _model(nn.ReLU)
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    top = int(model(x).argmax())
    torch.testing.assert_close(guided_backprop(model, x), guided_backprop(model, x, top))
