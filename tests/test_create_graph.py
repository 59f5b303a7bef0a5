"""create_graph=True: maps that stay in the autograd graph, checked against float64 finite differences."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import camkit
from camkit.explanation import extractor_class
from camkit.registry import get_method
from conftest import METHODS, all_hooks

DIFFERENTIABLE = [
    m
    for m in METHODS
    if not get_method(m).needs_input
    and not get_method(m).needs_hvp
    and not get_method(m).stochastic
    and get_method(m).reduce is None
]


def _smooth_net() -> nn.Module:
    """Smooth activations (no ReLU kinks before the map), float64, so finite differences are exact to ~1e-9."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.Softplus(),
        nn.Conv2d(5, 6, 1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).double()
    return net.eval()


def _map_sum(name: str, net: nn.Module, x: Tensor, create_graph: bool) -> Tensor:
    build = extractor_class(name)
    extra = {"method": name} if build is camkit.CAMExtractor else {}
    with build(net, target_layer="5", **extra) as extractor:
        scores = net(x)
        (cam,) = extractor([0, 2], scores, normalized=False, create_graph=create_graph)
    return cam.sum()


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradient_of_the_map_equals_finite_differences(name: str) -> None:
    net, x = _smooth_net(), torch.rand(2, 3, 6, 6, dtype=torch.float64)
    for param in (net[0].weight, net[4].weight, net[8].weight):  # before, after and in the head
        value = _map_sum(name, net, x, create_graph=True)
        assert all(p.grad is None for p in net.parameters())  # only the user's own backward fills .grad
        (found,) = torch.autograd.grad(value, param, allow_unused=True)
        analytic = torch.zeros_like(param) if found is None else found
        index = (0,) * param.ndim
        eps = 1e-6
        values = []
        for step in (eps, -eps):
            with torch.no_grad():
                param[index] += step
            values.append(_map_sum(name, net, x, create_graph=False).item())
            with torch.no_grad():
                param[index] -= step
        numeric = (values[0] - values[1]) / (2 * eps)
        scale = max(abs(numeric), abs(analytic[index].item()), 1e-6)
        assert abs(analytic[index].item() - numeric) / scale <= 1e-4, (name, analytic[index].item(), numeric)
    assert all_hooks(net) == 0


def test_default_maps_are_detached_and_create_graph_fills_grad_only_on_backward() -> None:
    net, x = _smooth_net(), torch.rand(2, 3, 6, 6, dtype=torch.float64)
    with camkit.methods.GradCAM(net, "5") as cam:
        scores = net(x)
        (plain,) = cam(0, scores, retain_graph=True)
        (live,) = cam(0, scores, create_graph=True)
    assert not plain.requires_grad
    assert live.requires_grad
    torch.testing.assert_close(live.detach(), plain, rtol=0, atol=0)
    assert all(p.grad is None for p in net.parameters())
    live.sum().backward()  # the user's own loss
    assert net[0].weight.grad is not None  # before the target layer
    assert net[8].weight.grad is not None  # the head (through the gradients)
    assert net[8].bias.grad is None  # Grad-CAM does not depend on the head's bias
    assert all_hooks(net) == 0
    assert all(m.training is False for m in net.modules())


def test_explain_create_graph() -> None:
    net, x = _smooth_net(), torch.rand(2, 3, 6, 6, dtype=torch.float64)
    live = camkit.explain(net, x, method=["gradcam", "layercam"], target_layer="5", topk=2, create_graph=True)
    plain = camkit.explain(net, x, method=["gradcam", "layercam"], target_layer="5", topk=2)
    for name in ("gradcam", "layercam"):
        assert live.maps[name].requires_grad
        assert not plain.maps[name].requires_grad
        torch.testing.assert_close(live.maps[name].detach(), plain.maps[name], rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(live.maps["gradcam"].pow(2).sum(), net[0].weight)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["scorecam", "ablationcam", "shapleycam", "fullgrad"])
def test_create_graph_refused_where_the_map_is_not_differentiable(name: str) -> None:
    net, x = _smooth_net(), torch.rand(1, 3, 6, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="create_graph"):
        camkit.explain(net, x, method=name, target_layer="5", create_graph=True)
    build = extractor_class(name)
    extra = {"method": name} if build is camkit.CAMExtractor else {}
    layer = "5" if get_method(name).layers is None else None
    with build(net, target_layer=layer, **extra) as extractor:
        scores = net(x)
        with pytest.raises(ValueError, match="create_graph"):
            extractor(0, scores, create_graph=True)
    assert all_hooks(net) == 0
