"""The registry is the only description of a method: a method registered at run time gets every door."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import camkit
from camkit import cli
from camkit.registry import MethodContext, Option
from camkit.targets import ClassifierOutputTarget
from conftest import tiny_cnn

CLASSES = [0, 2]


def _abs_gradcam(a: Tensor, g: Tensor, ctx: MethodContext) -> Tensor:
    r"""Channel weights :math:`w_k = s \cdot \frac{1}{|S|}\sum_{ij} |g_k(i,j)|`."""
    return ctx.options["scale"] * g.abs().flatten(2).mean(-1)


@pytest.fixture
def registered() -> Iterator[str]:
    camkit.register(
        "abs_gradcam",
        family="gradient",
        needs_gradients=True,
        summary="Grad-CAM with the mean absolute gradient as channel weight.",
        paper="(test method)",
        options={"scale": Option(1.0, (float, int), "multiplies the weights")},
    )(_abs_gradcam)
    try:
        yield "abs_gradcam"
    finally:
        camkit.unregister("abs_gradcam")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return tiny_cnn().double().eval()


def _reference(model: nn.Module, x: Tensor, scale: float = 1.0) -> Tensor:
    """float64 by hand: hooks, backward on a copy, then ReLU(sum_k scale * mean|g_k| A_k)."""
    net = copy.deepcopy(model)
    kept: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
        out.retain_grad()
        kept["a"] = out

    net[3].register_forward_hook(hook)
    net(x).gather(1, torch.tensor(CLASSES).view(-1, 1)).sum().backward()
    a, g = kept["a"].detach(), kept["a"].grad.detach()
    w = scale * g.abs().mean(dim=(2, 3))
    return (w[:, :, None, None] * a).sum(1).clamp_min(0)


def _minmax(m: Tensor) -> Tensor:
    flat = m.flatten(1)
    lo, hi = flat.amin(1).view(-1, 1, 1), flat.amax(1).view(-1, 1, 1)
    return (m - lo) / (hi - lo)


def test_runtime_method_through_every_door(registered: str, capsys: pytest.CaptureFixture[str]) -> None:
    from camkit.compat import gradcam as front
    from camkit.methods import AbsGradCAM

    assert registered in camkit.list_methods()
    model, x = _model(), torch.rand(2, 3, 8, 8, dtype=torch.float64)
    expected = _reference(model, x, scale=2.0)

    # TorchCAM style: the class made from the spec, its docstring from the spec
    assert AbsGradCAM.method == registered
    assert "mean absolute gradient" in (AbsGradCAM.__doc__ or "")
    assert "scale: multiplies the weights (default ``1.0``)" in (AbsGradCAM.__doc__ or "")
    assert "scale" not in inspect.signature(AbsGradCAM).parameters  # not positional: keyword-only option
    with AbsGradCAM(model, "3", scale=2.0) as extractor:
        raw = extractor(CLASSES, model(x), normalized=False)[0]
    torch.testing.assert_close(raw, expected, rtol=1e-9, atol=1e-12)

    # pytorch-grad-cam style: the same formula, resized to the input and min-max normalized
    grayscale = front.AbsGradCAM(model=model, target_layers=[model[3]], scale=2.0)(
        input_tensor=x, targets=[ClassifierOutputTarget(c) for c in CLASSES]
    )
    resized = F.interpolate(expected[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(torch.from_numpy(grayscale).double(), _minmax(resized), rtol=1e-5, atol=1e-6)

    # explain and compare
    result = camkit.explain(model, x, method=registered, target_layer="3", class_idx=CLASSES, scale=2.0)
    torch.testing.assert_close(result.maps[registered][:, 0], _minmax(resized), rtol=1e-6, atol=1e-7)
    both = camkit.compare(model, x, [registered, "gradcam"], "3", class_idx=CLASSES, scale=2.0)
    torch.testing.assert_close(both[registered][0], _minmax(expected), rtol=1e-9, atol=1e-12)

    # the CLI's method list
    assert cli.main(["methods"]) == 0
    assert registered in capsys.readouterr().out


def test_unregistered_method_has_no_class() -> None:
    import camkit.methods

    with pytest.raises(AttributeError):
        camkit.methods.AbsGradCAM  # noqa: B018
    with pytest.raises(ValueError, match="unknown method 'abs_gradcam'"):
        camkit.get_method("abs_gradcam")


def test_class_names_and_peer_names_find_the_spec() -> None:
    assert camkit.get_method("GradCAMpp").name == "gradcampp"
    assert camkit.get_method("GradCAMPlusPlus").name == "gradcampp"
    assert camkit.get_method("KPCA_CAM").name == "kpcacam"
    with pytest.raises(ValueError, match="did you mean 'gradcam'"):
        camkit.get_method("gradcan")


def test_register_refuses_taken_names_and_bad_fields() -> None:
    def weights(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
        return a.flatten(2).mean(-1)

    common: dict[str, Any] = {"needs_gradients": False, "summary": "s", "paper": "p"}
    with pytest.raises(ValueError, match="already registered"):
        camkit.register("gradcam", family="gradient", **common)(weights)
    with pytest.raises(ValueError, match=r"class name 'GradCAM'.*taken by method 'gradcam'"):
        camkit.register("other_one", class_name="GradCAM", family="activation", **common)(weights)
    with pytest.raises(ValueError, match="family must be one of"):
        camkit.register("other_two", family="magic", **common)(weights)
    with pytest.raises(ValueError, match="engine switch"):
        camkit.register("other_three", family="activation", options={"batch_size": 3}, **common)(weights)
    assert "other_one" not in camkit.list_methods()


# misspelled options raise, naming the closest accepted one --------------------------------------
@pytest.fixture(scope="module")
def net() -> nn.Module:
    return tiny_cnn().eval()


def test_misspelled_engine_switch(net: nn.Module) -> None:
    from camkit.methods import GradCAM

    with pytest.raises(
        TypeError, match="GradCAM got an unexpected argument 'eigen_smoth': did you mean 'eigen_smooth'"
    ):
        GradCAM(net, "3", eigen_smoth=True)


def test_option_of_another_method_is_named_with_its_owners(net: nn.Module) -> None:
    from camkit.methods import ScoreCAM

    with pytest.raises(TypeError, match=r"'nmu_samples': did you mean 'num_samples'.*sscam"):
        ScoreCAM(net, "3", nmu_samples=3)
    with pytest.raises(TypeError, match=r"'num_samples': it is an option of .*sscam"):
        ScoreCAM(net, "3", num_samples=3)


def test_misspelled_option_in_explain(net: nn.Module) -> None:
    with pytest.raises(TypeError, match="explain got an unexpected argument 'num_smaples': did you mean 'num_samples'"):
        camkit.explain(net, torch.rand(1, 3, 8, 8), method=["gradcam", "sscam"], num_smaples=8)


def test_misspelled_option_in_compare(net: nn.Module) -> None:
    with pytest.raises(TypeError, match="compare got an unexpected argument 'batchsize': did you mean 'batch_size'"):
        camkit.compare(net, torch.rand(1, 3, 8, 8), ["gradcam"], "3", batchsize=4)


def test_misspelled_option_in_the_gradcam_door(net: nn.Module) -> None:
    from camkit.compat.gradcam import FEM

    with pytest.raises(TypeError, match="FEM got an unexpected argument 'kk': did you mean 'k'"):
        FEM(model=net, target_layers=[net[3]], kk=1)


def test_option_of_the_wrong_type(net: nn.Module) -> None:
    from camkit.methods import SSCAM

    with pytest.raises(TypeError, match="num_samples='3' must be int"):
        SSCAM(net, "3", num_samples="3")


def test_options_go_only_to_the_methods_that_declare_them(net: nn.Module) -> None:
    x = torch.rand(2, 3, 8, 8)
    together = camkit.compare(net, x, ["gradcam", "fem"], "3", class_idx=1, k=0.5)
    from camkit.methods import FEM

    with FEM(net, "3", k=0.5) as extractor:
        alone = extractor(1, net(x))
    torch.testing.assert_close(together["fem"][0], alone[0], rtol=0, atol=0)


def test_misspelled_option_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["explain", "assets/chelsea.png", "--method", "sscam", "--option", "num_smaples=2"])
    assert code == 1
    assert "'num_smaples': did you mean 'num_samples'" in capsys.readouterr().err


def test_option_values_are_python_literals() -> None:
    from camkit.runner.command import option_pair

    assert option_pair("k=0.5") == ("k", 0.5)
    assert option_pair("kernel=rbf") == ("kernel", "rbf")
    assert option_pair("max_channels=None") == ("max_channels", None)
    with pytest.raises(Exception, match="NAME=VALUE"):
        option_pair("nonsense")


def test_run_checks_and_records_method_options(net: nn.Module, tmp_path: Any) -> None:
    from camkit.models import LoadedModel, Preprocess

    loaded = LoadedModel(net, "tiny", Preprocess(8, 8), target_layer="3")
    images = [torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    common: dict[str, Any] = {"model": loaded, "workers": 0, "progress": False}
    with pytest.raises(TypeError, match="run got an unexpected argument 'kk': did you mean 'k'"):
        camkit.run(images, tmp_path / "a", methods=["fem"], kk=0.5, **common)
    assert not (tmp_path / "a").exists()  # refused before any work
    camkit.run(images, tmp_path / "b", methods=["fem", "gradcam"], k=0.5, **common)
    x = torch.stack(images)
    expected = camkit.compare(net, x, ["fem"], "3", k=0.5)["fem"][0]  # each image's top class
    with camkit.open_store(tmp_path / "b") as store:
        assert store.options["method_options"] == {"k": 0.5}
        got = torch.stack([store[key].maps["fem"] for key in sorted(store, key=int)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="other options"):
        camkit.run(images, tmp_path / "b", methods=["fem", "gradcam"], k=0.25, **common)


def test_import_camkit_is_light_and_names_resolve_on_first_use() -> None:
    """``import camkit`` (and the TorchCAM door's package) loads no torch; every public name resolves,
    the registry holds the built-ins without importing camkit.methods first, and ``camkit.compare``
    stays the function after its submodule is imported."""
    import subprocess
    import sys

    script = """
import sys
import camkit, camkit.compat.torchcam
assert "torch" not in sys.modules, "import camkit loaded torch"
import camkit.compare
assert callable(camkit.compare) and camkit.compare.__name__ == "compare"
assert all(getattr(camkit, name) is not None for name in camkit.__all__)
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    fresh = "from camkit.registry import list_methods; assert 'gradcam' in list_methods()"
    subprocess.run([sys.executable, "-c", fresh], check=True)
