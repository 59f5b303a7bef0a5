"""camkit.sanity: the model-randomisation and random-logit checks on the real pretrained model, and the measures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

import camkit
import camkit.cli
import camkit.sanity._checks
from _viewer_common import page_data
from camkit.explanation import open_image
from camkit.models import LoadedModel, Preprocess, load_model
from camkit.sanity import (
    edges,
    hog,
    hog_pearson,
    model_randomization,
    parameter_layers,
    pearson,
    random_logit,
    spearman,
    ssim,
)
from camkit.sanity._similarity import ranks
from camkit.viz.report import ReportRow, SanityCell, render_report
from conftest import tiny_cnn

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SIZE = 128  # a small input keeps the real model fast; its bn2 maps are 4 x 4


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model()  # the offline pretrained EfficientNet-Lite0, as `camkit explain` loads it


@pytest.fixture(scope="module")
def cat(loaded: LoadedModel) -> Tensor:
    half = (0.5, 0.5, 0.5)
    return Preprocess(SIZE, SIZE, half, half)(open_image(ASSETS / "chelsea.png")).unsqueeze(0)


def state_of(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert after[key].dtype == value.dtype
        assert torch.equal(after[key], value), key  # bit-identical (no NaN in these weights)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---- the checks on the real model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cascading(loaded: LoadedModel, cat: Tensor) -> tuple[Any, dict[str, Tensor]]:
    before = state_of(loaded.model)
    result = model_randomization(loaded, cat, ["gradcam", "edges"], mode="cascading")
    return result, before


def test_cascading_randomisation_tells_gradcam_from_an_edge_detector(cascading, loaded) -> None:
    result, before = cascading
    assert_unchanged(loaded.model, before)
    assert result.layers == [
        "classifier", "bn2", "conv_head",
        *(f"blocks.{i}" for i in range(6, -1, -1)),
        "bn1", "conv_stem",
    ]  # fmt: skip
    assert result.methods == ["gradcam", "edges"]
    assert result.classes.tolist() == [285]  # Egyptian cat, the trained model's top class, kept over the steps
    for measure in ("spearman", "ssim", "hog_pearson"):
        values = result.similarity[measure]
        assert values.shape == (12, 1, 2)
        gradcam, baseline = values[..., 0, 0], values[..., 0, 1]
        assert torch.allclose(baseline, torch.ones(12), atol=1e-6), measure  # the edge map ignores the model
        assert gradcam[0] < 0.9, measure  # the classifier alone already changes Grad-CAM's map
        assert abs(float(gradcam[-1])) < 0.1, measure  # the random network's map is unlike the trained one's
    assert result.passed == {"gradcam": True, "edges": False}
    assert result.scores["edges"] == pytest.approx({"spearman": 1.0, "ssim": 1.0, "hog_pearson": 1.0}, abs=1e-6)


def test_the_trained_models_maps_are_what_explain_gives(cascading, loaded, cat) -> None:
    result, _ = cascading
    expected = camkit.explain(loaded, cat, "gradcam").maps["gradcam"][:, 0]
    torch.testing.assert_close(result.maps[0, :, 0], expected.float().cpu())
    torch.testing.assert_close(result.maps[0, :, 1], edges(loaded.model, cat, result.classes))
    assert result.maps.shape == (13, 1, 2, SIZE, SIZE)


def test_the_result_reads_and_draws(cascading) -> None:
    result, _ = cascading
    text = repr(result)
    assert text.startswith("ModelRandomization(cascading, 12 layers, 1 image(s)")
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:]}
    assert rows["gradcam"][-1] == "pass"
    assert rows["edges"][1:] == ["1.000", "1.000", "1.000", "FAIL"]
    figure = result.figure(columns=4, cell_size=64)
    assert isinstance(figure, Image.Image)
    assert figure.width >= 3 * 340  # one chart per measure
    torch.testing.assert_close(result.curve("edges", "ssim"), torch.ones(12))
    with pytest.raises(ValueError, match="sample"):
        result.figure(sample=1)


def test_random_logit_on_the_real_model(loaded, cat) -> None:
    before = state_of(loaded.model)
    result = random_logit(loaded, cat, ["gradcam", "eigencam", "edges"], generator=torch.Generator().manual_seed(3))
    again = random_logit(loaded, cat, ["gradcam"], generator=torch.Generator().manual_seed(3))
    assert_unchanged(loaded.model, before)
    assert result.classes.tolist() == [285]
    assert result.others.tolist() == again.others.tolist()
    assert result.others.tolist() != [285]
    for measure, values in result.similarity.items():
        assert values.shape == (1, 3)
        assert float(values[0, 0]) < 0.9, measure  # Grad-CAM's map depends on the class
        assert float(values[0, 1]) == pytest.approx(1.0, abs=1e-6), measure  # Eigen-CAM's does not
        assert float(values[0, 2]) == pytest.approx(1.0, abs=1e-6), measure
    assert result.passed["eigencam"] is False
    assert result.passed["edges"] is False
    torch.testing.assert_close(result.similarity["ssim"][:, 0], again.similarity["ssim"][:, 0])


# ---- the user's model is never changed ----------------------------------------------------------


def test_model_unchanged_when_a_step_raises_midway(loaded, cat, monkeypatch) -> None:
    before = state_of(loaded.model)
    real = camkit.sanity._checks._maps
    calls = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:  # the trained model's maps, then three randomised steps
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(camkit.sanity._checks, "_maps", failing)
    with pytest.raises(RuntimeError, match="boom"):
        model_randomization(loaded, cat, "gradcam")
    assert len(calls) == 4
    assert_unchanged(loaded.model, before)


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_model_unchanged_when_a_hook_interrupts(loaded, cat, error) -> None:
    before = state_of(loaded.model)
    seen = []

    def hook(module: nn.Module, args: Any, output: Tensor) -> None:
        seen.append(float(module.weight.detach().abs().sum()))
        if len(seen) == 5:
            raise error("stop")

    handle = loaded.model.classifier.register_forward_hook(hook)
    try:
        with pytest.raises(error, match="stop"):
            model_randomization(loaded, cat, ["gradcam", "layercam"], mode="independent")
    finally:
        handle.remove()
    assert len(seen) == 5  # the forwards: layer order, trained maps, then steps classifier, bn2, conv_head
    assert seen[2] != seen[0]  # the copy's classifier randomised at the first step,
    assert seen[3] == seen[4] == seen[0]  # and put back for the next ones (independent mode)
    assert_unchanged(loaded.model, before)


def test_independent_and_cascading_randomise_the_right_parameters() -> None:
    torch.manual_seed(0)
    net = tiny_cnn().eval()
    names = [name for name, _ in net.named_parameters()]
    trained = {name: p.detach().clone() for name, p in net.named_parameters()}
    seen: dict[str, list[set[str]]] = {"cascading": [], "independent": []}

    def recorder(mode: str):
        def changed(model: nn.Module, x: Tensor, classes: Tensor) -> Tensor:
            params = dict(model.named_parameters())
            seen[mode].append({n for n in names if not torch.equal(params[n], trained[n])})
            return x.mean(dim=1)

        changed.__name__ = "recorder"
        return changed

    x = torch.rand(1, 3, 24, 24)
    for mode in ("cascading", "independent"):
        result = model_randomization(net, x, recorder(mode), mode=mode, layers=None, similarity="spearman")
        assert result.layers == ["8", "3", "1", "0"]
    steps = [{"8.weight", "8.bias"}, {"3.weight", "3.bias"}, {"1.weight", "1.bias"}, {"0.weight", "0.bias"}]
    assert seen["independent"] == [set(), *steps]
    assert seen["cascading"] == [set(), *(set().union(*steps[: k + 1]) for k in range(4))]
    assert all(torch.equal(p, trained[n]) for n, p in net.named_parameters())


def test_layers_given_by_name_and_grouping_depth() -> None:
    net = tiny_cnn().eval()
    x = torch.rand(1, 3, 24, 24)
    result = model_randomization(net, x, "edges", layers=["8", "0"], similarity=["ssim"])
    assert result.layers == ["8", "0"]
    assert list(result.similarity) == ["ssim"]
    lean = model_randomization(net, x, ["gradcam", "edges"], "4", layers=["8", "0"], keep_maps=False)
    assert lean.maps.shape == (1, 1, 2, 24, 24)  # the trained model's maps only
    assert lean.similarity["ssim"].shape == (2, 1, 2)
    with pytest.raises(ValueError, match="keep_maps=True"):
        lean.figure()
    assert [name for name, _ in parameter_layers(net, x)] == ["8", "3", "1", "0"]
    with pytest.raises(ValueError, match="no module 'nope'"):
        model_randomization(net, x, "edges", layers=["nope"])
    with pytest.raises(ValueError, match="mode must be one of cascading, independent"):
        model_randomization(net, x, "edges", mode="top-down")
    with pytest.raises(ValueError, match="similarity must name"):
        model_randomization(net, x, "edges", similarity="psnr")
    with pytest.raises(ValueError, match="or a baseline: edges"):
        model_randomization(net, x, "not-a-method")


# ---- the similarity measures --------------------------------------------------------------------


def maps(*shape: int, seed: int = 0) -> Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_identical_maps_have_similarity_one() -> None:
    a = maps(3, 2, 32, 40)
    for measure in (spearman, ssim, hog_pearson):
        torch.testing.assert_close(measure(a, a.clone()), torch.ones(3, 2, dtype=torch.float64))


def test_spearman_matches_scipy_with_ties_and_signs() -> None:
    from scipy.stats import rankdata, spearmanr

    a = (maps(4, 12, 10) * 6).round() - 3  # many ties, negative values
    b = (maps(4, 12, 10, seed=1) * 4).round() - 1
    b[1] = a[1].abs() ** 2 + 0.1 * b[1]
    ours = spearman(a, b)
    for i in range(4):
        expected = spearmanr(a[i].abs().flatten().numpy(), b[i].abs().flatten().numpy()).statistic
        assert float(ours[i]) == pytest.approx(float(expected), abs=1e-12)
        np.testing.assert_array_equal(ranks(a[i].flatten()).numpy(), rankdata(a[i].flatten().numpy()))
    assert float(spearman(a[0], -a[0])) == pytest.approx(1.0)  # of the absolute maps


def ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM straight from Wang et al. (2004), in float64 loops: Gaussian window sigma 1.5, 11 x 11, L = 1."""
    radius = 5
    offsets = np.arange(-radius, radius + 1)
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(radius, x.shape[0] - radius):
        for j in range(radius, x.shape[1] - radius):
            px = x[i - radius : i + radius + 1, j - radius : j + radius + 1]
            py = y[i - radius : i + radius + 1, j - radius : j + radius + 1]
            mx, my = (window * px).sum(), (window * py).sum()
            vx, vy = (window * (px - mx) ** 2).sum(), (window * (py - my) ** 2).sum()
            cov = (window * (px - mx) * (py - my)).sum()
            values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_a_float64_reference() -> None:
    a = maps(3, 18, 23, seed=2).double()
    b = (a + 0.4 * maps(3, 18, 23, seed=3)).clamp(0, 1).double()
    b[2] = 1 - a[2]
    ours = ssim(a, b)
    for i in range(3):
        assert float(ours[i]) == pytest.approx(ssim_reference(a[i].numpy(), b[i].numpy()), abs=1e-12)
    assert float(ours[2]) < 0  # an inverted map is anti-similar
    skimage_metrics = pytest.importorskip("skimage.metrics")
    theirs = skimage_metrics.structural_similarity(
        a[0].numpy(), b[0].numpy(), gaussian_weights=True, data_range=1.0, use_sample_covariance=False
    )
    assert float(ours[0]) == pytest.approx(theirs, abs=1e-12)
    with pytest.raises(ValueError, match="at least 11 x 11"):
        ssim(torch.rand(10, 30), torch.rand(10, 30))


def test_hog_pearson_properties() -> None:
    a, b = maps(2, 32, 32, seed=4), maps(2, 32, 32, seed=5)
    torch.testing.assert_close(hog_pearson(a, 2 * a + 1), torch.ones(2, dtype=torch.float64))  # gain and offset
    torch.testing.assert_close(hog_pearson(a, b), hog_pearson(b, a))  # symmetric
    assert bool((hog_pearson(a, b).abs() < 0.3).all())  # unrelated noise
    stripes = (torch.arange(32) // 4 % 2).float().expand(32, 32)  # vertical stripes: horizontal gradients
    assert float(hog_pearson(stripes, stripes.t())) < 0  # the same pattern turned by 90 degrees
    assert float(hog_pearson(stripes, torch.roll(stripes, 8, dims=1))) == pytest.approx(1.0)  # a shift of a period
    assert float(hog_pearson(torch.zeros(32, 32), a[0])) == 0.0  # no gradients: no similarity
    assert float(spearman(torch.zeros(32, 32), a[0])) == 0.0
    assert hog(a).shape == (2, 3 * 3 * 2 * 2 * 9)  # 4 x 4 cells of 8 px, 3 x 3 blocks of 2 x 2 cells, 9 bins
    feature = pytest.importorskip("skimage.feature")
    theirs = feature.hog(
        a[0].double().numpy(), orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L2-Hys"
    )
    np.testing.assert_allclose(hog(a[0].double()).numpy(), theirs, atol=1e-6)  # skimage sums cells in float32


def test_pearson_and_errors() -> None:
    assert float(pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0]))) == pytest.approx(-1.0)
    assert float(pearson(torch.ones(3), torch.tensor([1.0, 2.0, 3.0]))) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        spearman(torch.rand(4, 4), torch.rand(4, 5))
    with pytest.raises(TypeError, match="tensors"):
        ssim(np.zeros((12, 12)), torch.zeros(12, 12))  # type: ignore[arg-type]


def test_edges_baseline_is_the_sobel_magnitude() -> None:
    x = torch.zeros(1, 3, 6, 6)
    x[..., 3:] = 2.0
    found = edges(nn.Identity(), x, torch.zeros(1))
    assert found.shape == (1, 6, 6)
    assert found[0].tolist() == [[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]] * 6  # |Sobel| of a vertical step, normalized


# ---- the command and the report -----------------------------------------------------------------


@pytest.fixture
def same_model(loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`camkit` loads the default model by name; hand it the one this module loaded already."""
    names: list[str] = []

    def load(name: str, *, pretrained: bool = True) -> LoadedModel:
        names.append(name)
        return loaded

    monkeypatch.setattr(camkit.cli, "load_model", load)
    return names


def test_camkit_sanity_prints_the_table_and_writes_the_figure(same_model, tmp_path, capsys) -> None:
    out = tmp_path / "checks"
    code = camkit.cli.main(
        [
            "sanity",
            str(ASSETS / "chelsea.png"),
            "--method",
            "gradcam",
            "--method",
            "edges",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert same_model == ["efficientnet_lite0"]  # the default model, as `camkit explain`
    lines = printed.out.splitlines()
    assert lines[0].startswith("model efficientnet_lite0, cascading randomisation of 12 layers")
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert rows["gradcam"][-1] == "pass"
    assert all(abs(float(v)) < 0.1 for v in rows["gradcam"][1:4])
    assert rows["edges"][1:] == ["1.000", "1.000", "1.000", "FAIL"]
    assert Image.open(out / "chelsea_sanity_cascading.png").width > 1000
    document = json.loads((out / "sanity.json").read_text())
    assert document["model"] == "efficientnet_lite0"
    assert document["methods"]["gradcam"]["passed"] is True
    assert document["methods"]["edges"]["passed"] is False
    assert document["images"][0]["class"] == 285
    assert len(document["images"][0]["similarity"]["gradcam"]["ssim"]) == 12


def test_camkit_sanity_refuses_bad_arguments(same_model, tmp_path, capsys) -> None:
    code = camkit.cli.main(["sanity", str(ASSETS / "chelsea.png"), "--threshold", "2", "--out", str(tmp_path)])
    assert code == 1
    assert "camkit: error: --threshold must be in (0, 1], got 2.0" in capsys.readouterr().err
    assert same_model == []  # refused before the model loads
    with pytest.raises(SystemExit) as exit_info:
        camkit.cli.main(["sanity", str(ASSETS / "chelsea.png"), "--method", "nope"])
    assert exit_info.value.code == 2


def test_report_sanity_column(same_model, tmp_path, capsys) -> None:
    page = tmp_path / "report.html"
    args = ["report", str(ASSETS / "chelsea.png"), "--method", "gradcam", "--metrics-steps", "0", "--quiet"]
    assert camkit.cli.main([*args, "--out", str(page), "--sanity"]) == 0, capsys.readouterr().err
    info, records = page_data(page.read_text())
    assert info["summary"]["sanity_header"] == "sanity (randomised model)"
    verdict = info["summary"]["sanity"]["gradcam"]
    assert verdict["passed"] is True
    assert round(verdict["similarity"]["ρ"], 2) == 0.0
    assert records[0]["sanity"] == info["summary"]["sanity"]  # one image: its verdict is the mean's
    assert "Adebayo" in info["summary"]["note"]
    assert camkit.cli.main([*args, "--out", str(tmp_path / "plain.html")]) == 0
    plain, rows = page_data((tmp_path / "plain.html").read_text())
    assert rows[0]["sanity"] == {}
    assert plain["summary"] == {"note": "No metrics were computed for this report."}


def test_render_report_sanity_cells() -> None:
    image = Image.new("RGB", (16, 16))
    row = ReportRow(
        "a.png",
        image,
        [("cat", 0.9)],
        {"gradcam": torch.rand(2, 2), "layercam": torch.rand(2, 2)},
        metrics={"gradcam": {"drop": 0.1}},
        sanity={"gradcam": SanityCell(True, {"ρ": 0.01}), "layercam": SanityCell(False, {"ρ": 0.61, "<b>": 1.0})},
    )
    page = render_report([row, row], sanity={"gradcam": SanityCell(True, {"ρ": 0.01})}, sanity_note="what it means")
    info, records = page_data(page)
    assert "<b>" not in page  # JSON-escaped in the data, set as text by the page
    assert [r["sanity"]["layercam"] for r in records] == [{"passed": False, "similarity": {"ρ": 0.61, "<b>": 1.0}}] * 2
    assert SanityCell(False, {"ρ": 0.61, "<b>": 1.0}).text() == "fail ρ 0.61 <b> 1.00"  # as the page shows it
    assert info["summary"]["note"] == "what it means"
    assert info["summary"]["methods"] == ["gradcam"]  # layercam has no metric and no summary verdict
    assert "layercam" not in records[0]["metrics"]  # its row in the image's table shows a dash
    with pytest.raises(TypeError, match="SanityCell"):
        ReportRow("a.png", image, [], {}, sanity={"gradcam": 0.5})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="sanity must map"):
        render_report([row], sanity={"gradcam": True})  # type: ignore[dict-item]
