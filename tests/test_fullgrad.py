"""FullGrad against an independent float64 derivation and against pytorch-grad-cam."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from camkit.engine import CAMExtractor
from camkit.methods import FullGrad
from camkit.methods.fullgrad import bias_layers
from conftest import all_hooks


def _model() -> nn.Sequential:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    ).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model.eval()


def _minmax(m: torch.Tensor) -> torch.Tensor:
    span = m.max() - m.min()
    return torch.zeros_like(m) if span == 0 else (m - m.min()) / span


def _reference(model: nn.Sequential, x: torch.Tensor, c: int) -> torch.Tensor:
    """Literal FullGrad for one sample: run the Sequential layer by layer and keep every output."""
    leaf = x.clone().requires_grad_(True)
    outputs, h = {}, leaf
    for i, layer in enumerate(model):
        h = layer(h)
        outputs[i] = h
    biased = [0, 1, 3]
    grads = torch.autograd.grad(h[0, c], [leaf] + [outputs[i] for i in biased])
    total = sum(_minmax((leaf[0, k] * grads[0][0, k]).abs()) for k in range(x.shape[1]))
    for i, grad in zip(biased, grads[1:], strict=True):
        layer = model[i]
        if isinstance(layer, nn.BatchNorm2d):
            bias = layer.bias - layer.running_mean * layer.weight / torch.sqrt(layer.running_var + layer.eps)
        else:
            bias = layer.bias
        term = sum(_minmax((bias[k] * grad[0, k]).abs()) for k in range(grad.shape[1]))
        size = x.shape[2:]
        total = total + F.interpolate(term[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return total.detach()


def test_bias_layers() -> None:
    assert bias_layers(_model()) == ["0", "1", "3"]


def test_fullgrad_matches_reference() -> None:
    model = _model()
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    with FullGrad(model) as extractor:
        raw = extractor([0, 2], model(x), normalized=False)[0]
        normalized = extractor([0, 2], model(x))[0]
    expected = torch.stack([_reference(model, x[i : i + 1], c) for i, c in enumerate([0, 2])])
    torch.testing.assert_close(raw, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(normalized, torch.stack([_minmax(e) for e in expected]), rtol=1e-9, atol=1e-12)
    assert all_hooks(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_generic_extractor_equals_the_fullgrad_class() -> None:
    """The spec carries FullGrad's layers and its reduction: both classes give the one summed map."""
    model = _model()
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    with CAMExtractor(model, None, method="fullgrad") as generic:
        assert generic.target_names == ["0", "1", "3"]
        got = generic([1, 2], model(x), normalized=False)
    with FullGrad(model) as named:
        expected = named([1, 2], model(x), normalized=False)
    assert len(got) == 1
    assert got[0].shape == (2, 6, 6)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(got[0][1], _reference(model, x[1:], 2), rtol=1e-9, atol=1e-12)


def test_fullgrad_needs_a_graph() -> None:
    model = _model()
    with FullGrad(model) as extractor:
        with torch.no_grad():
            scores = model(torch.rand(1, 3, 6, 6, dtype=torch.float64))
        with pytest.raises(ValueError, match="no autograd graph"):
            extractor(0, scores)


def test_fullgrad_matches_pytorch_grad_cam() -> None:
    peer = pytest.importorskip("pytorch_grad_cam")
    torchvision = pytest.importorskip("torchvision")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.train()
    with torch.no_grad():  # calibrate BatchNorm statistics so activations are not vanishingly small
        model(torch.rand(8, 3, 64, 64))
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with FullGrad(model) as extractor:
        ours = extractor([3, 7], model(x))[0].numpy()
    # The peer adds 1e-7 to every per-channel min-max denominator; deep layers' |bias x gradient|
    # terms are about 1e-8 on this random net, so the epsilon would dominate them. camkit's
    # normalization is exact and scale-free, so scaling the peer's target by 1e6 removes the
    # epsilon's effect without changing camkit's map.
    scaled = [lambda out, c=c: 1e6 * ClassifierOutputTarget(c)(out) for c in (3, 7)]
    theirs = peer.FullGrad(copy.deepcopy(model), [])(input_tensor=x, targets=scaled)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def _norm_act_pair() -> tuple[nn.Module, nn.Module]:
    """The same network twice: with timm's fused BatchNormAct2d, and with BatchNorm2d + ReLU6 apart."""
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(4)
    fused = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        timm_layers.BatchNormAct2d(4, act_layer=nn.ReLU6, inplace=True),
        nn.Conv2d(4, 5, 3, stride=2, padding=1, bias=False),
        timm_layers.BatchNormAct2d(5, act_layer=nn.ReLU6, inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    ).double()
    with torch.no_grad():
        for i in (1, 3):
            fused[i].running_mean.uniform_(-0.5, 0.5)
            fused[i].running_var.uniform_(0.5, 2.0)
            fused[i].weight.uniform_(0.5, 1.5)
            fused[i].bias.uniform_(-0.5, 0.5)
    plain = nn.Sequential(fused[0], nn.BatchNorm2d(4), nn.ReLU6(), fused[2], nn.BatchNorm2d(5), nn.ReLU6(), *fused[4:])
    plain = plain.double()
    for src, dst in ((1, 1), (3, 4)):
        plain[dst].load_state_dict({k: v for k, v in fused[src].state_dict().items()})
    return fused.eval(), plain.eval()


def test_fullgrad_reads_timm_norm_act_layers_before_their_activation() -> None:
    fused, plain = _norm_act_pair()
    assert bias_layers(fused) == ["1.drop", "3.drop"]
    assert bias_layers(plain) == ["1", "4"]
    x = 3 * torch.rand(2, 3, 8, 8, dtype=torch.float64)  # large enough that ReLU6 clips some positions
    maps = []
    for model in (fused, plain):
        with FullGrad(model) as extractor:
            maps.append(extractor([0, 2], model(x), normalized=False)[0])
    assert maps[0].abs().amax() > 0
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-12, atol=1e-12)
    # reading the activated outputs instead (the whole BatchNormAct2d modules) gives another map
    with FullGrad(fused, ["1", "3"]) as extractor:
        activated = extractor([0, 2], fused(x), normalized=False)[0]
    assert (activated - maps[1]).abs().amax() > 1e-3
