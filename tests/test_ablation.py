"""AblationCAM and Recipro-CAM: formulas, the fast re-forward, and its fallback."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from camkit.engine import CAMExtractor
from camkit.ops import normalize


def _tiny() -> nn.Sequential:
    torch.manual_seed(3)
    return (
        nn.Sequential(
            nn.Conv2d(3, 5, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(5, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(24, 8),
            nn.Tanh(),
            nn.Linear(8, 4),
        )
        .double()
        .eval()
    )


class ConcatSkip(nn.Module):
    """A skip connection from before the target layer concatenated after it: no fast path."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.head(torch.cat([self.body(s), s], dim=1))


def _run(model: nn.Module, method: str, x: torch.Tensor, classes: list[int], **options: object) -> torch.Tensor:
    with CAMExtractor(model, options.pop("layer", "3"), method=method, **options) as extractor:  # type: ignore[arg-type]
        scores = model(x)
        return extractor(classes, scores, normalized=False)[0]


def _reference_ablation(model: nn.Sequential, x: torch.Tensor, classes: list[int]) -> torch.Tensor:
    head, tail = model[:4], model[4:]
    maps = []
    for n, c in enumerate(classes):
        a = head(x[n : n + 1])
        base = tail(a)[0, c].item()
        weights = []
        for k in range(a.shape[1]):
            ablated = a.clone()
            ablated[0, k] = 0
            weights.append((base - tail(ablated)[0, c].item()) / base)
        cam = sum(w * a[0, k] for k, w in enumerate(weights))
        maps.append(torch.relu(cam))
    return torch.stack(maps).detach()


def test_ablationcam_matches_formula() -> None:
    model = _tiny()
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    expected = _reference_ablation(model, x, [0, 2])
    assert (expected.flatten(1).amax(1) > 0).all()
    for mode in ("fast", "full", "auto"):
        got = _run(model, "ablationcam", x, [0, 2], reforward=mode, batch_size=4)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def _reference_recipro(model: nn.Sequential, x: torch.Tensor, classes: list[int], kernel: str) -> torch.Tensor:
    head, tail = model[:4], model[4:]
    taps = {(-1, -1): 0.25, (-1, 0): 0.5, (-1, 1): 0.25, (0, -1): 0.5, (0, 0): 1.0, (0, 1): 0.5}
    taps |= {(1, -1): 0.25, (1, 0): 0.5, (1, 1): 0.25}
    maps = []
    for n, c in enumerate(classes):
        a = head(x[n : n + 1])
        h, w = a.shape[2:]
        cam = torch.zeros(h, w, dtype=a.dtype)
        for i in range(h):
            for j in range(w):
                mask = torch.zeros(h, w, dtype=a.dtype)
                for (di, dj), value in taps.items():
                    if kernel == "point" and (di, dj) != (0, 0):
                        continue
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        mask[i + di, j + dj] = value
                cam[i, j] = tail(a * mask)[0, c]
        maps.append(cam)
    return torch.stack(maps).detach()


@pytest.mark.parametrize("kernel", ["gaussian", "point"])
def test_reciprocam_matches_formula(kernel: str) -> None:
    model = _tiny()
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    expected = _reference_recipro(model, x, [0, 2], kernel)
    got = _run(model, "reciprocam", x, [0, 2], kernel=kernel, batch_size=7)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    with CAMExtractor(model, "3", method="reciprocam", kernel=kernel) as extractor:
        normalized = extractor([0, 2], model(x))[0]
    torch.testing.assert_close(normalized, normalize(expected), rtol=1e-9, atol=1e-12)


def test_ablation_fast_equals_full_on_resnet18() -> None:
    torchvision = pytest.importorskip("torchvision")
    # float64, so that "the same maps" can be checked to 1e-9 whatever batch shapes the two paths use
    model = torchvision.models.resnet18(weights=None).double().eval()
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    fast = _run(model, "ablationcam", x, [5, 7], layer="layer4", reforward="fast", batch_size=64)
    full = _run(model, "ablationcam", x, [5, 7], layer="layer4", reforward="full", batch_size=256)
    assert fast.abs().amax() > 0
    torch.testing.assert_close(fast, full, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["ablationcam", "reciprocam"])
def test_fallback_when_fast_path_cannot_apply(method: str, caplog: pytest.LogCaptureFixture) -> None:
    model = ConcatSkip().eval()
    x = torch.rand(2, 3, 6, 6)
    with pytest.raises(RuntimeError):
        _run(model, method, x, [0, 1], layer="body", reforward="fast")
    full = _run(model, method, x, [0, 1], layer="body", reforward="full")
    with caplog.at_level(logging.INFO, logger="camkit"):
        auto = _run(model, method, x, [0, 1], layer="body")
    assert "running full forwards" in caplog.text
    torch.testing.assert_close(auto, full)


def test_skip_from_before_layer_that_broadcasts_uses_fast_path(caplog: pytest.LogCaptureFixture) -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(1, 3, 64, 64)
    with caplog.at_level(logging.INFO, logger="camkit"):
        # layer4.0.conv1 sits inside a residual block whose shortcut starts before it
        fast = _run(model, "ablationcam", x, [1], layer="layer4.0.conv1", batch_size=256)
    assert "full forwards" not in caplog.text
    full = _run(model, "ablationcam", x, [1], layer="layer4.0.conv1", reforward="full", batch_size=256)
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-5)


def test_unknown_reforward_mode() -> None:
    with pytest.raises(ValueError, match="reforward"):
        _run(_tiny(), "ablationcam", torch.rand(1, 3, 5, 5, dtype=torch.float64), [0], reforward="quick")


def test_unknown_recipro_kernel() -> None:
    with pytest.raises(ValueError, match="kernel"):
        _run(_tiny(), "reciprocam", torch.rand(1, 3, 5, 5, dtype=torch.float64), [0], kernel="box")


def test_ablation_value_option() -> None:
    model = _tiny()
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    zero = _run(model, "ablationcam", x, [0])
    other = _run(model, "ablationcam", x, [0], ablation_value=-5.0)
    assert not torch.allclose(zero, other)
    assert F.relu(other).shape == zero.shape


def test_fast_path_packs_more_rows_per_forward() -> None:
    model = _tiny()
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    try:
        fast = _run(model, "ablationcam", x, [2], batch_size=1)
        fast_calls = calls[1:]  # minus the user's forward
        calls.clear()
        full = _run(model, "ablationcam", x, [2], batch_size=1, reforward="full")
        full_calls = calls[1:]
    finally:
        handle.remove()
    torch.testing.assert_close(fast, full, rtol=1e-9, atol=1e-12)
    # full path: one forward per row: 6 ablated channels and the base score. Fast path: the first
    # channel, checked against a full forward, then the 5 others and the base row in one forward
    # of the layers after the target (the layers before it run on the one sample).
    assert full_calls == [1] * 7
    assert fast_calls == [1, 1, 1]
