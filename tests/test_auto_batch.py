"""batch_size="auto": the same maps as a fixed batch size, the choice measured once and cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camkit
from camkit.compat.gradcam import CAMMethod
from camkit.engine import _batching as batching
from conftest import tiny_cnn


@pytest.mark.parametrize("name", ["scorecam", "ablationcam", "reciprocam", "smoothgradcampp"])
def test_auto_equals_a_fixed_batch_size(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    batching.clear_cache()
    model, x = tiny_cnn().eval(), torch.rand(2, 3, 8, 8)
    calls: list[int] = []
    real = batching.auto_batch_size

    def spy(*args: object, **kwargs: object) -> int:
        size = real(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(size)
        return size

    monkeypatch.setattr(camkit.engine._extractor, "auto_batch_size", spy)
    options = {k: v for k, v in {"std": 0.0, "num_samples": 2}.items() if k in camkit.get_method(name).options}
    fixed = camkit.compare(model, x, [name], "3", class_idx=1, batch_size=7, **options)
    auto = camkit.compare(model, x, [name], "3", class_idx=1, batch_size="auto", **options)
    torch.testing.assert_close(auto[name][0], fixed[name][0], rtol=1e-5, atol=1e-6)
    assert calls
    assert calls[0] in batching.CANDIDATES
    camkit.compare(model, x, [name], "3", class_idx=1, batch_size="auto", **options)
    assert len(set(calls)) == 1  # the cached choice


def test_front_door_accepts_auto_and_refuses_nonsense() -> None:
    model = tiny_cnn().eval()
    with CAMMethod(model, [model[3]], method="scorecam", batch_size="auto") as cam:
        maps = cam(input_tensor=torch.rand(1, 3, 8, 8), targets=None)
    assert maps.shape == (1, 8, 8)
    assert np.isfinite(maps).all()
    with pytest.raises(ValueError, match="positive int or 'auto'"):
        CAMMethod(model, [model[3]], method="scorecam", batch_size="fast")
    with pytest.raises(ValueError, match="positive int, 'auto' or None"):
        camkit.CAMExtractor(model, "3", method="scorecam", batch_size=0)


def test_native_default_batch_depends_on_the_device() -> None:
    from camkit.engine import default_batch_size

    model = tiny_cnn().eval()
    with camkit.CAMExtractor(model, "3", method="scorecam") as cam:
        assert cam.batch_size == default_batch_size("cpu") == 8  # small batches run fastest on a CPU
    assert default_batch_size("cuda:1") == default_batch_size("mps") == 32
    x = torch.rand(2, 3, 8, 8)
    default = camkit.explain(model, x, method="scorecam", class_idx=1).maps["scorecam"]
    given = camkit.explain(model, x, method="scorecam", class_idx=1, batch_size=3).maps["scorecam"]
    torch.testing.assert_close(default, given)  # the batch changes the speed, not the maps
