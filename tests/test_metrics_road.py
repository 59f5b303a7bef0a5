"""ROAD: the imputation against an independent sparse solve, pytorch-grad-cam 1.5.7 parity, hand-known cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from camkit.compat.gradcam.metrics.road import (
    ROADCombined,
    ROADLeastRelevantFirst,
    ROADLeastRelevantFirstAverage,
    ROADMostRelevantFirst,
    ROADMostRelevantFirstAverage,
)
from camkit.metrics import (
    noisy_linear_imputation,
    removal_masks,
    road,
    road_combined,
)
from camkit.targets import ClassifierOutputSoftmaxTarget, ClassTarget
from conftest import RegionMean, sharp_tiny_cnn

NEIGHBOURS = [(dy, dx, 1 / 12 if dy and dx else 1 / 6) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def reference_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Rong et al.'s system written out pixel by pixel and solved with scipy's sparse LU (float64)."""
    sparse = pytest.importorskip("scipy.sparse")
    linalg = pytest.importorskip("scipy.sparse.linalg")
    channels, height, width = image.shape
    index = -np.ones((height, width), dtype=int)
    index[removed] = np.arange(removed.sum())
    matrix = sparse.lil_matrix((removed.sum(), removed.sum()))
    rhs = np.zeros((removed.sum(), channels))
    for y, x in zip(*np.nonzero(removed), strict=True):
        row = index[y, x]
        for dy, dx, weight in NEIGHBOURS:
            ny, nx = y + dy, x + dx
            if 0 <= ny < height and 0 <= nx < width:
                matrix[row, row] += weight
                if removed[ny, nx]:
                    matrix[row, index[ny, nx]] -= weight
                else:
                    rhs[row] += weight * image[:, ny, nx]
    solution = linalg.spsolve(matrix.tocsc(), rhs).reshape(-1, channels)
    out = image.copy()
    out[:, removed] = solution.T
    return out


def _distinct_maps(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth maps whose values are the distinct, exactly representable k / size**2 (so 1 - m has no ties)."""
    generator = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(n, 1, 4, 4, generator=generator), size=(size, size), mode="bilinear")
    ranks = smooth.flatten(1).argsort(dim=1).argsort(dim=1)
    return (ranks.float() / size**2).view(n, size, size).numpy()


# the imputation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("height", "width", "fraction"), [(9, 11, 0.5), (16, 16, 0.9), (23, 17, 0.1), (3, 3, 0.8)])
def test_imputation_matches_an_independent_sparse_solve(height: int, width: int, fraction: float) -> None:
    generator = torch.Generator().manual_seed(height)
    image = torch.randn(2, 3, height, width, generator=generator, dtype=torch.float64)
    removed = torch.rand(2, height, width, generator=generator) < fraction
    removed[:, 0, 0] = False  # keep a pixel
    ours = noisy_linear_imputation(image, removed, noise=0.0)
    for i in range(2):
        expected = reference_imputation(image[i].numpy(), removed[i].numpy())
        np.testing.assert_allclose(ours[i].numpy(), expected, atol=1e-9)


def test_imputation_by_hand_on_a_3x3_image() -> None:
    image = torch.arange(1.0, 10.0, dtype=torch.float64).view(1, 1, 3, 3) ** 2  # not linear
    values = image[0, 0]
    centre = torch.zeros(1, 3, 3, dtype=torch.bool)
    centre[0, 1, 1] = True
    got = noisy_linear_imputation(image, centre, noise=0.0)[0, 0, 1, 1]
    orthogonal = values[0, 1] + values[1, 0] + values[1, 2] + values[2, 1]
    corners = values[0, 0] + values[0, 2] + values[2, 0] + values[2, 2]
    assert float(got) == pytest.approx(float(orthogonal / 6 + corners / 12), abs=1e-9)
    corner = torch.zeros(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = True  # only 3 neighbours are inside the image: weights 1/6, 1/6, 1/12 over 5/12
    got = noisy_linear_imputation(image, corner, noise=0.0)[0, 0, 0, 0]
    expected = (values[0, 1] / 6 + values[1, 0] / 6 + values[1, 1] / 12) / (5 / 12)
    assert float(got) == pytest.approx(float(expected), abs=1e-9)


def test_imputation_rebuilds_linear_and_constant_images() -> None:
    generator = torch.Generator().manual_seed(0)
    ramp = (3 * torch.arange(20.0) - 1).expand(1, 2, 14, 20).clone()
    removed = torch.rand(1, 14, 20, generator=generator) < 0.7
    removed[..., [0, -1]] = False  # a horizontal ramp is harmonic for the stencil away from the side columns
    torch.testing.assert_close(noisy_linear_imputation(ramp, removed, noise=0.0), ramp, atol=1e-4, rtol=0)
    constant = torch.full((1, 3, 14, 20), 0.25)
    removed = torch.rand(1, 14, 20, generator=generator) < 0.95
    removed[0, 5, 5] = False
    torch.testing.assert_close(noisy_linear_imputation(constant, removed, noise=0.0), constant, atol=1e-6, rtol=0)


def test_imputation_matches_pytorch_grad_cam_imputer() -> None:
    road_mod = pytest.importorskip("pytorch_grad_cam.metrics.road")
    image = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(1))
    keep = torch.rand(20, 24, generator=torch.Generator().manual_seed(2)) < 0.4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy/numpy deprecation noise in the peer
        expected = road_mod.NoisyLinearImputer(noise=0.0)(image, keep.float())
    ours = noisy_linear_imputation(image[None], ~keep[None], noise=0.0)[0]
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_noise_is_added_to_removed_pixels_only() -> None:
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    removed = torch.zeros(1, 32, 32, dtype=torch.bool)
    removed[..., :16] = True
    clean = noisy_linear_imputation(image, removed, noise=0.0)
    noisy = noisy_linear_imputation(image, removed, noise=0.01, generator=torch.Generator().manual_seed(4))
    again = noisy_linear_imputation(image, removed, noise=0.01, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(noisy, again, atol=0, rtol=0)
    difference = (noisy - clean)[:, :, removed[0]]
    assert bool(((noisy - clean)[:, :, ~removed[0]] == 0).all())
    assert float(difference.std()) == pytest.approx(0.01, rel=0.1)
    assert abs(float(difference.mean())) < 1e-3


# which pixels -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(5, 7), (7, 7), (16, 16)])
def test_removed_pixels_match_pytorch_grad_cam_thresholds_on_distinct_values(size: tuple[int, int]) -> None:
    """pytorch-grad-cam keeps ``m < np.percentile(m, p)`` (MoRF) and ``1 - m < np.percentile(1 - m, p)`` (LeRF)."""
    count = size[0] * size[1]
    maps = (torch.randperm(count, generator=torch.Generator().manual_seed(count)).float() / count).view(1, *size)
    for kept in (10, 20, 30, 35, 40, 50, 60, 70, 80, 90, 12.5):
        morf = removal_masks(maps, [100 - kept], "morf")[0, 0].numpy()
        lerf = removal_masks(maps, [100 - kept], "lerf")[0, 0].numpy()
        m = maps[0].numpy()
        np.testing.assert_array_equal(morf, ~(m < np.percentile(m, kept)))
        np.testing.assert_array_equal(lerf, ~((1 - m) < np.percentile(1 - m, kept)))


def test_ties_remove_exactly_the_asked_count_where_pytorch_grad_cam_removes_all_tied_pixels() -> None:
    """A ReLU'd map with zeros on half the image: pytorch-grad-cam's MoRF at percentile 30 imputes the
    whole image (its threshold is 0 and every pixel is >= 0), its LeRF at 70 removes all 32 zeros.
    camkit removes 64 - ceil(63 * 0.3) = 45 and 64 - ceil(63 * 0.7) = 19 pixels."""
    perturbation = pytest.importorskip("pytorch_grad_cam.metrics.perturbation_confidence")
    road_mod = pytest.importorskip("pytorch_grad_cam.metrics.road")
    cam = torch.rand(8, 8, generator=torch.Generator().manual_seed(5))
    cam[:, :4] = 0
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        morf = perturbation.RemoveMostRelevantFirst(30, road_mod.NoisyLinearImputer(noise=0.0))(image, cam)
        lerf = perturbation.RemoveLeastRelevantFirst(70, road_mod.NoisyLinearImputer(noise=0.0))(image, cam)
    assert int((morf != image).any(0).sum()) == 64
    assert int((lerf != image).any(0).sum()) == 32
    ours_morf = removal_masks(cam[None], [70], "morf")[0, 0]
    ours_lerf = removal_masks(cam[None], [30], "lerf")[0, 0]
    assert int(ours_morf.sum()) == 45
    assert bool(ours_morf[:, 4:].all())
    assert int(ours_lerf.sum()) == 19
    assert not bool(ours_lerf[:, 4:].any())


def test_pytorch_grad_cam_auto_threshold_removes_the_least_relevant_pixels_in_morf() -> None:
    """Why camkit does not offer percentile='auto': the peer's Otsu branch keeps the pixels above the
    threshold, so its "most relevant first" imputes the least relevant ones."""
    perturbation = pytest.importorskip("pytorch_grad_cam.metrics.perturbation_confidence")
    road_mod = pytest.importorskip("pytorch_grad_cam.metrics.road")
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(11))
    cam = torch.zeros(8, 8)
    cam[:, 6:] = 1.0  # the two right columns are the relevant ones
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = perturbation.RemoveMostRelevantFirst("auto", road_mod.NoisyLinearImputer(noise=0.0))(image, cam)
    assert sorted(set((out != image).any(0).nonzero()[:, 1].tolist())) == [0, 1, 2, 3, 4, 5]
    ours = removal_masks(cam[None], [25], "morf")[0, 0]  # 25 % of 64 = 16 pixels: the relevant columns
    assert bool(ours[:, 6:].all())
    assert not bool(ours[:, :6].any())


# scores -----------------------------------------------------------------------------------------
@pytest.fixture
def no_peer_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch-grad-cam's ROAD classes build ``NoisyLinearImputer()`` with noise 0.01 from the global RNG."""
    road_mod = pytest.importorskip("pytorch_grad_cam.metrics.road")
    monkeypatch.setattr(road_mod.NoisyLinearImputer.__init__, "__defaults__", (0.0, road_mod.neighbors_weights))


@pytest.mark.usefixtures("no_peer_noise")
def test_road_matches_pytorch_grad_cam() -> None:
    """Noise off on both sides, distinct map values, per-sample softmax targets: equal within 1e-5."""
    road_mod = pytest.importorskip("pytorch_grad_cam.metrics.road")
    pgc_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model = sharp_tiny_cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    cams = _distinct_maps(2, 16, 8)
    classes = [0, 3]
    theirs_targets = [pgc_targets.ClassifierOutputSoftmaxTarget(c) for c in classes]
    ours_targets = [ClassifierOutputSoftmaxTarget(c) for c in classes]
    pairs = [
        (road_mod.ROADMostRelevantFirst(80), ROADMostRelevantFirst(80, noise=0.0)),
        (road_mod.ROADMostRelevantFirst(35), ROADMostRelevantFirst(35, noise=0.0)),
        (road_mod.ROADLeastRelevantFirst(20), ROADLeastRelevantFirst(20, noise=0.0)),
        (road_mod.ROADLeastRelevantFirst(65), ROADLeastRelevantFirst(65, noise=0.0)),
        (road_mod.ROADMostRelevantFirstAverage(), ROADMostRelevantFirstAverage(noise=0.0)),
        (road_mod.ROADLeastRelevantFirstAverage(), ROADLeastRelevantFirstAverage(noise=0.0)),
        (road_mod.ROADCombined([20, 40, 60, 80]), ROADCombined([20, 40, 60, 80], noise=0.0, batch_size=5)),
    ]
    informative = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for theirs, ours in pairs:
            expected = theirs(x, cams, theirs_targets, model)
            got = ours(x, cams, ours_targets, model)
            np.testing.assert_allclose(got.per_sample.numpy(), expected, atol=1e-5)
            informative.append(np.abs(expected).max())
    assert max(informative) > 1e-2
    # the functions take the percent removed
    single = road(model, x, cams, classes, order="morf", percentiles=[20], noise=0.0)
    torch.testing.assert_close(
        single.per_sample, ROADMostRelevantFirst(80, noise=0.0)(x, cams, classes, model).per_sample
    )


def test_region_model_hand_known_ordering() -> None:
    """Image = 1 on the region the model averages, 0 elsewhere; noise off.

    Removing the outside first (the reversed map's MoRF, the perfect map's LeRF) leaves the region,
    so the score is unchanged up to 48 removed pixels (70 % of 64 removes 45); removing the region
    first lowers it. Ties are broken the same way in both orders, so combined(reversed) is exactly
    -combined(perfect).
    """
    model = RegionMean().eval()
    x = model.region.expand(2, 3, 8, 8).clone()
    perfect = model.region
    maps = torch.stack([perfect, 1 - perfect])
    percents = [10, 30, 50, 70]
    morf = road(model, x, maps, ClassTarget(0), order="morf", percentiles=percents, noise=0.0)
    lerf = road(model, x, maps, ClassTarget(0), order="lerf", percentiles=percents, noise=0.0)
    assert bool((morf.curve[0] < -1e-3).all())
    assert morf.curve[1].abs().max() < 1e-6
    assert lerf.curve[0].abs().max() < 1e-6
    assert bool((lerf.curve[1] < -1e-3).all())
    torch.testing.assert_close(lerf.curve[1], morf.curve[0])
    combined = road_combined(model, x, maps, ClassTarget(0), percentiles=percents, noise=0.0)
    torch.testing.assert_close(combined.curve, (lerf.curve - morf.curve) / 2)
    assert float(combined.per_sample[0]) > 0
    assert float(combined.per_sample[1]) == pytest.approx(-float(combined.per_sample[0]), abs=1e-6)
    assert combined.fractions.tolist() == pytest.approx([0.1, 0.3, 0.5, 0.7])


def test_batching_state_and_visualization() -> None:
    model = RegionMean().train()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    maps = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(10))  # upsampled to 8x8
    one = road_combined(model, x, maps, ClassTarget(0), noise=0.0, batch_size=1)
    many = road_combined(model, x, maps, ClassTarget(0), noise=0.0, batch_size=100)
    torch.testing.assert_close(one.curve, many.curve)
    assert model.training
    assert model.drop.training
    result, images = ROADMostRelevantFirst(50, noise=0.0)(x, maps, ClassTarget(0), model, return_visualization=True)
    removed = removal_masks(F.interpolate(maps[:, None], size=(8, 8), mode="bilinear")[:, 0], [50])[:, 0]
    assert images.shape == x.shape
    assert bool((images == x).permute(1, 0, 2, 3)[:, ~removed].all())
    torch.testing.assert_close(result.per_sample, model.eval()(images)[:, 0] - model(x)[:, 0])


def test_inf_map_is_refused_naming_the_sample() -> None:
    maps = torch.rand(2, 8, 8)
    maps[0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"NaN/inf values in sample\(s\) \[0\]"):
        road(RegionMean().eval(), torch.rand(2, 3, 8, 8), maps, ClassTarget(0), percentiles=[50])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m, x, c: road(m, x, c, 0, order="up"), ValueError, "order must be one of"),
        (lambda m, x, c: road(m, x, c, 0, percentiles=[0]), ValueError, r"strictly between 0 and 100, got \[0\]"),
        (lambda m, x, c: road(m, x, c, 0, percentiles=[50, 100]), ValueError, "strictly between 0 and 100"),
        (lambda m, x, c: road(m, x, c, 0, percentiles=[]), TypeError, "non-empty list"),
        (lambda m, x, c: ROADMostRelevantFirst("auto"), TypeError, "'auto' \\(Otsu\\) threshold is not offered"),
        (lambda m, x, c: road(m, x[:, :, 0], c[:, 0], 0), ValueError, r"2-D images"),
        (lambda m, x, c: road(m, x[..., None], c[..., None], 0), ValueError, r"2-D images.*\(2, 3, 8, 8, 1\)"),
        (lambda m, x, c: road(m, x, c, 0, batch_size=0), ValueError, "batch_size must be an int >= 1"),
        (lambda m, x, c: noisy_linear_imputation(x, torch.ones(2, 8, 8, dtype=torch.bool)), ValueError, "every pixel"),
        (lambda m, x, c: noisy_linear_imputation(x, torch.ones(2, 4, 4, dtype=torch.bool)), ValueError, "removed must"),
        (lambda m, x, c: noisy_linear_imputation(x, c > 0.5, noise=-1.0), ValueError, "noise must be >= 0"),
    ],
)
def test_errors(call, error: type, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        call(RegionMean().eval(), torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8))
