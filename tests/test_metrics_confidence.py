"""Confidence metrics: hand-computed drops, TorchCAM's ClassificationMetric, pytorch-grad-cam's classes."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import camkit.methods as ck
from camkit.compat.gradcam.metrics.cam_mult_image import (
    CamMultImageConfidenceChange,
    DropInConfidence,
    IncreaseInConfidence,
)
from camkit.metrics import (
    ClassificationMetric,
    average_drop,
    confidence_change,
    increase_in_confidence,
)
from camkit.targets import ClassifierOutputSoftmaxTarget, ClassTarget
from conftest import RegionMean, all_hooks, sharp_tiny_cnn


def _inputs(n: int, seed: int, size: int = 16) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_hand_computed_drops_on_a_region_model() -> None:
    """Raw score Y = mean over the region of a positive input; O = that mean of map * input."""
    model = RegionMean().eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    region = model.region
    maps = torch.stack([torch.ones(8, 8), region, torch.full((8, 8), 0.5), 1 - region])
    result = confidence_change(model, x, maps, ClassTarget(0))
    # all-ones map and the region's own mask leave the score as it is; 0.5 halves it; the complement zeroes it
    assert result.drop.per_sample.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0], abs=1e-6)
    assert result.drop.mean == pytest.approx(0.375, abs=1e-6)
    assert result.increase.per_sample.tolist() == [0.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(result.change.per_sample, result.masked - result.original)
    torch.testing.assert_close(result.original, model(x)[:, 0])
    # a map of 2 doubles the score: no drop, an increase
    doubled = confidence_change(model, x[:1], torch.full((1, 8, 8), 2.0), ClassTarget(0))
    assert doubled.drop.per_sample.tolist() == [0.0]
    assert doubled.increase.per_sample.tolist() == [1.0]
    assert average_drop(model, x, maps, ClassTarget(0)).mean == pytest.approx(0.375, abs=1e-6)
    assert increase_in_confidence(model, x[:1], torch.full((1, 8, 8), 2.0), ClassTarget(0)).mean == 1.0


def test_all_ones_map_has_zero_drop_on_any_model() -> None:
    model = sharp_tiny_cnn()
    x = _inputs(3, 1)
    result = confidence_change(model, x, torch.ones(3, 16, 16))
    assert result.drop.per_sample.tolist() == [0.0, 0.0, 0.0]
    assert result.increase.mean == 0.0


def test_drop_needs_positive_scores() -> None:
    model = RegionMean().eval()
    x = -torch.rand(2, 3, 8, 8) - 0.1  # negative logit 0
    result = confidence_change(model, x, torch.full((2, 8, 8), 0.5), ClassTarget(0))
    assert bool(torch.isnan(result.drop.per_sample).all())  # undefined, not a misleading number
    assert not bool(torch.isnan(result.change.per_sample).any())
    with pytest.raises(ValueError, match=r"clean score, which is <= 0 for sample\(s\) \[0, 1\]"):
        average_drop(model, x, torch.full((2, 8, 8), 0.5), ClassTarget(0))


def test_model_state_is_restored_and_dropout_off() -> None:
    model = RegionMean().train()
    x = torch.rand(2, 3, 8, 8) + 0.5
    first = confidence_change(model, x, torch.full((2, 8, 8), 0.5), ClassTarget(0))
    assert model.training
    assert model.drop.training
    assert first.drop.per_sample.tolist() == pytest.approx([0.5, 0.5], abs=1e-6)


# TorchCAM 0.5.0 ---------------------------------------------------------------------------------
def test_classification_metric_matches_torchcam() -> None:
    """Same model, Grad-CAM maps of the softmax scores, two batches (top class, then given classes).

    TorchCAM divides by ``Y + 1e-7``; camkit by ``Y`` (with probabilities of ~0.1-0.9 this moves the
    drop by < 1e-6). The maps come from each library's own Grad-CAM (equal within 1e-5).
    """
    tc_metrics = pytest.importorskip("torchcam.metrics")
    tc_methods = pytest.importorskip("torchcam.methods")
    model = sharp_tiny_cnn()
    softmax = functools.partial(torch.softmax, dim=-1)
    batches = [(_inputs(4, 2), None), (_inputs(3, 3), [0, 2, 4])]
    with tc_methods.GradCAM(model, "3") as extractor:
        theirs = tc_metrics.ClassificationMetric(extractor, softmax)
        for x, classes in batches:
            theirs.update(x, classes)
        expected = theirs.summary()
    with ck.GradCAM(model, "3") as extractor:
        ours = ClassificationMetric(extractor, softmax)
        for x, classes in batches:
            ours.update(x, classes)
        got = ours.summary()
    assert got["avg_drop"] == pytest.approx(expected["avg_drop"], abs=1e-5)
    assert got["conf_increase"] == pytest.approx(expected["conf_increase"], abs=1e-5)
    assert 0.05 < got["avg_drop"] < 0.95  # an informative case
    assert ours.total == theirs.total == 7
    assert ours.nan_count == 0
    drops, increases = ours.per_sample()
    assert drops.shape == increases.shape == (7,)
    assert float(drops.mean()) == pytest.approx(got["avg_drop"], abs=1e-6)


def test_functional_average_drop_matches_torchcam_on_its_maps() -> None:
    tc_metrics = pytest.importorskip("torchcam.metrics")
    tc_methods = pytest.importorskip("torchcam.methods")
    model = sharp_tiny_cnn()
    softmax = functools.partial(torch.softmax, dim=-1)
    x = _inputs(5, 4)
    with tc_methods.GradCAM(model, "3") as extractor:
        scores = softmax(model(x))
        classes = scores.argmax(dim=1).tolist()
        cam = extractor.fuse_cams(extractor(classes, scores)).detach().clone()
        metric = tc_metrics.ClassificationMetric(extractor, softmax)
        metric.update(x)
        expected = metric.summary()
    result = confidence_change(model, x, cam)  # default target: the top class's probability
    assert result.drop.mean == pytest.approx(expected["avg_drop"], abs=1e-5)
    assert result.increase.mean == pytest.approx(expected["conf_increase"], abs=1e-7)


def test_classification_metric_lifecycle() -> None:
    model = RegionMean()
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), model)
    conv.train()
    hooks = all_hooks(conv)
    with ck.GradCAM(conv, "0") as extractor:
        metric = ClassificationMetric(extractor, functools.partial(torch.softmax, dim=-1))
        with pytest.raises(ValueError, match=r"call update\(\)"):
            metric.summary()
        with pytest.raises(ValueError, match="either class_idx or targets"):
            metric.update(torch.rand(1, 3, 8, 8), 0, targets=ClassTarget(0))
        metric.update(torch.rand(2, 3, 8, 8), targets=ClassTarget([0, 1]))
        assert metric.total == 2
        metric.reset()
        assert metric.total == 0
        assert metric.per_sample()[0].numel() == 0
    assert conv.training
    assert model.drop.training
    assert all_hooks(conv) == hooks
    assert all(p.grad is None for p in conv.parameters())


# pytorch-grad-cam 1.5.7 -------------------------------------------------------------------------
@pytest.mark.parametrize("camkit_targets", [False, True])
def test_cam_mult_image_matches_pytorch_grad_cam(camkit_targets: bool) -> None:
    """Same numpy maps at input size and per-sample softmax targets: equal values.

    pytorch-grad-cam's targets (plain callables, called per 1-D output row) and camkit's batched
    targets give the same numbers.
    """
    pgc_cmi = pytest.importorskip("pytorch_grad_cam.metrics.cam_mult_image")
    pgc_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model = sharp_tiny_cnn()
    x = _inputs(4, 5)
    cams = np.random.default_rng(0).random((4, 16, 16), dtype=np.float32)
    classes = [0, 1, 3, 4]
    theirs_targets = [pgc_targets.ClassifierOutputSoftmaxTarget(c) for c in classes]
    ours_targets = [ClassifierOutputSoftmaxTarget(c) for c in classes] if camkit_targets else theirs_targets
    pairs = [
        (pgc_cmi.CamMultImageConfidenceChange(), CamMultImageConfidenceChange()),
        (pgc_cmi.DropInConfidence(), DropInConfidence()),
        (pgc_cmi.IncreaseInConfidence(), IncreaseInConfidence()),
    ]
    for theirs, ours in pairs:
        expected = theirs(x, cams, theirs_targets, model)
        got = ours(x, cams, ours_targets, model)
        assert isinstance(got, np.ndarray)  # numpy, as the peer's
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert float(got.mean()) == pytest.approx(float(np.mean(expected)), abs=1e-6)
    changes = pgc_cmi.CamMultImageConfidenceChange()(x, cams, theirs_targets, model)
    assert np.abs(changes).max() > 1e-2  # an informative case
    expected_raw, expected_vis = pgc_cmi.CamMultImageConfidenceChange()(
        x, cams, theirs_targets, model, return_visualization=True, return_diff=False
    )
    got_raw, got_vis = CamMultImageConfidenceChange()(
        x, cams, ours_targets, model, return_visualization=True, return_diff=False
    )
    np.testing.assert_allclose(got_raw, expected_raw, atol=1e-6)
    np.testing.assert_allclose(got_vis.numpy(), expected_vis.numpy(), atol=0)


def test_per_sample_target_list_length_is_checked() -> None:
    with pytest.raises(ValueError, match="targets has 1 entries but the batch has 2"):
        CamMultImageConfidenceChange()(_inputs(2, 6), torch.ones(2, 16, 16), [ClassTarget(0)], sharp_tiny_cnn())


class _FakeExtractor:
    """The duck type ClassificationMetric needs: ``model``, ``__call__`` and ``fuse_cams``.

    Its maps: 0.5 everywhere at 4x4 (so the raw region score halves), NaN for sample 1.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.calls: list[object] = []

    def __call__(self, class_idx=None, scores=None, normalized=True, retain_graph=False, *, targets=None):  # type: ignore[no-untyped-def]
        self.calls.append(class_idx if targets is None else targets)
        cam = torch.full((scores.shape[0], 4, 4), 0.5)
        cam[1] = float("nan")
        return [cam]

    @staticmethod
    def fuse_cams(cams: list[Tensor]) -> Tensor:
        return cams[0]


def test_classification_metric_skips_nan_maps_and_counts_them() -> None:
    model = RegionMean().eval()
    extractor = _FakeExtractor(model)
    metric = ClassificationMetric(extractor)  # raw logits: logit 0 is positive for positive inputs
    x = torch.rand(3, 3, 8, 8) + 0.5
    metric.update(x, 0)
    assert extractor.calls == [0]
    assert metric.total == 2
    assert metric.nan_count == 1
    assert metric.summary() == pytest.approx({"avg_drop": 0.5, "conf_increase": 0.0}, abs=1e-6)
    metric.update(x)  # top class: logit 0 (> 0 = logit 1) for every sample
    assert extractor.calls[-1] == [0, 0, 0]
    with pytest.raises(ValueError, match="clean score, which is <= 0"):
        metric.update(-x, 0)  # raw negative logits: the drop is undefined
    assert metric.total == 4  # the failed update added nothing
    assert metric.nan_count == 2
