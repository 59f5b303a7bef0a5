"""Perturbation forwards in channels-last order on CPU, with the fallback for models that cannot take it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

import camkit.engine._probe as probe_module
from camkit.methods import ScoreCAM


class ViewsItsInput(nn.Module):
    """A convolution after a ``.view`` of the raw input, which fails on a channels-last batch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.view(x.shape[0], -1)  # needs a contiguous input
        feats = torch.relu(self.conv(flat.view_as(x)))
        return self.head(feats.mean(dim=(2, 3)))


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    ).eval()  # fmt: skip


def _scorecam(model: nn.Module, layer: str, x: Tensor) -> Tensor:
    with ScoreCAM(model, layer, batch_size=4) as extractor:
        return extractor([0, 2], model(x))[0]


def _fast_and_plain(monkeypatch, run: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:  # type: ignore[no-untyped-def]
    """``run()`` with the default layout rule (every probe batch channels-last), then with contiguous batches."""
    seen: list[bool] = []
    original = probe_module.ModelProbe._call

    def spy(self, inputs, rows, call):  # type: ignore[no-untyped-def]
        seen.append(inputs.is_contiguous(memory_format=torch.channels_last) and not inputs.is_contiguous())
        return original(self, inputs, rows, call)

    monkeypatch.setattr(probe_module.ModelProbe, "_call", spy)
    fast = run()
    assert seen
    assert all(seen)
    monkeypatch.setattr(probe_module, "_channels_last", lambda _model, _inputs: None)  # contiguous batches
    seen.clear()
    plain = run()
    assert seen
    assert not any(seen)
    return fast, plain


def test_perturbation_batches_are_channels_last_on_cpu_and_give_the_contiguous_maps(monkeypatch) -> None:
    model = _conv_net()
    x = torch.rand(2, 3, 10, 10)
    fast, plain = _fast_and_plain(monkeypatch, lambda: _scorecam(model, "2", x))
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)


def test_a_model_that_fails_on_channels_last_gets_contiguous_batches_from_then_on() -> None:
    model = ViewsItsInput().eval()
    x = torch.rand(2, 3, 6, 6)
    try:
        model(x.contiguous(memory_format=torch.channels_last))
    except RuntimeError:
        pass
    else:  # pragma: no cover - the premise of the test
        raise AssertionError("the model was expected to fail on a channels-last batch")
    assert model not in probe_module._CONTIGUOUS_ONLY
    maps = _scorecam(model, "conv", x)
    assert probe_module._CONTIGUOUS_ONLY.get(model) is True
    assert maps.shape == (2, 6, 6)
    assert torch.isfinite(maps).all()
    assert maps.amax() > 0
    assert probe_module._channels_last(model, torch.rand(4, 3, 6, 6)) is None
    assert probe_module._channels_last(_conv_net(), torch.rand(4, 3, 6, 6)) is not None


def test_metric_forwards_use_the_same_layout_rule(monkeypatch) -> None:
    from camkit.metrics import deletion, insertion

    viewing = ViewsItsInput().eval()
    curve = deletion(viewing, torch.rand(2, 3, 6, 6), torch.rand(2, 6, 6), [0, 1], steps=4)
    assert probe_module._CONTIGUOUS_ONLY.get(viewing) is True
    assert torch.isfinite(torch.as_tensor(curve.per_sample)).all()
    model = _conv_net()
    x = torch.rand(2, 3, 10, 10)
    maps = torch.rand(2, 10, 10)
    fast = [deletion(model, x, maps, [0, 2], steps=5).per_sample, insertion(model, x, maps, steps=5).per_sample]
    monkeypatch.setattr(probe_module, "_channels_last", lambda _model, _inputs: None)  # contiguous batches
    plain = [deletion(model, x, maps, [0, 2], steps=5).per_sample, insertion(model, x, maps, steps=5).per_sample]
    for got, expected in zip(fast, plain, strict=True):
        torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(expected), rtol=1e-5, atol=1e-6)


def test_noisy_gradient_forwards_are_channels_last_and_give_the_contiguous_maps(monkeypatch) -> None:
    from camkit.methods import SmoothGradCAMpp

    model, x = _conv_net(), torch.rand(2, 3, 10, 10)

    def smooth() -> Tensor:
        with SmoothGradCAMpp(model, "2", num_samples=3, std=0.2, generator=torch.Generator().manual_seed(1)) as cam:
            return cam([0, 2], model(x))[0]

    fast, plain = _fast_and_plain(monkeypatch, smooth)
    assert fast.abs().amax() > 0
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
