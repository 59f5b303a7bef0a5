"""Known answers of the metric families on tiny linear models and hand-made maps, and their input errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from camkit import metrics
from camkit.targets import ClassTarget

LOGIT = ClassTarget(0)


def _linear(weights: list[float]) -> nn.Module:
    """Logit 0 is w . x (no bias), logit 1 is 0."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(len(weights), 2, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.tensor(weights), torch.zeros(len(weights))]))
    return model


def _grid(values: list[float]) -> Tensor:
    side = math.isqrt(len(values))
    return torch.tensor(values).view(1, side, side)


# faithfulness -------------------------------------------------------------------------------------
def test_faithfulness_correlation_is_plus_and_minus_one_for_the_exact_attribution() -> None:
    model = _linear([float(i) for i in range(1, 17)])
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.5
    exact = model[1].weight[0].detach().view(1, 4, 4) * x[:, 0]  # w_i x_i: the logit lost by zeroing pixel i
    generator = torch.Generator().manual_seed(1)
    plus = metrics.faithfulness_correlation(model, x, exact, LOGIT, nr_runs=30, subset_size=5, generator=generator)
    minus = metrics.faithfulness_correlation(model, x, -exact, LOGIT, nr_runs=30, subset_size=5, generator=generator)
    torch.testing.assert_close(plus.per_sample, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(minus.per_sample, -torch.ones(2, dtype=torch.float64))


def test_pixel_flipping_curve_by_hand() -> None:
    """w = (1, 2, 3, 4), x = 1, most relevant pixel first: 10, 9, 7, 4, 0; area 0.25 * 25 = 6.25."""
    model = _linear([1.0, 2.0, 3.0, 4.0])
    result = metrics.pixel_flipping(model, torch.ones(1, 1, 2, 2), _grid([4.0, 3.0, 2.0, 1.0]), LOGIT)
    assert result.curve.tolist() == [[10.0, 9.0, 7.0, 4.0, 0.0]]
    assert result.mean == pytest.approx(6.25)
    two = metrics.pixel_flipping(model, torch.ones(1, 1, 2, 2), _grid([4.0, 3.0, 2.0, 1.0]), LOGIT, features_in_step=3)
    assert two.curve.tolist() == [[10.0, 4.0, 0.0]]
    assert two.fractions.tolist() == [0.0, 0.75, 1.0]


def test_monotonicity_by_hand() -> None:
    """Least relevant first from a zero image: the logit adds w_i per pixel; a negative weight breaks monotonicity."""
    x = torch.ones(1, 1, 2, 2)
    rising = metrics.monotonicity(_linear([1.0, 2.0, 3.0, 4.0]), x, _grid([1.0, 2.0, 3.0, 4.0]), LOGIT)
    assert rising.curve.tolist() == [[1.0, 3.0, 6.0, 10.0]]
    assert rising.mean == 1.0
    broken = metrics.monotonicity(_linear([1.0, -2.0, 3.0, 4.0]), x, _grid([1.0, 2.0, 3.0, 4.0]), LOGIT)
    assert broken.curve.tolist() == [[1.0, -1.0, 2.0, 6.0]]
    assert broken.mean == 0.0


def test_infidelity_by_hand() -> None:
    """The exact attribution of a linear logit has infidelity 0; twice it errs by I . w: (1^2 + 10^2) / 2."""
    model = _linear([1.0, 2.0, 3.0, 4.0])
    shifts = torch.stack([torch.tensor([1.0, 0, 0, 0]), torch.ones(4)]).view(1, 2, 1, 2, 2)
    x = torch.rand(1, 1, 2, 2)
    weights = _grid([1.0, 2.0, 3.0, 4.0])
    assert metrics.infidelity(model, x, weights, LOGIT, perturbations=shifts).mean == pytest.approx(0.0, abs=1e-10)
    assert metrics.infidelity(model, x, 2 * weights, LOGIT, perturbations=shifts).mean == pytest.approx(50.5)
    random = metrics.infidelity(model, x, weights, LOGIT, patch_size=1, generator=torch.Generator().manual_seed(0))
    assert random.mean == pytest.approx(0.0, abs=1e-10)


def _patch_case() -> tuple[nn.Module, Tensor, Tensor]:
    """All-ones weights and input on 4 x 4; patch sums rank top-left, top-right, bottom-left, bottom-right."""
    cam = torch.tensor([[4.0, 4, 3, 3], [4, 4, 3, 3], [2, 2, 1, 1], [2, 2, 1, 1]]).unsqueeze(0)
    return _linear([1.0] * 16), torch.ones(1, 1, 4, 4), cam


def test_region_perturbation_and_selectivity_by_hand() -> None:
    model, x, cam = _patch_case()
    aopc = metrics.region_perturbation(model, x, cam, LOGIT, patch_size=2, baseline=0.0)
    assert aopc.curve.tolist() == [[0.0, 4.0, 8.0, 12.0, 16.0]]  # each patch removes 4 from the logit
    assert aopc.mean == pytest.approx(8.0)
    short = metrics.region_perturbation(model, x, cam, LOGIT, patch_size=2, baseline=0.0, regions_evaluation=2)
    assert short.mean == pytest.approx((0 + 4 + 8) / 3)
    select = metrics.selectivity(model, x, cam, LOGIT, patch_size=2)
    assert select.curve.tolist() == [[16.0, 12.0, 8.0, 4.0, 0.0]]
    assert select.mean == pytest.approx(8.0)


def test_region_perturbation_pads_like_quantus() -> None:
    """A 5-wide image with patch 2 has border patches of one column: the padding is split floor/ceil."""
    model, cam = _linear([1.0] * 25), torch.zeros(1, 5, 5)
    cam[0, :, 4] = 1.0  # the last column is a patch column of its own (padding 0 before, 1 after)
    result = metrics.region_perturbation(model, torch.ones(1, 1, 5, 5), cam, LOGIT, patch_size=2, baseline=0.0)
    assert result.curve[0, 1:4].tolist() == [2.0, 4.0, 5.0]  # rows 0-1, 2-3, then row 4 of column 4


def test_irof_by_hand() -> None:
    """Four equal segments each holding a quarter of the logit: the normalized curve falls linearly to 0, IROF = 0.5."""
    model, x, cam = _patch_case()
    result = metrics.irof(model, x, cam, LOGIT, segments=2, baseline=0.0)
    assert result.curve.tolist() == [[1.0, 0.75, 0.5, 0.25, 0.0]]
    assert result.mean == pytest.approx(0.5)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :, 2:] = 7  # two segments with arbitrary labels; cam mean 3 (left) > 2 (right)
    halves = metrics.irof(model, x, cam, LOGIT, segments=labels, baseline=0.0)
    assert halves.curve.tolist() == [[1.0, 0.5, 0.0]]


def test_average_gain_and_adcc_by_hand() -> None:
    """Y = sigmoid(0) = 0.5, O = sigmoid(2): gain (O - Y) / (1 - Y) = tanh(1); ADCC = 3 / (1 + 2 + 1)."""
    model = _linear([1.0, 1.0, 1.0, 1.0])
    x = torch.tensor([1.0, 1.0, -1.0, -1.0]).view(1, 1, 2, 2)
    cam = _grid([1.0, 1.0, 0.0, 0.0])
    assert metrics.average_gain(model, x, cam, 0).mean == pytest.approx(math.tanh(1.0))

    def explain(inputs: Tensor, classes: Tensor) -> Tensor:  # always the same map: coherency 1
        return cam.expand(inputs.shape[0], 2, 2)

    assert metrics.coherency(model, x, cam, explain, 0).mean == pytest.approx(1.0)
    assert metrics.adcc(model, x, cam, explain, 0).mean == pytest.approx(0.75)


def test_arcc_by_hand() -> None:
    """The logit is 100 x_p for the map's top pixel p, the only non-zero pixel: MoRF imputes it to 0 (-100), LeRF
    never removes it (0), so ROAD combined is 50 and its scaled term 1; the map explains itself (coherency 1).
    ARCC = 3 / (1 + 1 / (1 - mean(L)) + 1); a model blind to its input has ROAD 0 and ARCC ~ 0."""
    cam = (torch.arange(16, dtype=torch.float32) / 32).view(1, 4, 4)
    cam[0, 1, 2] = 1.0
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 2] = 1.0
    weights = [0.0] * 16
    weights[6] = 100.0
    model = _linear(weights)

    def explain(inputs: Tensor, classes: Tensor) -> Tensor:
        return cam.expand(inputs.shape[0], 4, 4)

    expected = 3 / (1 + 1 / (1 - cam.mean().item()) + 1)
    got = metrics.arcc(model, x, cam, explain, 0, noise=0.0, logits=True)
    assert got.mean == pytest.approx(expected, abs=1e-6)
    blind = metrics.arcc(_linear([0.0] * 16), x, cam, explain, 0, noise=0.0, logits=True)
    assert blind.mean == pytest.approx(3e-8, rel=1e-3)


# robustness ---------------------------------------------------------------------------------------
def _identity(inputs: Tensor, classes: Tensor) -> Tensor:
    return inputs[:, 0]


def test_sensitivities_and_lipschitz_by_hand() -> None:
    model, x = _linear([1.0] * 16), torch.rand(1, 1, 4, 4)
    noise = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.2)]).unsqueeze(0)  # ||.||_2 = 0.4, 0.8
    assert metrics.max_sensitivity(model, x, _identity, 0, noise=noise).mean == pytest.approx(0.8)
    assert metrics.avg_sensitivity(model, x, _identity, 0, noise=noise).mean == pytest.approx(0.6)
    norm = float(x.norm())
    assert metrics.max_sensitivity(model, x, _identity, 0, noise=noise, normalise=True).mean == pytest.approx(
        0.8 / norm
    )
    tripled = metrics.local_lipschitz_estimate(model, x, lambda i, c: 3 * i[:, 0], 0, noise=noise)
    assert tripled.mean == pytest.approx(3.0)
    drawn = metrics.max_sensitivity(model, x, _identity, 0, nr_samples=50, radius=0.1)
    assert 0 < drawn.mean <= 0.1 * 4 + 1e-6  # the L2 norm of a perturbation inside the L-inf ball of 0.1


def test_robustness_takes_a_camkit_extractor() -> None:
    from camkit.methods import GradCAM

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2)).eval()
    x, noise = torch.rand(2, 1, 4, 4), 0.05 * torch.randn(2, 3, 1, 4, 4)
    with GradCAM(model, "1") as extractor:
        ours = metrics.avg_sensitivity(model, x, extractor, [0, 1], noise=noise)

        def by_hand(inputs: Tensor, classes: Tensor) -> Tensor:
            return extractor(classes.tolist(), model(inputs))[0]

        expected = metrics.avg_sensitivity(model, x, by_hand, [0, 1], noise=noise)
    torch.testing.assert_close(ours.per_sample, expected.per_sample)
    assert model.training is False
    assert all(p.grad is None for p in model.parameters())


# localisation -------------------------------------------------------------------------------------
CAM = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])


def test_localisation_by_hand() -> None:
    right = torch.tensor([[[0, 1], [0, 1]]])
    assert metrics.relevance_mass_accuracy(CAM, masks=right).mean == pytest.approx(7 / 8)
    assert metrics.relevance_rank_accuracy(CAM, masks=right).mean == 1.0
    assert metrics.relevance_rank_accuracy(CAM, masks=torch.tensor([[[1, 1], [0, 0]]])).mean == 0.5
    diagonal = torch.tensor([[[0, 1], [1, 0]]])
    assert metrics.top_k_intersection(CAM, masks=diagonal, k=2).mean == 0.5
    assert metrics.top_k_intersection(CAM, masks=diagonal, k=2, concept_influence=True).mean == 1.0
    signed = torch.tensor([[[1.0, -3.0], [0.0, 4.0]]])
    corner = torch.tensor([[[0, 0], [0, 1]]])
    assert metrics.attribution_localisation(signed, masks=corner).mean == pytest.approx(0.8)
    assert metrics.attribution_localisation(signed, masks=corner, weighted=True).mean == pytest.approx(3.2)
    assert metrics.attribution_localisation(signed, masks=corner, positive_only=False).mean == pytest.approx(2.0)
    assert metrics.auc(CAM, masks=right).mean == 1.0
    assert metrics.auc(CAM, masks=torch.tensor([[[1, 0], [1, 0]]])).mean == 0.0
    assert metrics.auc(torch.ones(1, 2, 2), masks=right).mean == 0.5  # all tied: chance
    assert math.isnan(metrics.auc(CAM, masks=torch.ones(1, 2, 2)).mean)  # no negatives
    boxes = metrics.relevance_mass_accuracy(CAM, boxes=torch.tensor([[1, 0, 2, 2]]))
    assert boxes.mean == pytest.approx(7 / 8)


# complexity ---------------------------------------------------------------------------------------
def test_complexity_by_hand() -> None:
    one_hot, flat = torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.5)
    one_hot[0, 1, 2] = 3.0
    assert metrics.sparseness(one_hot).mean == pytest.approx(15 / 16)
    assert metrics.sparseness(flat).mean == pytest.approx(0.0)
    assert metrics.sparseness(-one_hot).mean == pytest.approx(15 / 16)  # absolute values
    assert metrics.complexity(one_hot).mean == 0.0
    assert metrics.complexity(flat).mean == pytest.approx(math.log(16))
    assert math.isnan(metrics.complexity(torch.zeros(1, 2, 2)).mean)
    assert metrics.effective_complexity(flat).mean == 16.0
    assert metrics.effective_complexity(torch.tensor([[[1e-6, 1.0], [0.5, 0.0]]]), eps=0.6).mean == 1.0
    assert metrics.effective_complexity(torch.tensor([[[2e-6, 1.0]]]).unsqueeze(1), normalise=False).mean == 1.0
    assert metrics.l1_complexity(flat).mean == 0.5


# input errors -------------------------------------------------------------------------------------
def test_errors_name_the_fix() -> None:
    model, x, cam = _patch_case()
    bad = cam.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN/inf.*torch.isfinite"):
        metrics.pixel_flipping(model, x, bad, LOGIT)
    with pytest.raises(ValueError, match="NaN/inf"):
        metrics.sparseness(bad)
    with pytest.raises(ValueError, match="subset_size must be smaller than the 16 pixels"):
        metrics.faithfulness_correlation(model, x, cam, LOGIT, subset_size=16)
    with pytest.raises(ValueError, match=r"subsets must hold pixel indices in \[0, 16\)"):
        metrics.faithfulness_correlation(model, x, cam, LOGIT, subsets=torch.full((1, 2, 3), 16))
    with pytest.raises(ValueError, match="features_in_step must be an int >= 1"):
        metrics.monotonicity(model, x, cam, LOGIT, features_in_step=0)
    with pytest.raises(ValueError, match="order must be 'morf', 'lerf' or 'random'"):
        metrics.region_perturbation(model, x, cam, LOGIT, order="first")
    with pytest.raises(ValueError, match="baseline must be a number, 'min', 'max', 'mean', 'uniform'"):
        metrics.selectivity(model, x, cam, LOGIT, baseline="black")
    with pytest.raises(ValueError, match=r"segments must be integer labels \(N, \*S\)"):
        metrics.irof(model, x, cam, LOGIT, segments=torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"perturbations must be \(N, M, C, \*S\)"):
        metrics.infidelity(model, x, cam, LOGIT, perturbations=torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="pass a smaller k"):
        metrics.top_k_intersection(cam, masks=cam > 2)
    with pytest.raises(ValueError, match="is empty"):
        metrics.relevance_mass_accuracy(cam, masks=torch.zeros(1, 4, 4))
    with pytest.raises(TypeError, match="explain must be a camkit extractor"):
        metrics.max_sensitivity(model, x, "gradcam", 0, nr_samples=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="targets of a robustness metric must be class indices"):
        metrics.avg_sensitivity(model, x, _identity, LOGIT, nr_samples=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"noise must be \(N, M, C, \*S\)"):
        metrics.local_lipschitz_estimate(model, x, _identity, 0, noise=torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="radius must be > 0"):
        metrics.max_sensitivity(model, x, _identity, 0, radius=0)
    with pytest.raises(ValueError, match="one per sample"):
        metrics.coherency(model, x, cam, _identity, [0, 1])


# batched paths agree with the plain ones -----------------------------------------------------------


def test_faithfulness_correlation_draws_the_same_subsets_however_many_runs_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The subsets are drawn several runs at a time: the same stream, so the same values, as one run at a time."""
    from camkit.metrics import _faithfulness

    model = _linear([float(i) for i in range(16)])
    x, cam = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.rand(3, 4, 4)

    def run() -> Tensor:
        generator = torch.Generator().manual_seed(4)
        return metrics.faithfulness_correlation(
            model, x, cam, LOGIT, nr_runs=7, subset_size=5, generator=generator
        ).per_sample

    together = run()
    for values in (1, 3 * 16 * 2):  # one run at a time (chunk 1), two runs at a time (the last one alone)
        monkeypatch.setattr(_faithfulness, "_DRAW_VALUES", values)
        torch.testing.assert_close(run(), together, rtol=0, atol=0)


@pytest.mark.parametrize("metric", ["pixel_flipping", "monotonicity", "region_perturbation", "selectivity"])
def test_a_number_baseline_scores_as_the_same_tensor_baseline(metric: str) -> None:
    """A number fills in place; a tensor baseline goes through ``where``: the same curves."""
    generator = torch.Generator().manual_seed(2)
    model = _linear(torch.randn(16, generator=generator).tolist())
    x, cam = torch.rand(2, 1, 4, 4, generator=generator), torch.rand(2, 4, 4, generator=generator)
    extra = {"patch_size": 2} if metric in ("region_perturbation", "selectivity") else {"features_in_step": 3}
    run = getattr(metrics, metric)
    number = run(model, x, cam, LOGIT, baseline=0.25, **extra)
    tensor = run(model, x, cam, LOGIT, baseline=torch.full((1, 1, 4, 4), 0.25), **extra)
    torch.testing.assert_close(number.curve, tensor.curve, rtol=0, atol=0)


def test_irof_of_a_batch_is_irof_of_each_sample() -> None:
    """Samples with different segment counts (3 and 2, arbitrary labels) in one batch: each as alone, NaN-padded."""
    generator = torch.Generator().manual_seed(6)
    model = _linear(torch.rand(16, generator=generator).add(0.5).tolist())
    x, cam = torch.rand(2, 1, 4, 4, generator=generator) + 0.5, torch.rand(2, 4, 4, generator=generator)
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[0, :, 1:] = 9
    labels[0, 3:, :] = -4
    labels[1, 2:] = 5
    both = metrics.irof(model, x, cam, LOGIT, segments=labels, baseline=0.0)
    assert both.curve.shape == (2, 4)
    assert math.isnan(float(both.curve[1, 3]))
    for row, segments in ((0, 3), (1, 2)):
        alone = metrics.irof(
            model, x[row : row + 1], cam[row : row + 1], LOGIT, segments=labels[row : row + 1], baseline=0.0
        )
        torch.testing.assert_close(
            both.curve[row, : segments + 1], alone.curve[0], rtol=0, atol=1e-6
        )  # float32 forwards
        torch.testing.assert_close(both.per_sample[row], alone.per_sample[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparseness_is_the_gini_index_of_the_torch_sorted_map(dtype: torch.dtype) -> None:
    """The CPU sort goes through numpy: the same values as torch's sort, in either precision."""
    maps = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(8), dtype=torch.float64).to(dtype) - 0.3
    values = maps.flatten(1).double().abs().sort(dim=1).values
    d = values.shape[1]
    weights = 2 * torch.arange(1, d + 1, dtype=torch.float64) - d - 1
    expected = (weights * values).sum(1) / (d * values.sum(1))
    torch.testing.assert_close(metrics.sparseness(maps).per_sample, expected, rtol=0, atol=1e-15)


def test_faithfulness_correlation_replaces_every_channel_of_the_subset_pixels() -> None:
    """Three channels, a number and a per-sample tensor baseline: each score is the model on the masked input."""
    generator = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2)).eval()
    x, cam = torch.rand(2, 3, 4, 4, generator=generator), torch.rand(2, 4, 4, generator=generator)
    subsets = torch.stack([torch.randperm(16, generator=generator)[:5] for _ in range(2 * 6)]).view(2, 6, 5)
    for baseline in (0.25, torch.rand(2, 3, 4, 4, generator=generator)):
        base = torch.as_tensor(baseline).expand_as(x)
        mask = torch.zeros(2, 6, 16, dtype=torch.bool).scatter_(2, subsets, True).view(2, 6, 1, 4, 4)
        perturbed = torch.where(mask, base.unsqueeze(1), x.unsqueeze(1)).flatten(0, 1)
        with torch.no_grad():
            deltas = (model(x)[:, 0].unsqueeze(1) - model(perturbed)[:, 0].view(2, 6)).double()
        sums = cam.flatten(1).double().gather(1, subsets.flatten(1)).view(2, 6, 5).sum(-1)
        expected = torch.stack([torch.corrcoef(torch.stack([sums[i], deltas[i]]))[0, 1] for i in range(2)])
        got = metrics.faithfulness_correlation(model, x, cam, LOGIT, subsets=subsets, baseline=baseline).per_sample
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
