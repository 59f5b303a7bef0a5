"""Deletion and insertion (RISE): hand-computed curves, TorchCAM 0.5.0 parity, batching, state."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from camkit.metrics import deletion, gaussian_blur, insertion
from camkit.targets import ClassProbabilityTarget, ClassTarget
from conftest import sharp_tiny_cnn


class RegionMean(nn.Module):
    """Logit 0 is the mean of the input over a fixed region (all channels), logit 1 is 0.

    A Dropout in front makes any forward run in train mode visible.
    """

    def __init__(self, region: Tensor) -> None:
        super().__init__()
        self.register_buffer("region", region.float())
        self.drop = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(x)
        score = (x * self.region).sum(dim=(1, 2, 3)) / (self.region.sum() * x.shape[1])
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def _region() -> Tensor:
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[2:6, 2:6] = True  # 16 of the 64 pixels
    return region


@pytest.fixture
def region_model() -> RegionMean:
    return RegionMean(_region()).eval()


def test_perfect_map_best_and_reversed_map_worst_deletion(region_model: RegionMean) -> None:
    """Deleting the region first empties the score after 16 pixels; deleting it last keeps it for 48."""
    x = torch.ones(2, 3, 8, 8)
    perfect = _region().float()
    maps = torch.stack([perfect, 1 - perfect])
    result = deletion(region_model, x, maps, ClassTarget(0), steps=8, baseline=0.0)
    # counts 0, 8, ..., 64: the perfect map deletes 8 region pixels per step
    assert result.curve[0].tolist() == [1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert result.curve[1].tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0]
    # trapezoids of width 1/8: (0.75 + 0.25) / 8 and (6 + 0.75 + 0.25) / 8
    assert result.per_sample.tolist() == pytest.approx([0.125, 0.875])
    assert result.mean == pytest.approx(0.5)
    assert result.fractions.tolist() == pytest.approx([k / 8 for k in range(9)])
    # any other map lies between the two
    generator = torch.Generator().manual_seed(0)
    others = torch.rand(6, 8, 8, generator=generator)
    middle = deletion(region_model, torch.ones(6, 3, 8, 8), others, ClassTarget(0), steps=8, baseline=0.0)
    assert bool(((middle.per_sample > 0.125) & (middle.per_sample < 0.875)).all())


def test_perfect_map_best_and_reversed_map_worst_insertion(region_model: RegionMean) -> None:
    x = torch.ones(2, 3, 8, 8)
    perfect = _region().float()
    result = insertion(region_model, x, torch.stack([perfect, 1 - perfect]), ClassTarget(0), steps=8, baseline=0.0)
    assert result.curve[0].tolist() == [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert result.curve[1].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0]
    assert result.per_sample.tolist() == pytest.approx([0.875, 0.125])


def test_default_target_is_the_predicted_probability(region_model: RegionMean) -> None:
    x = torch.rand(3, 3, 8, 8)
    result = deletion(region_model, x, torch.rand(3, 8, 8), steps=4)
    probabilities = torch.softmax(region_model(x), dim=1)
    torch.testing.assert_close(result.curve[:, 0], probabilities.max(dim=1).values)
    # an int is the probability of that class, for every sample
    by_class = deletion(region_model, x, torch.rand(3, 8, 8), 1, steps=4)
    torch.testing.assert_close(by_class.curve[:, 0], probabilities[:, 1])


def test_constant_baseline_value_and_tensor_baseline(region_model: RegionMean) -> None:
    x = torch.ones(1, 3, 8, 8)
    perfect = _region().float()[None]
    half = deletion(region_model, x, perfect, ClassTarget(0), steps=2, baseline=0.5)
    assert half.curve[0].tolist() == [1.0, 0.5, 0.5]  # the region (first 32 pixels) becomes 0.5
    tensor = deletion(region_model, x, perfect, ClassTarget(0), steps=2, baseline=torch.full((3, 1, 1), 0.5))
    torch.testing.assert_close(tensor.curve, half.curve)
    called = deletion(region_model, x, perfect, ClassTarget(0), steps=2, baseline=lambda t: t * 0.5)
    torch.testing.assert_close(called.curve, half.curve)


def test_gaussian_blur_matches_scipy() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 3, 12, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = gaussian_blur(x, sigma=2.0, kernel_size=11)
    # scipy's radius is int(truncate * sigma + 0.5) = 5; 'nearest' is edge replication
    ref = np.stack(
        [
            ndimage.gaussian_filter(x[i, c].numpy(), 2.0, mode="nearest", truncate=2.5)
            for i in range(2)
            for c in range(3)
        ]
    )
    np.testing.assert_allclose(ours.numpy().reshape(6, 12, 9), ref, atol=1e-12)
    assert gaussian_blur(torch.full((1, 1, 5, 5), 3.0)).allclose(torch.full((1, 1, 5, 5), 3.0))


def test_insertion_default_baseline_is_the_blurred_input(region_model: RegionMean) -> None:
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    result = insertion(region_model, x, torch.rand(2, 8, 8), ClassTarget(0), steps=4)
    expected = region_model(gaussian_blur(x))[:, 0]
    torch.testing.assert_close(result.curve[:, 0], expected)
    torch.testing.assert_close(result.curve[:, -1], region_model(x)[:, 0])


def test_batched_forwards_and_batch_size_invariance(region_model: RegionMean) -> None:
    calls: list[int] = []
    region_model.register_forward_hook(lambda _m, inp, _o: calls.append(inp[0].shape[0]))
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(4))
    big = deletion(region_model, x, maps, ClassTarget(0), steps=5, batch_size=64)
    assert calls == [3, 15]  # one clean forward, one forward for all 3 x 5 perturbed inputs
    calls.clear()
    small = deletion(region_model, x, maps, ClassTarget(0), steps=5, batch_size=4)
    assert calls == [3, 4, 4, 4, 3]
    torch.testing.assert_close(big.curve, small.curve)


def test_state_restored_and_eval_mode_used(region_model: RegionMean) -> None:
    region_model.train()
    x = torch.rand(2, 3, 8, 8)
    maps = torch.rand(2, 8, 8)
    first = deletion(region_model, x, maps, ClassTarget(0), steps=4)
    second = deletion(region_model, x, maps, ClassTarget(0), steps=4)
    assert region_model.training
    assert region_model.drop.training
    torch.testing.assert_close(first.curve, second.curve)  # dropout was off
    assert x.grad is None


def test_maps_in_every_form_give_the_same_result(region_model: RegionMean) -> None:
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    small = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(6))
    reference = deletion(region_model, x, small, ClassTarget(0), steps=4)
    for form in (small.numpy(), [small], small.unsqueeze(1), [small.numpy()]):
        got = deletion(region_model, x, form, ClassTarget(0), steps=4)  # type: ignore[arg-type]
        torch.testing.assert_close(got.curve, reference.curve)
    upsampled = torch.nn.functional.interpolate(small[:, None], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(
        deletion(region_model, x, upsampled[:, 0], ClassTarget(0), steps=4).curve, reference.curve
    )


def test_nan_map_is_refused_naming_the_sample(region_model: RegionMean) -> None:
    maps = torch.rand(2, 8, 8)
    maps[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN/inf values in sample\(s\) \[1\]"):
        deletion(region_model, torch.rand(2, 3, 8, 8), maps, ClassTarget(0), steps=4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, "steps must be an int >= 1, got 0"),
        ({"steps": 2.5}, TypeError, "steps must be an int"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
        ({"baseline": "noise"}, ValueError, "baseline must be 'blur'"),
        ({"baseline": torch.zeros(2, 2)}, ValueError, r"does not broadcast to the input shape \(2, 3, 8, 8\)"),
        ({"maps": torch.rand(3, 8, 8)}, ValueError, r"3 map\(s\) but the input batch has 2"),
        ({"maps": torch.rand(2, 2, 8, 8)}, ValueError, r"\(N, \*S\) or \(N, 1, \*S\)"),
        ({"maps": "cam"}, TypeError, "maps must be a tensor"),
        ({"targets": [0, 1, 0]}, ValueError, "targets has 3 entries but the batch has 2"),
        ({"targets": 1.5}, TypeError, "targets must be"),
        ({"inputs": torch.rand(8, 8)}, ValueError, r"add a batch dimension"),
        ({"targets": lambda out, rows=None: out}, ValueError, r"one scalar per row"),
        ({"sigma": 0.0, "baseline": "blur"}, ValueError, "sigma must be > 0"),
        ({"kernel_size": 4, "baseline": "blur"}, ValueError, "kernel_size must be an odd int"),
    ],
)
def test_errors_name_the_argument(region_model: RegionMean, kwargs: dict, error: type, match: str) -> None:
    args = {"inputs": torch.rand(2, 3, 8, 8), "maps": torch.rand(2, 8, 8), "targets": 0}
    args.update(kwargs)
    inputs, maps, targets = args.pop("inputs"), args.pop("maps"), args.pop("targets")
    with pytest.raises(error, match=match):
        deletion(region_model, inputs, maps, targets, **args)


# TorchCAM 0.5.0 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [[1, 3, 0], None])
def test_matches_torchcam_deletion_insertion(classes: list[int] | None) -> None:
    """Same maps, softmax scores, zero baseline and steps dividing the 256 positions: equal AUCs.

    TorchCAM's points are ``range(0, P, ceil(P / steps)) + [P]``; camkit's are ``floor(k P / steps)``.
    They coincide when ``steps`` divides ``P``; otherwise TorchCAM's last interval is shorter (both
    integrate over the fractions actually perturbed). TorchCAM uses one baseline for both curves,
    so camkit's insertion is given ``baseline=0.0`` here (its default is the blurred input).
    """
    tc_metrics = pytest.importorskip("torchcam.metrics")
    tc_methods = pytest.importorskip("torchcam.methods")
    model = sharp_tiny_cnn()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    softmax = functools.partial(torch.softmax, dim=-1)
    with tc_methods.GradCAM(model, "3") as extractor:
        scores = softmax(model(x))
        chosen = scores.argmax(dim=1).tolist() if classes is None else classes
        cam = extractor.fuse_cams(extractor(chosen, scores)).detach().clone()
        metric = tc_metrics.DeletionInsertionMetric(extractor, softmax, steps=16, batch_size=7)
        metric.update(x, classes)
        theirs = metric.summary()
    target = ClassProbabilityTarget(chosen)
    ours_del = deletion(model, x, cam, target, steps=16, baseline=0.0, batch_size=7)
    ours_ins = insertion(model, x, cam, target, steps=16, baseline=0.0, batch_size=7)
    assert ours_del.mean == pytest.approx(theirs["deletion_auc"], abs=1e-5)
    assert ours_ins.mean == pytest.approx(theirs["insertion_auc"], abs=1e-5)
    # the curves are informative: deletion and insertion differ
    assert abs(ours_del.mean - ours_ins.mean) > 1e-3
