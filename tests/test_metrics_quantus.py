"""Parity of the metric families with Quantus 0.6.0 and pytorch-grad-cam 1.5.7 on identical maps, masks and models.

Quantus runs with ``normalise=False, abs=False`` (its defaults normalise by the maximum over the whole
batch) and one-channel inputs (Quantus treats each channel value as a feature, camkit a pixel; the
two agree on one channel). Where Quantus draws random numbers, its draws are recorded and handed to
camkit. Where camkit differs by design (docs/metrics.md, "Metric families"), the test pins the
documented relation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from camkit import metrics
from camkit.targets import ClassTarget

quantus = pytest.importorskip("quantus")

ATOL = 1e-4


def _model(channels: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    ).eval()
    with torch.no_grad():
        model[-1].weight.mul_(4)
    return model


@pytest.fixture(scope="module")
def case() -> tuple[nn.Module, Tensor, Tensor, np.ndarray]:
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 8, 8, generator=generator)
    maps = torch.rand(3, 8, 8, generator=generator)  # distinct values: no ties in any ranking
    return _model(), x, maps, np.array([0, 2, 1])


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if not hasattr(np, "trapz"):  # Quantus 0.6.0 calls np.trapz, removed in numpy 2.4
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _q(metric: Any, model: nn.Module, x: Tensor, maps: Tensor, y: np.ndarray, **call: Any) -> np.ndarray:
    out = metric(
        model=model,
        x_batch=x.numpy().copy(),
        y_batch=y,
        a_batch=maps.unsqueeze(1).numpy().copy(),  # Quantus changes some in place
        device="cpu",
        **call,
    )
    return np.asarray(out, dtype=np.float64)


QUIET = {"disable_warnings": True, "normalise": False, "abs": False, "return_aggregate": False}


def _record(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Any]:
    """Wrap ``module.name`` (a numpy random function) so that its draws are kept."""
    drawn: list[Any] = []
    original = getattr(module, name)

    def draw(*args: Any, **kwargs: Any) -> Any:
        value = original(*args, **kwargs)
        drawn.append(value)
        return value

    monkeypatch.setattr(module, name, draw)
    return drawn


# faithfulness -------------------------------------------------------------------------------------
def test_faithfulness_correlation(case: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, maps, y = case
    drawn = _record(monkeypatch, np.random, "choice")
    metric = quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=10, perturb_baseline=0.0, **QUIET)
    theirs = _q(metric, model, x, maps, y, softmax=False)
    subsets = torch.from_numpy(np.stack(drawn).reshape(20, 3, 10)).permute(1, 0, 2)  # run-major in Quantus
    ours = metrics.faithfulness_correlation(model, x, maps, ClassTarget(y.tolist()), subsets=subsets, baseline=0.0)
    np.testing.assert_allclose(ours.per_sample.numpy(), theirs, atol=ATOL)


def test_monotonicity_quantus_never_restores_the_input(case: Any) -> None:
    """Quantus 0.6.0 writes the baseline again where it should put the input's values back: its image never
    changes, every sample is "monotonic". camkit restores the input (Arya et al.); its curve is checked by hand."""
    model, x, maps, y = case
    theirs = _q(quantus.Monotonicity(features_in_step=4, perturb_baseline="black", **QUIET), model, x, maps, y)
    ours = metrics.monotonicity(model, x, maps, y.tolist(), features_in_step=4, baseline="min")
    assert theirs.tolist() == [1.0, 1.0, 1.0]
    order = maps.flatten(1).argsort(dim=1)
    for row in range(3):
        image = torch.full((64,), float(x[row].min()))
        points = []
        for step in range(16):
            chosen = order[row, : 4 * (step + 1)]
            image[chosen] = x[row].flatten()[chosen]
            points.append(torch.softmax(model(image.view(1, 1, 8, 8)), 1)[0, y[row]].item())
        np.testing.assert_allclose(ours.curve[row].numpy(), points, atol=1e-6)
        assert ours.per_sample[row].item() == float(np.all(np.diff(points) >= 0))


def test_monotonicity_on_a_monotonic_case() -> None:
    """A linear model with positive weights and an input of ones: adding pixels only raises the score."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.linspace(0.1, 1, 64), torch.zeros(64)]))
        model[1].bias.zero_()
    x, cam = torch.ones(2, 1, 8, 8), model[1].weight[0].detach().view(1, 8, 8).expand(2, 8, 8)
    theirs = _q(
        quantus.Monotonicity(features_in_step=8, perturb_baseline=0.0, **QUIET), model, x, cam, np.zeros(2, int)
    )
    ours = metrics.monotonicity(model, x, cam, 0, features_in_step=8)
    assert theirs.tolist() == ours.per_sample.tolist() == [1.0, 1.0]


def test_pixel_flipping_curve_and_auc(case: Any) -> None:
    """Quantus's curve is camkit's without the clean point; its AUC is trapz(dx=1) over that curve."""
    model, x, maps, y = case
    theirs = _q(quantus.PixelFlipping(features_in_step=4, perturb_baseline="black", **QUIET), model, x, maps, y)
    ours = metrics.pixel_flipping(model, x, maps, y.tolist(), features_in_step=4, baseline="min")
    np.testing.assert_allclose(ours.curve[:, 1:].numpy(), theirs, atol=ATOL)
    auc = _q(
        quantus.PixelFlipping(features_in_step=4, return_auc_per_sample=True, perturb_baseline="black", **QUIET),
        model,
        x,
        maps,
        y,
    )
    np.testing.assert_allclose(np.trapezoid(ours.curve[:, 1:].numpy(), dx=1, axis=1), auc, atol=ATOL)
    np.testing.assert_allclose(
        ours.per_sample.numpy(), np.trapezoid(ours.curve.numpy(), ours.fractions.numpy()), atol=1e-6
    )


@pytest.mark.parametrize(("patch", "order"), [(4, "morf"), (3, "lerf")])
def test_region_perturbation(case: Any, patch: int, order: str) -> None:
    """Quantus returns the drops f(x) - f(x_k), k >= 1; camkit's AOPC is their sum over L + 1."""
    model, x, maps, y = case
    metric = quantus.RegionPerturbation(
        patch_size=patch, order=order, regions_evaluation=5, perturb_baseline="black", **QUIET
    )
    theirs = _q(metric, model, x, maps, y)
    ours = metrics.region_perturbation(
        model, x, maps, y.tolist(), patch_size=patch, order=order, regions_evaluation=5, baseline="min"
    )
    np.testing.assert_allclose(ours.curve[:, 1:].numpy(), theirs, atol=ATOL)
    np.testing.assert_allclose(ours.per_sample.numpy(), theirs.sum(1) / (theirs.shape[1] + 1), atol=ATOL)


@pytest.mark.parametrize("patch", [4, 3])
def test_selectivity(case: Any, patch: int) -> None:
    model, x, maps, y = case
    theirs = _q(quantus.Selectivity(patch_size=patch, perturb_baseline="black", **QUIET), model, x, maps, y)
    ours = metrics.selectivity(model, x, maps, y.tolist(), patch_size=patch, baseline="min")
    np.testing.assert_allclose(ours.curve[:, 1:].numpy(), theirs, atol=ATOL)


def test_irof(case: Any) -> None:
    """Same SLIC segments; Quantus's value is S - trapz(s_k / s_0, k = 1..S), camkit's the normalized area over it."""
    model, x, maps, y = case
    theirs = _q(quantus.IROF(perturb_baseline=0.0, **QUIET), model, x, maps, y)
    ours = metrics.irof(model, x, maps, y.tolist(), segments="slic", baseline=0.0)
    for row, curve in enumerate(ours.curve.numpy()):
        kept = curve[~np.isnan(curve)]
        segments = kept.size - 1
        np.testing.assert_allclose(segments - np.trapezoid(kept[1:], dx=1), theirs[row], atol=ATOL)
        np.testing.assert_allclose(ours.per_sample[row].item(), 1 - np.trapezoid(kept, dx=1 / segments), atol=1e-6)


def test_infidelity(case: Any) -> None:
    """Quantus removes the patches cumulatively and deterministically; the same perturbations give the same value."""
    model, x, maps, y = case
    theirs = _q(
        quantus.Infidelity(perturb_patch_sizes=[4], n_perturb_samples=2, perturb_baseline="black", **QUIET),
        model,
        x,
        maps,
        y,
    )
    removed = torch.zeros(3, 4, 1, 8, 8, dtype=torch.bool)
    for block in range(4):
        row, col = divmod(block, 2)
        removed[:, block:, :, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4] = True
    low = x.amin(dim=(1, 2, 3), keepdim=True).unsqueeze(1)
    shifts = torch.where(removed, x.unsqueeze(1) - low, torch.zeros(()))
    ours = metrics.infidelity(model, x, maps, ClassTarget(y.tolist()), perturbations=shifts)
    np.testing.assert_allclose(ours.per_sample.numpy(), theirs, rtol=1e-4, atol=ATOL)


# robustness ---------------------------------------------------------------------------------------
def _linear_explainer(model: nn.Module) -> Callable[..., Any]:
    """Input x gradient of the class logit: deterministic and input-dependent (a ReLU network)."""

    def ours(inputs: Tensor, classes: Tensor) -> Tensor:
        inputs = inputs.detach().requires_grad_(True)
        score = model(inputs).gather(1, classes.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, inputs)
        return (grad * inputs).sum(1).detach()

    return ours


def _quantus_explain(ours: Callable[..., Tensor]) -> Callable[..., np.ndarray]:
    def explain(model: Any, inputs: np.ndarray, targets: np.ndarray, **kwargs: Any) -> np.ndarray:
        return ours(torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(targets)).unsqueeze(1).numpy()

    return explain


@pytest.mark.parametrize(
    ("name", "cls", "kwargs"),
    [
        ("max_sensitivity", "MaxSensitivity", {"lower_bound": 0.1}),
        ("avg_sensitivity", "AvgSensitivity", {"lower_bound": 0.1}),
        ("local_lipschitz_estimate", "LocalLipschitzEstimate", {"perturb_std": 0.1}),
    ],
)
def test_robustness(case: Any, monkeypatch: pytest.MonkeyPatch, name: str, cls: str, kwargs: dict[str, Any]) -> None:
    """Same noise (recorded from Quantus); Quantus's sensitivities divide by ||Phi(x)||, camkit's if normalise=True."""
    model, x, _, y = case
    explain = _linear_explainer(model)
    drawn = _record(monkeypatch, np.random, "uniform" if "lower_bound" in kwargs else "normal")
    metric = getattr(quantus, cls)(nr_samples=4, **kwargs, **QUIET)
    clean = explain(x, torch.as_tensor(y))
    theirs = _q(metric, model, x, clean, y, explain_func=_quantus_explain(explain))
    noise = torch.from_numpy(np.stack(drawn)).float().view(4, 3, 1, 8, 8).transpose(0, 1)
    extra = {"normalise": True} if "lower_bound" in kwargs else {}
    ours = getattr(metrics, name)(model, x, explain, y.tolist(), noise=noise, **extra)
    np.testing.assert_allclose(ours.per_sample.numpy(), theirs, rtol=1e-4, atol=ATOL)
    if extra:  # the paper's (default) value is not divided
        plain = getattr(metrics, name)(model, x, explain, y.tolist(), noise=noise)
        np.testing.assert_allclose(plain.per_sample.numpy(), theirs * clean.flatten(1).norm(dim=1).numpy(), rtol=1e-4)


# localisation -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def masks() -> Tensor:
    generator = torch.Generator().manual_seed(5)
    region = torch.zeros(3, 8, 8, dtype=torch.bool)
    region[0, 2:6, 1:5] = True
    region[1, 0:3, :] = True
    region[2] = torch.rand(8, 8, generator=generator) > 0.6
    return region


def _ql(metric: Any, maps: Tensor, region: Tensor) -> np.ndarray:
    x = np.zeros((maps.shape[0], 1, *maps.shape[1:]), dtype=np.float32)
    out = metric(
        model=None,
        x_batch=x,
        y_batch=np.zeros(maps.shape[0], int),
        a_batch=maps.unsqueeze(1).numpy().copy(),
        s_batch=region.unsqueeze(1).numpy().copy(),
    )
    return np.asarray(out, dtype=np.float64)


@pytest.mark.parametrize(
    ("name", "cls", "ours_kwargs", "their_kwargs"),
    [
        ("relevance_mass_accuracy", "RelevanceMassAccuracy", {}, {}),
        ("relevance_rank_accuracy", "RelevanceRankAccuracy", {}, {}),
        ("top_k_intersection", "TopKIntersection", {"k": 10}, {"k": 10}),
        (
            "top_k_intersection",
            "TopKIntersection",
            {"k": 10, "concept_influence": True},
            {"k": 10, "concept_influence": True},
        ),
        ("attribution_localisation", "AttributionLocalisation", {}, {}),
        ("auc", "AUC", {}, {}),
    ],
)
def test_localisation(
    case: Any, masks: Tensor, name: str, cls: str, ours_kwargs: dict[str, Any], their_kwargs: dict[str, Any]
) -> None:
    _, _, maps, _ = case
    signed = maps - 0.3  # negative values too: attribution localisation keeps only the positive ones
    theirs = _ql(
        getattr(quantus, cls)(**their_kwargs, **QUIET),
        maps if name != "attribution_localisation" else signed.clamp(min=0),
        masks,
    )
    ours = getattr(metrics, name)(maps if name != "attribution_localisation" else signed, masks=masks, **ours_kwargs)
    np.testing.assert_allclose(ours.per_sample.numpy(), theirs, atol=ATOL)


def test_auc_counts_ties_half_as_sklearn(masks: Tensor) -> None:
    tied = torch.tensor([0.0, 0.5, 1.0])[torch.randint(0, 3, (3, 8, 8), generator=torch.Generator().manual_seed(1))]
    theirs = _ql(quantus.AUC(**QUIET), tied, masks)
    np.testing.assert_allclose(metrics.auc(tied, masks=masks).per_sample.numpy(), theirs, atol=1e-12)


def test_weighted_attribution_localisation_follows_the_paper(case: Any, masks: Tensor) -> None:
    """Kohlbrenner et al.: mu_w = mu * S_tot / S_in; Quantus multiplies by S_in / size (of x_batch[2:])."""
    _, _, maps, _ = case
    mu = metrics.attribution_localisation(maps, masks=masks).per_sample
    weighted = metrics.attribution_localisation(maps, masks=masks, weighted=True).per_sample
    torch.testing.assert_close(weighted, mu * 64 / masks.flatten(1).sum(1), rtol=1e-12, atol=0)


# complexity ---------------------------------------------------------------------------------------
def test_sparseness_and_complexity(case: Any) -> None:
    """Quantus adds 1e-7 to every value (Gini) and 1e-12 inside the log (entropy): within 1e-4 on these maps."""
    _, x, maps, _ = case
    for name, cls in [("sparseness", "Sparseness"), ("complexity", "Complexity")]:
        theirs = _q(getattr(quantus, cls)(**QUIET), None, x, maps, np.zeros(3, int))  # type: ignore[arg-type]
        np.testing.assert_allclose(getattr(metrics, name)(maps).per_sample.numpy(), theirs, atol=ATOL)


def test_effective_complexity(case: Any) -> None:
    _, x, maps, _ = case
    sparse = maps * (maps > 0.5)
    metric = quantus.EffectiveComplexity(eps=1e-5, **{**QUIET, "abs": True})  # Quantus insists on abs
    theirs = _q(metric, None, x, sparse, np.zeros(3, int))  # type: ignore[arg-type]
    np.testing.assert_array_equal(metrics.effective_complexity(sparse, normalise=False).per_sample.numpy(), theirs)
    np.testing.assert_array_equal(metrics.effective_complexity(sparse).per_sample.numpy(), theirs)  # max <= 1: same


# pytorch-grad-cam's ARCC family -------------------------------------------------------------------
@pytest.fixture
def gradcam_case() -> tuple[nn.Module, Tensor, np.ndarray, list[int]]:
    model = _model(channels=3, seed=1)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    from pytorch_grad_cam import GradCAM

    with GradCAM(model=model, target_layers=[model[2]]) as cam:
        grayscale = cam(input_tensor=x, targets=None)
    return model, x, grayscale, [0, 2]


def _pgc_targets(classes: list[int]) -> list[Any]:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(c) for c in classes]


def test_gradcam_complexity(gradcam_case: Any) -> None:
    from pytorch_grad_cam.metrics.arcc import Complexity

    _, _, grayscale, _ = gradcam_case
    np.testing.assert_allclose(metrics.l1_complexity(grayscale).per_sample.numpy(), Complexity()(grayscale), atol=1e-6)


def _pgc_explain(model: nn.Module) -> tuple[Any, Callable[..., np.ndarray]]:
    from pytorch_grad_cam import GradCAM

    base = GradCAM(model=model, target_layers=[model[2]])

    def explain(inputs: Tensor, classes: Tensor) -> np.ndarray:
        return base(input_tensor=inputs, targets=_pgc_targets(classes.tolist()))

    return base, explain


def test_gradcam_coherency(gradcam_case: Any) -> None:
    from pytorch_grad_cam.metrics.arcc import Coherency

    model, x, grayscale, classes = gradcam_case
    base, explain = _pgc_explain(model)
    theirs = Coherency()(x, grayscale, _pgc_targets(classes), model, base)
    ours = metrics.coherency(model, x, grayscale, explain, classes)
    np.testing.assert_allclose(ours.per_sample.numpy(), theirs, atol=ATOL)


def test_gradcam_arcc(gradcam_case: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Imputation noise off on both sides (pytorch-grad-cam draws it from the global RNG); logit targets.

    The maps have distinct values: on ties (a ReLU'd map's zeros) pytorch-grad-cam's ROAD removes every
    tied pixel and camkit exactly the requested share (documented with ROAD).
    """
    road_mod = pytest.importorskip("pytorch_grad_cam.metrics.road")
    from pytorch_grad_cam.metrics.arcc import ARCC

    monkeypatch.setattr(road_mod.NoisyLinearImputer.__init__, "__defaults__", (0.0, road_mod.neighbors_weights))
    model, x, _, classes = gradcam_case
    ranks = torch.rand(2, 64, generator=torch.Generator().manual_seed(2)).argsort(1).argsort(1)
    grayscale = (ranks.float() / 64).view(2, 8, 8).numpy()
    base, explain = _pgc_explain(model)
    theirs = ARCC(base)(x, grayscale, _pgc_targets(classes), model)
    ours = metrics.arcc(model, x, grayscale, explain, classes, noise=0.0, logits=True)
    np.testing.assert_allclose(ours.per_sample.numpy(), theirs, atol=ATOL)
