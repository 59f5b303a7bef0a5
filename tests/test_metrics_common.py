"""What every metric shares: hooks left alone, target forms, map forms, result types, devices."""

from __future__ import annotations

import pytest
import torch

import camkit.methods as ck
from camkit import metrics
from camkit.metrics import CurveResult, MetricResult
from camkit.targets import ClassifierOutputTarget, ClassProbabilityTarget, ClassTarget
from conftest import sharp_tiny_cnn, tiny_cnn


def _x(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


ALL = [
    lambda m, x, c, t: metrics.confidence_change(m, x, c, t).change,
    lambda m, x, c, t: metrics.deletion(m, x, c, t, steps=4),
    lambda m, x, c, t: metrics.insertion(m, x, c, t, steps=4),
    lambda m, x, c, t: metrics.road(m, x, c, t, percentiles=[30, 60], noise=0.0),
    lambda m, x, c, t: metrics.road_combined(m, x, c, t, percentiles=[30, 60], noise=0.0),
]


@pytest.mark.parametrize("metric", ALL)
def test_metric_forwards_do_not_reach_an_attached_extractor(metric) -> None:  # type: ignore[no-untyped-def]
    """A metric run between an extractor's forward and its call leaves the captured state alone."""
    model = sharp_tiny_cnn()
    x1 = _x(2, 1)
    with ck.GradCAM(model, "3") as reference:
        expected = reference([0, 1], model(x1))[0]
    with ck.GradCAM(model, "3") as extractor:
        scores = model(x1)
        metric(model, _x(3, 2), torch.rand(3, 16, 16), 0)
        got = extractor([0, 1], scores)[0]
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("metric", ALL)
def test_target_forms_agree(metric) -> None:  # type: ignore[no-untyped-def]
    """An int, a list of ints, a tensor of ints and ClassProbabilityTarget are the same target."""
    model = sharp_tiny_cnn()
    x = _x(2, 3)
    cams = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(4))
    reference = metric(model, x, cams, ClassProbabilityTarget([2, 2])).per_sample
    assert not bool(torch.isnan(reference).any())
    for form in (2, [2, 2], torch.tensor([2, 2])):
        torch.testing.assert_close(metric(model, x, cams, form).per_sample, reference)
    # raw scores: camkit's batched target and a per-sample list of row-wise targets agree too
    logits = metric(model, x, cams, ClassTarget(1)).per_sample
    torch.testing.assert_close(metric(model, x, cams, [ClassifierOutputTarget(1)] * 2).per_sample, logits)
    torch.testing.assert_close(metric(model, x, cams, [lambda row: row[1]] * 2).per_sample, logits)


def test_predicted_class_is_the_default_target() -> None:
    model = sharp_tiny_cnn()
    x = _x(3, 5)
    cams = torch.rand(3, 16, 16)
    predicted = model(x).argmax(dim=1).tolist()
    for metric in ALL:
        torch.testing.assert_close(
            metric(model, x, cams, None).per_sample, metric(model, x, cams, predicted).per_sample
        )


def test_extractor_output_of_two_layers_is_fused() -> None:
    model = sharp_tiny_cnn()
    x = _x(2, 6)
    with ck.GradCAM(model, ["0", "3"]) as extractor:
        cams = extractor([0, 1], model(x))
    fused = ck.GradCAM.fuse_cams(cams)
    torch.testing.assert_close(
        metrics.deletion(model, x, cams, [0, 1], steps=4).curve,
        metrics.deletion(model, x, fused, [0, 1], steps=4).curve,
    )


def test_results_are_dataclasses_with_float_means() -> None:
    model = sharp_tiny_cnn()
    result = metrics.deletion(model, _x(2, 7), torch.rand(2, 16, 16), steps=4)
    assert isinstance(result, CurveResult)
    assert isinstance(result, MetricResult)
    assert isinstance(result.mean, float)
    assert result.mean == pytest.approx(float(result.per_sample.mean()))
    with pytest.raises(AttributeError):
        result.mean = 0.0  # type: ignore[misc]


def test_public_api_is_explicit() -> None:
    assert sorted(metrics.__all__) == sorted(set(metrics.__all__))
    for name in metrics.__all__:
        assert hasattr(metrics, name), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_run_on_the_model_device() -> None:
    model = sharp_tiny_cnn()
    device = torch.device("cuda")
    x = _x(2, 8)
    cams = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(9))
    gpu_model = tiny_cnn().to(device).eval()
    gpu_model.load_state_dict(model.state_dict())
    for metric in ALL:
        cpu = metric(model, x, cams, [0, 3]).per_sample
        gpu = metric(gpu_model, x.to(device), cams.to(device), [0, 3]).per_sample
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-4)
    boxes = torch.tensor([[0, 0, 8, 8], [4, 4, 16, 16]], device=device)
    assert metrics.energy_pointing_game(cams.to(device), boxes=boxes).per_sample.device.type == "cuda"
