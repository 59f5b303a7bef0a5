"""Deep Feature Factorization and its torch NMF: re-derivations, determinism, lifecycle, peer differential."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from camkit.methods import deep_feature_factorization
from camkit.methods.factorization import nmf
from conftest import all_hooks, tiny_cnn


def _factorizable(m: int = 20, f: int = 30, k: int = 3) -> Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.rand(m, k, generator=g, dtype=torch.float64) @ torch.rand(k, f, generator=g, dtype=torch.float64)


def _error(v: Tensor, w: Tensor, h: Tensor) -> float:
    return float(torch.linalg.norm(v - w @ h) / torch.linalg.norm(v))


def test_nmf_error_decreases_and_gets_small_on_an_exact_factorization() -> None:
    v = _factorizable()
    errors = [_error(v, *nmf(v, 3, max_iter=it, tol=0, dtype=torch.float64)) for it in (0, 5, 50, 500, 3000)]
    assert all(a >= b for a, b in itertools.pairwise(errors)), errors
    assert errors[0] > 0.3, errors
    assert errors[-1] < 1e-3, errors


def test_nmf_factors_are_non_negative_and_typed() -> None:
    v = _factorizable()
    for dtype in (torch.float32, torch.float64):
        w, h = nmf(v, 4, max_iter=50, dtype=dtype)
        assert w.shape == (20, 4)
        assert h.shape == (4, 30)
        assert w.dtype == h.dtype == dtype
        assert bool((w >= 0).all())
        assert bool((h >= 0).all())


def test_nmf_is_deterministic_with_a_seed() -> None:
    v = _factorizable()
    a = nmf(v, 3, max_iter=20, generator=torch.Generator().manual_seed(7))
    b = nmf(v, 3, max_iter=20, generator=torch.Generator().manual_seed(7))
    c = nmf(v, 3, max_iter=20, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.equal(nmf(v, 3, max_iter=20)[0], nmf(v, 3, max_iter=20)[0])  # default seed 0


def test_nmf_stops_on_tolerance() -> None:
    v = _factorizable()
    early = nmf(v, 3, max_iter=1000, tol=1.0, dtype=torch.float64)  # the first check (iteration 10) stops it
    ten = nmf(v, 3, max_iter=10, tol=0, dtype=torch.float64)
    assert torch.equal(early[0], ten[0])
    assert torch.equal(early[1], ten[1])


def test_nmf_validates() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        nmf(-torch.ones(3, 3), 2)
    with pytest.raises(ValueError, match="n_components"):
        nmf(torch.ones(3, 3), 0)
    with pytest.raises(ValueError, match="matrix"):
        nmf(torch.ones(3), 1)


def test_dff_is_nmf_of_the_layer_activations_float64() -> None:
    model = tiny_cnn().double().eval()
    x = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    a = model[:4](x).detach()  # output of layer '3' (pre-ReLU): (2, 8, 6, 5)
    v = torch.relu(a).transpose(0, 1).reshape(8, -1)
    w, h = nmf(v, 3, max_iter=100, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    kw = {"max_iter": 100, "dtype": torch.float64, "generator": torch.Generator().manual_seed(3)}
    concepts, raw = deep_feature_factorization(model, x, "3", 3, upsample=False, normalized=False, **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(concepts, w, atol=1e-12, rtol=0)
    torch.testing.assert_close(raw, h.reshape(3, 2, 6, 5).transpose(0, 1), atol=1e-12, rtol=0)
    # shift: subtract each channel's minimum, add it back to the concepts (pytorch-grad-cam's dff)
    offset = a.transpose(0, 1).reshape(8, -1).amin(1, keepdim=True)
    kw["generator"] = torch.Generator().manual_seed(3)
    w2, _ = nmf(a.transpose(0, 1).reshape(8, -1) - offset, 3, max_iter=100, dtype=torch.float64,
                generator=torch.Generator().manual_seed(3))  # fmt: skip
    concepts2, _ = deep_feature_factorization(model, x, "3", 3, nonnegative="shift", **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(concepts2, w2 + offset, atol=1e-12, rtol=0)


def test_dff_maps_normalized_and_upsampled_and_head_scores() -> None:
    model = tiny_cnn().eval()
    x = torch.rand(2, 3, 8, 8)
    concepts, maps, scores = deep_feature_factorization(model, x, "3", 4, head=model[-1])
    assert concepts.shape == (8, 4)
    assert bool((concepts >= 0).all())
    assert maps.shape == (2, 4, 8, 8)
    assert float(maps.min()) >= 0
    assert float(maps.max()) <= 1 + 1e-6
    torch.testing.assert_close(scores, model[-1](concepts.T).detach())
    assert not any(torch.is_inference(t) for t in (concepts, maps, scores))
    _, layer_res = deep_feature_factorization(model, torch.rand(2, 3, 8, 8), "3", 4, upsample=False)
    flat = layer_res.flatten(2)
    assert layer_res.shape == (2, 4, 8, 8)
    assert torch.allclose(flat.amax(2), torch.ones(2, 4))
    assert torch.allclose(flat.amin(2), torch.zeros(2, 4))


def test_dff_leaves_the_model_alone() -> None:
    model = tiny_cnn().train()
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deep_feature_factorization(model, torch.rand(2, 3, 8, 8), model[3], 2)
    assert model.training
    assert all(m.training for m in model.modules())
    assert not model[0].weight.requires_grad
    assert model[3].weight.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm stats untouched
    assert all(p.grad is None for p in model.parameters())
    assert all_hooks(model) == 0
    with pytest.raises(ValueError, match="spatial"):
        deep_feature_factorization(model, torch.rand(2, 3, 8, 8), "6", 2)
    with pytest.raises(ValueError, match="nonnegative"):
        deep_feature_factorization(model, torch.rand(2, 3, 8, 8), "3", 2, nonnegative="abs")
    assert all_hooks(model) == 0


@pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn: "maximum number of iterations reached"
def test_dff_fits_as_well_as_pytorch_grad_cam() -> None:
    """The peer's dff (scikit-learn NMF) and camkit's shift mode factorize the same matrix equally well."""
    peer = pytest.importorskip("pytorch_grad_cam.feature_factorization.deep_feature_factorization")
    model = tiny_cnn().eval()
    x = torch.rand(2, 3, 8, 8)
    a = model[:4](x).detach()
    v = a.transpose(0, 1).reshape(8, -1)
    v = v - v.amin(1, keepdim=True)
    their_concepts, their_maps = peer.dff(a.numpy().copy(), n_components=3)
    their_w = torch.from_numpy(their_concepts).float() - (a.transpose(0, 1).reshape(8, -1).amin(1, keepdim=True))
    their_h = torch.from_numpy(their_maps).float().transpose(0, 1).reshape(3, -1)
    concepts, raw = deep_feature_factorization(
        model, x, "3", 3, nonnegative="shift", upsample=False, normalized=False, max_iter=1000, tol=1e-6
    )
    mine_w = concepts - a.transpose(0, 1).reshape(8, -1).amin(1, keepdim=True)
    mine_h = raw.transpose(0, 1).reshape(3, -1)
    assert their_maps.shape == (2, 3, 8, 8)
    assert raw.shape == (2, 3, 8, 8)
    assert _error(v, mine_w, mine_h) <= 1.05 * _error(v, their_w, their_h) + 1e-4
