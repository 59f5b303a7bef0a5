"""Score-CAM family channel budget (``max_channels``): exactness, a float64 re-derivation, errors, work saved."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camkit import ops
from camkit.compat.gradcam import CAMMethod
from camkit.engine import CAMExtractor
from camkit.methods import ISCAM, SSCAM, ScoreCAM
from camkit.methods.score import channel_budget, scorecam, select_channels
from camkit.registry import MethodContext

LAYER = "3"  # the ReLU after the second conv: 10 channels
CHANNELS = 10
CLASSES = [1, 3]


def budget_model(dead: tuple[int, ...] = ()) -> nn.Sequential:
    """The test model; the channels in ``dead`` output 0 everywhere (flat masks)."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, CHANNELS, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(CHANNELS, 5),
    )
    # seed 4: at every k tested the k-th and (k+1)-th channel variances differ by >= 4% of the largest,
    # no channel is flat, and the two samples rank the channels differently
    with torch.no_grad():
        for k in dead:
            model[2].bias[k] = -1e3
    return model.eval()


def make_input() -> Tensor:
    return torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))


def torchcam_style(cls: type[CAMExtractor], model: nn.Module, x: Tensor, normalized: bool, **options: Any) -> Tensor:
    with cls(model, LAYER, **options) as extractor:  # type: ignore[call-arg]
        model(x)
        cams = extractor(CLASSES, normalized=normalized)
    assert len(cams) == 1
    return cams[0]


# -- float64 re-derivation -------------------------------------------------------------------------
def activation64(model: nn.Module, x: Tensor) -> Tensor:
    kept: list[Tensor] = []
    handle = model.get_submodule(LAYER).register_forward_hook(lambda _m, _i, out: kept.append(out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return kept[0]


def reference(
    model: nn.Module, x: Tensor, k: int, strengths: Callable[[], list[float]] = lambda: [1.0]
) -> tuple[Tensor, list[list[int]]]:
    """ReLU(sum_j w_j A_j) with w = softmax over the k highest-variance channels of the mean score, 0 elsewhere.

    Written from the definitions, one masked input at a time, in float64; returns the maps and the
    channels chosen for each sample.
    """
    model64 = copy.deepcopy(model).double()
    x64 = x.double()
    maps, chosen = [], []
    for n, c in enumerate(CLASSES):
        a = activation64(model64, x64[n : n + 1])[0]  # (C, h, w)
        variances = [float(((a[j] - a[j].mean()) ** 2).mean()) for j in range(a.shape[0])]
        order = sorted(range(a.shape[0]), key=lambda j: (-variances[j], j))
        gap = variances[order[k - 1]] - variances[order[k]] if k < a.shape[0] else math.inf
        exact_tie = k < a.shape[0] and variances[order[k - 1]] == variances[order[k]] == 0.0  # two dead channels
        assert exact_tie or gap > 1e-4 * variances[order[0]], "k-th and (k+1)-th variances too close"
        keep = order[:k]
        gains = []
        for j in keep:
            low, high = a[j].min(), a[j].max()
            mask = (a[j] - low) / (high - low) if high > low else torch.zeros_like(a[j])
            mask = F.interpolate(mask[None, None], size=x.shape[2:], mode="bilinear", align_corners=False)[0]
            with torch.no_grad():
                scores = [float(model64((s * mask * x64[n])[None])[0, c]) for s in strengths()]
            gains.append(sum(scores) / len(scores))
        top = max(gains)
        exps = [math.exp(g - top) for g in gains]
        weights = torch.zeros(a.shape[0], dtype=torch.float64)
        for j, e in zip(keep, exps, strict=True):
            weights[j] = e / sum(exps)
        maps.append(torch.relu((weights[:, None, None] * a).sum(0)))
        chosen.append(keep)
    return torch.stack(maps), chosen


def assert_close(cam: Tensor, ref: Tensor) -> None:
    assert bool((ref.flatten(1).amax(1) > 0).all()), "every sample's reference map must be informative"
    scale = float(ref.abs().max())
    torch.testing.assert_close(cam.double(), ref, rtol=1e-4, atol=1e-5 * scale)


# -- tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [CHANNELS, CHANNELS + 1, 10_000])
@pytest.mark.parametrize("cls", [ScoreCAM, SSCAM, ISCAM])
def test_budget_at_or_above_channels_is_the_full_method(cls: type[CAMExtractor], budget: int) -> None:
    model, x = budget_model(), make_input()
    noise = {"num_samples": 2, "generator": torch.Generator().manual_seed(5)} if cls is SSCAM else {}
    full = torchcam_style(cls, model, x, False, **({"num_samples": 2} if cls is ISCAM else {}), **noise)
    noise = {"num_samples": 2, "generator": torch.Generator().manual_seed(5)} if cls is SSCAM else {}
    kept = torchcam_style(
        cls, model, x, False, max_channels=budget, **({"num_samples": 2} if cls is ISCAM else {}), **noise
    )
    assert torch.equal(full, kept)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_scorecam_budget_matches_float64_reference(k: int, normalized: bool) -> None:
    model, x = budget_model(), make_input()
    ref, chosen = reference(model, x, k)
    cam = torchcam_style(ScoreCAM, model, x, normalized, max_channels=k, batch_size=4)
    assert_close(cam, ops.normalize(ref) if normalized else ref)
    # the selection is the same rule applied to camkit's own float32 activation
    a = activation64(model, x)
    assert select_channels(a, k).tolist() == chosen


def test_budget_changes_the_map() -> None:
    model, x = budget_model(), make_input()
    budgeted, _ = reference(model, x, 3)
    full, _ = reference(model, x, CHANNELS)
    assert float((budgeted - full).abs().max()) > 1e-3 * float(full.abs().max())


def test_selection_is_per_sample() -> None:
    model, x = budget_model(), make_input()
    _, chosen = reference(model, x, 3)
    assert set(chosen[0]) != set(chosen[1])  # the two samples score different channels


def test_float64_model_matches_reference_tightly() -> None:
    model, x = budget_model(), make_input()
    ref, _ = reference(model, x, 4)
    cam = torchcam_style(ScoreCAM, copy.deepcopy(model).double(), x.double(), False, max_channels=4)
    torch.testing.assert_close(cam, ref, rtol=1e-10, atol=1e-12)


def test_iscam_budget_matches_float64_reference() -> None:
    model, x = budget_model(), make_input()
    n = 3
    ref, _ = reference(model, x, 4, lambda: [i * (i - 1) / (2 * n) for i in range(1, n + 1)])
    cam = torchcam_style(ISCAM, model, x, False, max_channels=4, num_samples=n)
    assert_close(cam, ref)


def test_sscam_without_noise_budget_is_scorecam_budget() -> None:
    model, x = budget_model(), make_input()
    ref, _ = reference(model, x, 5)
    cam = torchcam_style(SSCAM, model, x, False, max_channels=5, num_samples=2, std=0.0)
    assert_close(cam, ref)


class _SumProbe:
    """A probe whose score of an input is the sum of its values (one call per chunk)."""

    batch_size = 64

    def chunks(
        self, rows: int, repeat: int = 1, label: str = "inputs", row_bytes: int | None = None
    ) -> Iterator[tuple[int, slice]]:
        for i in range(repeat):
            yield i, slice(0, rows)

    def scores(self, inputs: Tensor, rows: Tensor) -> Tensor:
        return inputs.flatten(1).sum(1)

    def gradients(self, inputs: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def replaced_scores(self, activations: Tensor, rows: Tensor) -> Tensor:
        raise NotImplementedError


def test_hand_computed_weights() -> None:
    # channel 0 flat (variance 0), channel 1 = [[0, 4], [0, 4]] (variance 4), channel 2 = [[0, 1], [1, 1]] (3/16)
    a = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    a[0, 1] = torch.tensor([[0.0, 4.0], [0.0, 4.0]])
    a[0, 2] = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    ctx = MethodContext(model=None, layer=0, target=None, options={"max_channels": 2}, input=x, probe=_SumProbe())
    # masks: channel 1 -> [[0, 1], [0, 1]] (sum 2), channel 2 -> itself (sum 3); softmax over (2, 3)
    e2, e3 = math.exp(2.0), math.exp(3.0)
    expected = torch.tensor([[0.0, e2 / (e2 + e3), e3 / (e2 + e3)]], dtype=torch.float64)
    torch.testing.assert_close(scorecam(a, None, ctx), expected, rtol=1e-12, atol=1e-12)
    ctx.options = {"max_channels": 1}
    torch.testing.assert_close(scorecam(a, None, ctx), torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64))
    ctx.options = {}  # no budget: softmax over the three mask sums (0, 2, 3)
    e0 = 1.0
    full = torch.tensor([[e0, e2, e3]], dtype=torch.float64) / (e0 + e2 + e3)
    torch.testing.assert_close(scorecam(a, None, ctx), full, rtol=1e-12, atol=1e-12)


def test_ties_keep_the_lower_channel_index() -> None:
    a = torch.zeros(1, 4, 2, 2)
    a[0, 1] = a[0, 3] = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    a[0, 2] = torch.tensor([[0.0, 2.0], [0.0, 2.0]])
    assert select_channels(a, 2).tolist() == [[2, 1]]


def test_budget_forwards_only_k_masked_inputs_per_sample() -> None:
    model, x = budget_model(), make_input()
    rows: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        torchcam_style(ScoreCAM, model, x, False, max_channels=3, batch_size=4)
        budgeted = sum(rows) - x.shape[0]  # minus the user's forward
        rows.clear()
        torchcam_style(ScoreCAM, model, x, False, batch_size=4)
        full = sum(rows) - x.shape[0]
    finally:
        handle.remove()
    assert budgeted == x.shape[0] * 3
    assert full == x.shape[0] * CHANNELS


def count_rows(model: nn.Module, call: Callable[[], object]) -> int:
    rows: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        call()
    finally:
        handle.remove()
    return sum(rows)


@pytest.mark.parametrize("k", [None, 9])
def test_flat_channels_share_one_zero_input_forward(k: int | None) -> None:
    dead = (0, 5)
    model, x = budget_model(dead), make_input()
    ref, chosen = reference(model, x, k or CHANNELS)
    options = {} if k is None else {"max_channels": k}
    cams: list[Tensor] = []
    rows = count_rows(model, lambda: cams.append(torchcam_style(ScoreCAM, model, x, False, batch_size=4, **options)))
    assert_close(cams[0], ref)
    flat_chosen = sum(len(set(c) & set(dead)) for c in chosen)
    assert flat_chosen > 0  # the budget of 9 of 10 keeps at least one dead channel
    # the user's forward, one masked input per live chosen channel, one zero input per sample
    assert rows == x.shape[0] + (x.shape[0] * (k or CHANNELS) - flat_chosen) + x.shape[0]


def test_iscam_skips_its_zero_strength_step() -> None:
    model, x = budget_model(dead=(3,)), make_input()
    n = 3
    ref, _ = reference(model, x, CHANNELS, lambda: [i * (i - 1) / (2 * n) for i in range(1, n + 1)])
    cams: list[Tensor] = []
    rows = count_rows(model, lambda: cams.append(torchcam_style(ISCAM, model, x, False, num_samples=n)))
    assert_close(cams[0], ref)
    # steps 2..n forward the 9 live channels of both samples; step 1 (strength 0) and the dead channel
    # take the zero input's score, one forward of both samples
    assert rows == x.shape[0] + (n - 1) * x.shape[0] * (CHANNELS - 1) + x.shape[0]


def test_sscam_forwards_flat_channels_with_noise() -> None:
    model, x = budget_model(dead=(3,)), make_input()
    rows = count_rows(model, lambda: torchcam_style(SSCAM, model, x, False, num_samples=2, std=0.5))
    assert rows == x.shape[0] + 2 * x.shape[0] * CHANNELS  # noise makes every mask non-zero


def test_pytorch_grad_cam_front_door() -> None:
    model, x = budget_model(), make_input()
    ref, _ = reference(model, x, 4)
    with CAMMethod(model, [model[3]], method="scorecam", max_channels=4) as cam:
        maps = cam.compute(x, targets=_targets())
    expected = ops.normalize(torch.relu(ops.upsample(ops.normalize(ref), x.shape[2:])))
    torch.testing.assert_close(maps.double(), expected, rtol=1e-4, atol=1e-4)


def _targets() -> list[Any]:
    from camkit.compat.gradcam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(c) for c in CLASSES]


def test_named_pytorch_grad_cam_class() -> None:
    from camkit.compat import gradcam as front

    if "max_channels" not in front.ScoreCAM.defaults:
        pytest.skip("camkit.compat.gradcam.ScoreCAM does not list max_channels in its defaults yet")
    model, x = budget_model(), make_input()
    with front.ScoreCAM(model=model, target_layers=[model[3]], max_channels=4) as cam:
        named = cam.compute(x, targets=_targets())
    with CAMMethod(model, [model[3]], method="scorecam", max_channels=4) as cam:
        generic = cam.compute(x, targets=_targets())
    assert torch.equal(named, generic)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64", [4]])
def test_invalid_budget_raises(bad: Any) -> None:
    model, x = budget_model(), make_input()
    with pytest.raises(ValueError, match=r"max_channels must be a positive int.*got"):
        torchcam_style(ScoreCAM, model, x, False, max_channels=bad)
    with (
        pytest.raises(ValueError, match=r"max_channels must be a positive int.*got"),
        CAMMethod(model, [model[3]], method="scorecam", max_channels=bad) as cam,
    ):
        cam.compute(x, targets=_targets())


def test_channel_budget_accepts_numpy_ints_and_none() -> None:
    np = pytest.importorskip("numpy")
    assert channel_budget(np.int64(7)) == 7
    assert channel_budget(None) is None


def test_sess_passes_the_budget_to_scorecam() -> None:
    from camkit.methods import SESS

    model, x = budget_model(), make_input()
    window = {"scales": [12], "window_size": 12, "step": 12, "smooth": False}
    with SESS(model, LAYER, method="scorecam", **window) as sess:
        full = sess(x, class_idx=CLASSES)
    with SESS(model, LAYER, method="scorecam", max_channels=CHANNELS, **window) as sess:
        same = sess(x, class_idx=CLASSES)
    with SESS(model, LAYER, method="scorecam", max_channels=2, **window) as sess:
        budgeted = sess(x, class_idx=CLASSES)
    assert torch.equal(full, same)
    assert float((budgeted - full).abs().max()) > 1e-3
    with (
        SESS(model, LAYER, method="scorecam", max_channels=0, **window) as sess,
        pytest.raises(ValueError, match="max_channels"),
    ):
        sess(x, class_idx=CLASSES)
